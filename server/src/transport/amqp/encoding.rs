//! AMQP 1.0's frames and type encoding (§1.6, §2.3) as bytes. Reading: a bounds-checked cursor
//! over a slice; the SASL front reads its frames with it, and the frame guard walks every value a
//! client sends with it before serde_amqp sees them. serde_amqp sizes its buffers from declared
//! lengths before reading (a 38-byte frame declaring a 3 GB string made it allocate that), so
//! every length and count here is checked against the bytes at hand, and nesting is bounded.
//! Writing: one frame from a performative fe2o3-amqp's types encode.

use fe2o3_amqp::types::performatives::{Begin, Open};

/// Frame types (§2.3.1, §5.3.1).
pub const AMQP_FRAME: u8 = 0;
pub const SASL_FRAME: u8 = 1;

/// Appends one frame: its size, data offset 2, its type and channel, the performative, and the
/// payload (a transfer's message sections; empty for the others).
pub fn write_frame<T: serde::Serialize>(
    out: &mut Vec<u8>,
    kind: u8,
    channel: u16,
    performative: &T,
    payload: &[u8],
) -> Result<(), serde_amqp::Error> {
    let body = serde_amqp::to_vec(performative)?;
    let size = u32::try_from(8 + body.len() + payload.len())
        .map_err(|_| serde_amqp::Error::Message("a frame over 4 GB".into()))?;
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&[2, kind]);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(payload);
    Ok(())
}

