//! The async SASL front of the AMQP endpoint (AMQP 1.0 §5.3), ahead of fe2o3-amqp's connection
//! acceptor: the 8-byte protocol header picks SASL or a bare AMQP connection (X.509 devices send
//! no SASL layer), SASL frames are read and written here, and each mechanism's rounds may await
//! the domain (PLAIN checks the SAS token through the Provisioner). The library's own
//! `SaslAcceptor` is synchronous and forgets who logged in, so it cannot do this.

use fe2o3_amqp::frames::sasl::Frame;
use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::encoding::{self, Cursor, Malformed};
use crate::attestation::x509::PresentedChain;
use crate::domain::provisioner::{DeviceLogin, ProvisionError, Provisioner, TpmLoginChallenge};
use crate::model::event::Protocol;

pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The smallest max-frame-size AMQP allows; no SASL frame of ours needs more (TPM blobs are
/// sent in chunks below it).
const MAX_SASL_FRAME: usize = 512;
/// Rounds a client may take before the login is refused.
const MAX_ROUNDS: usize = 8;

/// Who the connection logged in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// SASL PLAIN or TPM: the device named itself and its token was checked.
    Device {
        id_scope: String,
        registration_id: String,
        login: DeviceLogin,
    },
    /// No SASL layer, or EXTERNAL: the TLS client certificate speaks for the device, which names
    /// itself by its link address; each request checks it.
    Certificate,
}

#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    #[error("not an AMQP 1.0 protocol header")]
    BadHeader,
    #[error("malformed SASL frame: {0}")]
    Malformed(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<Malformed> for SaslError {
    fn from(e: Malformed) -> Self {
        SaslError::Malformed(e.0.to_string())
    }
}

/// What the 8 bytes a client sends first ask for.
pub fn classify_header(header: &[u8; 8]) -> Result<bool, SaslError> {
    match *header {
        SASL_HEADER => Ok(true),
        AMQP_HEADER => Ok(false),
        _ => Err(SaslError::BadHeader),
    }
}

/// What a client sends during SASL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Init {
        mechanism: String,
        initial_response: Vec<u8>,
    },
    Response(Vec<u8>),
}

/// One SASL frame from its bytes after the 4-byte size (doff, type, channel, body). Parsed here
/// rather than with serde_amqp, whose reader sizes its buffer from a declared length before
/// reading: a 38-byte frame declaring a 3 GB string made it allocate that (found by
/// fuzz/fuzz_targets/amqp_sasl.rs). Every length is checked against the bytes at hand.
pub fn decode_frame(bytes: &[u8]) -> Result<ClientFrame, SaslError> {
    let malformed = |why: &str| SaslError::Malformed(why.to_string());
    let [doff, kind, _, _, body @ ..] = bytes else {
        return Err(malformed("shorter than a frame header"));
    };
    if (*doff, *kind) != (2, 1) {
        return Err(malformed("not a SASL frame"));
    }
    let mut cursor = Cursor(body);
    let code = cursor.descriptor()?;
    let mut fields = cursor.list()?;
    match code {
        0x41 => Ok(ClientFrame::Init {
            mechanism: fields
                .symbol()?
                .ok_or_else(|| malformed("sasl-init without a mechanism"))?,
            initial_response: fields.binary()?.unwrap_or_default(),
        }),
        0x43 => Ok(ClientFrame::Response(fields.binary()?.unwrap_or_default())),
        _ => Err(malformed("expected sasl-init or sasl-response")),
    }
}

fn encode_frame(frame: Frame) -> Result<Vec<u8>, SaslError> {
    let mut out = Vec::new();
    encoding::write_frame(&mut out, encoding::SASL_FRAME, 0, &frame, &[])
        .map_err(|e| SaslError::Malformed(e.to_string()))?;
    Ok(out)
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ClientFrame, SaslError> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await?;
    let size = u32::from_be_bytes(size) as usize;
    if !(8..=MAX_SASL_FRAME).contains(&size) {
        return Err(SaslError::Malformed(format!("frame size {size}")));
    }
    let mut rest = vec![0u8; size - 4];
    stream.read_exact(&mut rest).await?;
    decode_frame(&rest)
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: Frame) -> Result<(), SaslError> {
    stream.write_all(&encode_frame(frame)?).await?;
    stream.flush().await?;
    Ok(())
}

/// PLAIN's initial response: `[authzid] NUL authcid NUL password`.
pub fn parse_plain(response: &[u8]) -> Result<(&str, &str), SaslError> {
    let mut parts = response.split(|b| *b == 0);
    let (Some(_authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "PLAIN needs authzid, authcid and password".into(),
        ));
    };
    let text = |b| std::str::from_utf8(b).map_err(|_| SaslError::Malformed("not UTF-8".into()));
    Ok((text(user)?, text(password)?))
}