/// An `open` with nothing but the container, the host and the frame size set: what the server
/// sends before a refusal, and what the load generator and the tests open with as clients.
pub fn open(container_id: &str, hostname: Option<&str>, max_frame: u32) -> Open {
    Open {
        container_id: container_id.into(),
        hostname: hostname.map(Into::into),
        max_frame_size: max_frame.into(),
        channel_max: Default::default(),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// A client's `begin`: a new session whose windows hold `window` transfers each way.
pub fn begin(window: u32) -> Begin {
    Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: window,
        outgoing_window: window,
        handle_max: Default::default(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// Deeper nesting than any performative or DPS message has; serde_amqp would recurse on it.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed AMQP encoding: {0}")]
pub struct Malformed(pub &'static str);

/// A position in a slice of encoded values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    pub fn byte(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    /// A size or count: one byte in the short forms, four in the wide ones.
    pub fn size(&mut self, wide: bool) -> Result<usize, Malformed> {
        Ok(match wide {
            true => u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize,
            false => self.byte()? as usize,
        })
    }

    /// `0x00`, then a numeric descriptor: a small ulong or a ulong.
    pub fn descriptor(&mut self) -> Result<u64, Malformed> {
        if self.byte()? != 0x00 {
            return Err(Malformed("not a described type"));
        }
        match self.byte()? {
            0x53 => Ok(u64::from(self.byte()?)),
            0x80 => Ok(u64::from_be_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            _ => Err(Malformed("not a numeric descriptor")),
        }
    }

    /// A list's fields: a cursor over them that yields `None` past the last one.
    pub fn list(&mut self) -> Result<Fields<'a>, Malformed> {
        let wide = match self.byte()? {
            0x45 => return Ok(Fields::default()),
            0xc0 => false,
            0xd0 => true,
            _ => return Err(Malformed("expected a list")),
        };
        let size = self.size(wide)?;
        let mut content = Cursor(self.take(size)?);
        let left = content.size(wide)?;
        Ok(Fields {
            cursor: content,
            left,
        })
    }

    /// Steps over one encoded value, checking everything inside it.
    pub fn skip_value(&mut self, depth: usize) -> Result<(), Malformed> {
        if depth > MAX_DEPTH {
            return Err(Malformed("nested too deeply"));
        }
        match self.byte()? {
            0x00 => {
                self.skip_value(depth + 1)?; // the descriptor
                self.skip_value(depth + 1)
            }
            code => self.skip_body(code, depth),
        }
    }

    /// Steps over the bytes after a constructor (an array's elements have only these).
    fn skip_body(&mut self, code: u8, depth: usize) -> Result<(), Malformed> {
        if let Some(width) = fixed_width(code) {
            return self.take(width).map(drop);
        }
        match code {
            0xa0 | 0xa1 | 0xa3 | 0xb0 | 0xb1 | 0xb3 => {
                let n = self.size(code >= 0xb0)?;
                self.take(n).map(drop)
            }
            0xc0 | 0xc1 | 0xd0 | 0xd1 => {
                let mut content = self.compound(code >= 0xd0)?;
                let count = content.left;
                if code & 1 == 1 && count % 2 == 1 {
                    return Err(Malformed("a map with an odd count"));
                }
                for _ in 0..count {
                    content.cursor.skip_value(depth + 1)?;
                }
                content.cursor.finish()
            }
            0xe0 | 0xf0 => {
                let mut content = self.compound(code == 0xf0)?;
                let cursor = &mut content.cursor;
                let element = match cursor.byte()? {
                    0x00 => {
                        cursor.skip_value(depth + 1)?;
                        cursor.byte()?
                    }
                    code => code,
                };
                if element == 0x00 {
                    return Err(Malformed("an array of described descriptors"));
                }
                for _ in 0..content.left {
                    content.cursor.skip_body(element, depth + 1)?;
                }
                content.cursor.finish()
            }
            _ => Err(Malformed("unknown type constructor")),
        }
    }

    /// A list's, map's or array's size and count. Every element takes a byte at least, so a
    /// count above the bytes left is a lie (and would size a decoder's buffer).
    fn compound(&mut self, wide: bool) -> Result<Fields<'a>, Malformed> {
        let size = self.size(wide)?;
        let mut cursor = Cursor(self.take(size)?);
        let left = cursor.size(wide)?;
        if left > cursor.0.len() {
            return Err(Malformed("a count above the bytes it spans"));
        }
        Ok(Fields { cursor, left })
    }

    fn finish(&self) -> Result<(), Malformed> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(Malformed("bytes after a compound value's last element")),
        }
    }
}

/// Bytes after a fixed-width constructor; `None` for variable-width ones.
fn fixed_width(code: u8) -> Option<usize> {
    Some(match code {
        0x40..=0x45 => 0,
        0x50..=0x56 => 1,
        0x60 | 0x61 => 2,
        0x70..=0x74 => 4,
        0x80..=0x84 => 8,
        0x94 | 0x98 => 16,
        _ => return None,
    })
}

/// The fields of a list, read one at a time.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Fields<'a> {
    /// The next field's constructor and a cursor after it; `None` past the last field.
    fn next_constructor(&mut self) -> Result<Option<u8>, Malformed> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.cursor.byte().map(Some)
    }

    /// The next field's bytes if it is of type `short` or `long`; a null or missing field is `None`.
    pub fn variable(&mut self, short: u8, long: u8) -> Result<Option<&'a [u8]>, Malformed> {
        let wide = match self.next_constructor()? {
            None | Some(0x40) => return Ok(None),
            Some(code) if code == short => false,
            Some(code) if code == long => true,
            _ => return Err(Malformed("unexpected field type")),
        };
        let n = self.cursor.size(wide)?;
        self.cursor.take(n).map(Some)
    }

    pub fn symbol(&mut self) -> Result<Option<String>, Malformed> {
        self.variable(0xa3, 0xb3)?
            .map(|b| String::from_utf8(b.to_vec()).map_err(|_| Malformed("a symbol not ASCII")))
            .transpose()
    }

    pub fn binary(&mut self) -> Result<Option<Vec<u8>>, Malformed> {
        Ok(self.variable(0xa0, 0xb0)?.map(<[u8]>::to_vec))
    }

    /// A `uint` field (any of its three encodings); null or missing is `None`.
    pub fn uint(&mut self) -> Result<Option<u32>, Malformed> {
        match self.next_constructor()? {
            None | Some(0x40) => Ok(None),
            Some(0x43) => Ok(Some(0)),
            Some(0x52) => Ok(Some(u32::from(self.cursor.byte()?))),
            Some(0x70) => Ok(Some(u32::from_be_bytes(
                self.cursor.take(4)?.try_into().expect("4 bytes"),
            ))),
            _ => Err(Malformed("expected a uint")),
        }
    }

    /// A `boolean` field; null or missing is `None`.
    pub fn boolean(&mut self) -> Result<Option<bool>, Malformed> {
        match self.next_constructor()? {
            None | Some(0x40) => Ok(None),
            Some(0x41) => Ok(Some(true)),
            Some(0x42) => Ok(Some(false)),
            Some(0x56) => Ok(Some(self.cursor.byte()? != 0)),
            _ => Err(Malformed("expected a boolean")),
        }
    }

    /// Steps over the next field, whatever its type.
    pub fn skip(&mut self) -> Result<(), Malformed> {
        if self.left == 0 {
            return Ok(());
        }
        self.left -= 1;
        self.cursor.skip_value(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_all(bytes: &[u8]) -> Result<(), Malformed> {
        let mut cursor = Cursor(bytes);
        while !cursor.is_empty() {
            cursor.skip_value(0)?;
        }
        Ok(())
    }

    #[test]
    fn well_formed_values_are_stepped_over_whole() {
        for value in [
            &b"\x40"[..],
            b"\x53\x10",
            b"\xa1\x03abc",
            b"\xb0\x00\x00\x00\x02\x01\x02",
            b"\xc0\x05\x02\x41\xa1\x01x", // list8 [true, "x"]
            b"\xd1\x00\x00\x00\x06\x00\x00\x00\x02\x43\x42", // map32 {0: false}
            b"\xe0\x04\x02\x52\x01\x02",  // array8 of two smalluints
            b"\x00\x53\x77\xc0\x02\x01\x45", // described list
        ] {
            assert_eq!(skip_all(value), Ok(()), "{value:x?}");
        }
    }

    #[test]
    fn declared_sizes_beyond_the_bytes_are_refused() {
        for value in [
            &b"\xb1\xff\xff\xff\xff"[..],                // a 4 GB string in 5 bytes
            b"\xd0\x00\x00\x00\x08\xff\xff\xff\xff\x40", // a list of 4 billion in 9 bytes
            b"\xf0\x00\x00\x00\x05\x7f\xff\xff\xff\x40", // an array of nulls
            b"\xc1\x02\x01\x40",                         // a map with an odd count
            b"\xc0\x03\x01\x40\x40",                     // a byte after the last element
            b"\xa1\x05ab",
            b"\x00",
            b"\xff",
        ] {
            assert!(skip_all(value).is_err(), "{value:x?}");
        }
        let nest = |levels: usize| {
            (0..levels).fold(vec![0x45u8], |inner, _| {
                [vec![0xc0, inner.len() as u8 + 1, 1], inner].concat()
            })
        };
        assert_eq!(skip_all(&nest(MAX_DEPTH)), Ok(()));
        assert_eq!(skip_all(&nest(40)), Err(Malformed("nested too deeply")));
        let nested: Vec<u8> = std::iter::repeat_n(0x00u8, 200).chain([0x40]).collect();
        assert_eq!(skip_all(&nested), Err(Malformed("nested too deeply")));
    }

    #[test]
    fn fields_read_in_order() {
        // [uint 7, true, null, symbol "a"] with a trailing missing field.
        let list = b"\xc0\x0b\x04\x70\x00\x00\x00\x07\x41\x40\xa3\x01a";
        let mut fields = Cursor(list).list().unwrap();
        assert_eq!(fields.uint().unwrap(), Some(7));
        assert_eq!(fields.boolean().unwrap(), Some(true));
        fields.skip().unwrap();
        assert_eq!(fields.symbol().unwrap(), Some("a".into()));
        assert_eq!(fields.boolean().unwrap(), None);
    }
}