/// `{idScope}/registrations/{registrationId}`, the name a device logs in and links with.
pub fn parse_device_name(name: &str) -> Option<(&str, &str)> {
    let (scope, rest) = name.split_once('/')?;
    let id = rest.strip_prefix("registrations/")?;
    (!scope.is_empty() && !id.is_empty() && !id.contains('/')).then_some((scope, id))
}

/// A mechanism's answer to one round.
enum Step {
    /// Another round: TPM asks for the SRK, then sends the activation blob in pieces.
    Challenge(Vec<u8>),
    Done(Result<Login, String>),
}

/// SASL `TPM`'s initial response: NUL, the ID scope, NUL, the registration ID, NUL, then the
/// EK's TPM2B_PUBLIC (which may hold NULs of its own: only the first three split).
pub fn parse_tpm_init(response: &[u8]) -> Result<(&str, &str, &[u8]), SaslError> {
    let malformed = || SaslError::Malformed("TPM needs NUL scope NUL id NUL key".into());
    let rest = response.strip_prefix(&[0]).ok_or_else(malformed)?;
    let mut parts = rest.splitn(3, |b| *b == 0);
    let (Some(scope), Some(id), Some(ek)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let text = |b| std::str::from_utf8(b).map_err(|_| SaslError::Malformed("not UTF-8".into()));
    if scope.is_empty() || id.is_empty() || ek.is_empty() {
        return Err(malformed());
    }
    Ok((text(scope)?, text(id)?, ek))
}

/// Blob bytes per challenge: with its control byte and the frame around it, a challenge fits the
/// 512-byte SASL frames every client accepts (the C SDK uses the same limit).
const TPM_SEGMENT: usize = 470;

/// The activation blob as SASL challenges: each piece after a control byte, `0x80 | seq` while
/// more follow, `0xC0 | seq` for the last (seq counts 0..3). Never a bare control byte: Node
/// reads a one-byte challenge as the request for the SRK.
pub fn tpm_segments(blob: &[u8]) -> Vec<Vec<u8>> {
    let count = blob.len().div_ceil(TPM_SEGMENT);
    blob.chunks(TPM_SEGMENT)
        .enumerate()
        .map(|(i, piece)| {
            let last = if i + 1 == count { 0x40 } else { 0 };
            let mut segment = vec![0x80 | last | (i % 4) as u8];
            segment.extend_from_slice(piece);
            segment
        })
        .collect()
}

/// Where a TPM login stands between rounds.
enum TpmRound {
    /// The one-byte challenge went out; the SRK comes next.
    Srk {
        scope: String,
        id: String,
        ek: Vec<u8>,
    },
    Blob(BlobRound),
}

/// Blob pieces still to send; after the last, the device answers with its SAS token.
struct BlobRound {
    scope: String,
    id: String,
    pending: std::collections::VecDeque<Vec<u8>>,
    /// Set when the blob is a decoy: the outcome is this refusal, whatever the token.
    refused: Option<String>,
}

/// A login by TLS client certificate (no SASL layer, or EXTERNAL): a certificate must be there;
/// whether it is a device's is checked per request, as over HTTPS and MQTT, so a refused device
/// gets the documented Rejected outcome with Azure's error.
pub fn certificate_login(chain: Option<&PresentedChain>) -> Result<Login, String> {
    match chain {
        Some(_) => Ok(Login::Certificate),
        None => Err("no SAS token (SASL PLAIN) and no client certificate".into()),
    }
}

/// The mechanisms offered: PLAIN (SAS token) and EXTERNAL (the TLS client certificate). Each
/// round may await the domain; a mechanism that needs more rounds answers with a challenge.
struct Mechanisms<'a> {
    provisioner: &'a Provisioner,
    protocol: Protocol,
    chain: Option<&'a PresentedChain>,
    tpm: Option<TpmRound>,
}

impl Mechanisms<'_> {
    const OFFERED: [&'static str; 3] = ["PLAIN", "EXTERNAL", "TPM"];

    async fn init(&mut self, mechanism: &str, response: &[u8]) -> Result<Step, SaslError> {
        match mechanism {
            "PLAIN" => {
                let (user, token) = parse_plain(response)?;
                let Some((scope, id)) = parse_device_name(user) else {
                    let why =
                        format!("the SASL user {user:?} is not {{idScope}}/registrations/{{id}}");
                    let refusal = ProvisionError::BadRequest(why.clone());
                    self.provisioner
                        .report_refusal(user, self.protocol, &refusal);
                    return Ok(Step::Done(Err(why)));
                };
                Ok(self.login(scope, id, token).await)
            }
            "EXTERNAL" => Ok(Step::Done(certificate_login(self.chain))),
            "TPM" => {
                let (scope, id, ek) = parse_tpm_init(response)?;
                self.tpm = Some(TpmRound::Srk {
                    scope: scope.into(),
                    id: id.into(),
                    ek: ek.to_vec(),
                });
                Ok(Step::Challenge(vec![0]))
            }
            other => Ok(Step::Done(Err(format!(
                "mechanism {other:?} is not offered"
            )))),
        }
    }

    /// A SAS token checked through the Provisioner (PLAIN's password, TPM's last response).
    async fn login(&self, scope: &str, id: &str, token: &str) -> Step {
        let checked = self
            .provisioner
            .check_login(scope, id, token, self.protocol)
            .await;
        Step::Done(
            checked
                .map_err(|e| e.to_string())
                .map(|login| Login::Device {
                    id_scope: scope.to_string(),
                    registration_id: id.to_string(),
                    login,
                }),
        )
    }

    /// TPM's later rounds: the SRK (answered with the blob's first piece), an empty answer to
    /// each piece, and after the last piece the SAS token signed with the key the blob carried.
    async fn respond(&mut self, response: &[u8]) -> Result<Step, SaslError> {
        let body = response.strip_prefix(&[0]).unwrap_or(response);
        match self.tpm.take() {
            Some(TpmRound::Srk { scope, id, ek }) => {
                let challenged = self
                    .provisioner
                    .tpm_login_challenge(&scope, &id, (&ek, body), self.protocol)
                    .await;
                let (blob, refused) = match challenged {
                    Ok(TpmLoginChallenge::Issued(blob)) => (blob, None),
                    Ok(TpmLoginChallenge::Refused { decoy, reason }) => (decoy, Some(reason)),
                    Err(refusal) => return Ok(Step::Done(Err(refusal.to_string()))),
                };
                let round = BlobRound {
                    scope,
                    id,
                    pending: tpm_segments(&blob).into(),
                    refused,
                };
                self.send_piece(round, body).await
            }
            Some(TpmRound::Blob(round)) => self.send_piece(round, body).await,
            None => Ok(Step::Done(Err("unexpected SASL response".into()))),
        }
    }

    /// The blob's next piece, or once all went out the outcome for the token in `body`.
    async fn send_piece(&mut self, mut round: BlobRound, body: &[u8]) -> Result<Step, SaslError> {
        if let Some(piece) = round.pending.pop_front() {
            self.tpm = Some(TpmRound::Blob(round));
            return Ok(Step::Challenge(piece));
        }
        if let Some(reason) = round.refused {
            return Ok(Step::Done(Err(reason)));
        }
        let token = std::str::from_utf8(body)
            .map_err(|_| SaslError::Malformed("the SAS token is not UTF-8".into()))?;
        Ok(self.login(&round.scope, &round.id, token).await)
    }
}

/// Runs the SASL exchange after the client's SASL header was read: mechanisms, init, any
/// challenges, outcome. A refused login gets the `auth` outcome, and the caller closes the
/// connection; it never reaches the AMQP layer.
pub async fn negotiate<S>(
    stream: &mut S,
    provisioner: &Provisioner,
    protocol: Protocol,
    chain: Option<&PresentedChain>,
) -> Result<Login, SaslError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&SASL_HEADER).await?;
    let offered: Vec<Symbol> = Mechanisms::OFFERED
        .iter()
        .map(|m| Symbol::from(*m))
        .collect();
    let mechanisms = SaslMechanisms {
        sasl_server_mechanisms: Array::from(offered),
    };
    write_frame(stream, Frame::Mechanisms(mechanisms)).await?;
    let mut handler = Mechanisms {
        provisioner,
        protocol,
        chain,
        tpm: None,
    };
    let mut step = match read_frame(stream).await? {
        ClientFrame::Init {
            mechanism,
            initial_response,
        } => handler.init(&mechanism, &initial_response).await?,
        ClientFrame::Response(_) => return Err(SaslError::Malformed("expected sasl-init".into())),
    };
    for _ in 0..MAX_ROUNDS {
        match step {
            Step::Challenge(challenge) => {
                let challenge = fe2o3_amqp::types::sasl::SaslChallenge {
                    challenge: Binary::from(challenge),
                };
                write_frame(stream, Frame::Challenge(challenge)).await?;
                step = match read_frame(stream).await? {
                    ClientFrame::Response(response) => handler.respond(&response).await?,
                    ClientFrame::Init { .. } => {
                        return Err(SaslError::Malformed("expected sasl-response".into()));
                    }
                };
            }
            Step::Done(result) => return outcome(stream, result).await,
        }
    }
    outcome(stream, Err("too many SASL rounds".into())).await
}

async fn outcome<S: AsyncWrite + Unpin>(
    stream: &mut S,
    result: Result<Login, String>,
) -> Result<Login, SaslError> {
    let code = match result {
        Ok(_) => SaslCode::Ok,
        Err(_) => SaslCode::Auth,
    };
    let frame = Frame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    });
    write_frame(stream, frame).await?;
    result.map_err(SaslError::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm_init_splits_at_the_first_three_nuls_and_the_blob_goes_in_pieces() {
        let mut init = b"\0scope\0dev-1\0".to_vec();
        init.extend_from_slice(&[1, 0, 2, 0]);
        let key: &[u8] = &[1, 0, 2, 0];
        assert_eq!(parse_tpm_init(&init).unwrap(), ("scope", "dev-1", key));
        for bad in [
            &b"scope\0id\0k"[..],
            b"\0scope\0id",
            b"\0\0id\0k",
            b"\0scope\0id\0",
        ] {
            assert!(parse_tpm_init(bad).is_err(), "{bad:?}");
        }
        let blob: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let segments = tpm_segments(&blob);
        let controls: Vec<u8> = segments.iter().map(|s| s[0]).collect();
        assert_eq!(controls, [0x80, 0x81, 0xC2]);
        assert!(
            segments
                .iter()
                .all(|s| s.len() > 1 && s.len() <= 1 + TPM_SEGMENT)
        );
        let joined: Vec<u8> = segments.iter().flat_map(|s| s[1..].to_vec()).collect();
        assert_eq!(joined, blob);
        assert_eq!(tpm_segments(&blob[..100])[0][0], 0xC0);
    }

    #[test]
    fn plain_responses_split_into_user_and_token() {
        let (user, token) =
            parse_plain(b"\0scope/registrations/dev-1\0SharedAccessSignature sr=x").unwrap();
        assert_eq!(user, "scope/registrations/dev-1");
        assert_eq!(token, "SharedAccessSignature sr=x");
        assert!(parse_plain(b"only-one-part").is_err());
        assert!(parse_plain(b"\0a\0b\0c").is_err());
        assert_eq!(
            parse_device_name("0ne00/registrations/dev-1"),
            Some(("0ne00", "dev-1"))
        );
        assert_eq!(parse_device_name("0ne00/devices/dev-1"), None);
        assert_eq!(parse_device_name("0ne00/registrations/a/b"), None);
    }

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        // What fe2o3-amqp's own client sends, read by our parser.
        let init = fe2o3_amqp::types::sasl::SaslInit {
            mechanism: Symbol::from("PLAIN"),
            initial_response: Some(Binary::from(b"\0scope/registrations/d\0token".to_vec())),
            hostname: Some("localhost".into()),
        };
        let bytes = encode_frame(Frame::Init(init)).unwrap();
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(
            decode_frame(&bytes[4..]).unwrap(),
            ClientFrame::Init {
                mechanism: "PLAIN".into(),
                initial_response: b"\0scope/registrations/d\0token".to_vec(),
            }
        );
        let response = fe2o3_amqp::types::sasl::SaslResponse {
            response: Binary::from(vec![0, 1, 2]),
        };
        let bytes = encode_frame(Frame::Response(response)).unwrap();
        assert_eq!(
            decode_frame(&bytes[4..]).unwrap(),
            ClientFrame::Response(vec![0, 1, 2])
        );
        // A server's frame is not a client's; sizes beyond the bytes at hand are refused.
        let outcome = encode_frame(Frame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None,
        }))
        .unwrap();
        assert!(decode_frame(&outcome[4..]).is_err());
        let huge =
            b"\x02\x01\x00\x00\x00\x53\x41\xd0\xb1\xb1\xb1\xb1\x00\x00\x00\x01\xb3\xff\xff\xff\xff";
        assert!(decode_frame(huge).is_err());
        let fuzzed = b"\x02\x01\xb1\xb1\xb1\xb1\xb1\xb1\xb1\xb1\x00\x00\x00\x53\x41\x25\xa3\x05";
        assert!(decode_frame(fuzzed).is_err());
        for garbage in [
            &b""[..],
            b"\x02",
            b"\x02\x01\x00\x00",
            b"\x02\x01\x00\x00\x00\x53\x41",
            b"\x05\x00\x00\x00",
        ] {
            assert!(decode_frame(garbage).is_err(), "{garbage:?}");
        }
        assert!(classify_header(b"AMQP\x03\x01\x00\x00").unwrap());
        assert!(!classify_header(b"AMQP\x00\x01\x00\x00").unwrap());
        assert!(classify_header(b"GET / HT").is_err());
    }
}
