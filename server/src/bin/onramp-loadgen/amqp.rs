//! The load generator's AMQP device: the frames an SDK sends (SASL PLAIN with the SAS token, open,
//! begin, a receiver and a sender link on the device's address, the register request), encoded
//! with fe2o3-amqp's types and written straight to the TLS stream. No client engine runs, so the
//! client's share of the two cores it shares with the server stays small (fe2o3's client spawns
//! tasks per connection, session and link, and closes each link, session and connection with a
//! round trip of its own).

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use fe2o3_amqp::frames::amqp::{FrameBody, FrameDecoder};
use fe2o3_amqp::frames::sasl;
use fe2o3_amqp::types::definitions::{Handle, Role};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Data, Properties, Source, Target as LinkTarget, TargetArchetype,
};
use fe2o3_amqp::types::performatives::{Attach, Close, Flow, Transfer};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit};
use onramp::transport::amqp::encoding::{self, AMQP_FRAME, SASL_FRAME, write_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;

use super::{Target, device_token};

const SASL_HEADER: &[u8; 8] = b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: &[u8; 8] = b"AMQP\x00\x01\x00\x00";
/// The device's handles of its receiver link (replies) and sender link (requests).
const REPLIES: Handle = Handle(0);
const REQUESTS: Handle = Handle(1);

/// A device logged in with both links attached and credit to send its request.
pub struct Device {
    tls: TlsStream<TcpStream>,
    read: BytesMut,
    /// The server's handle of the replies link, which its transfers name.
    replies: Option<Handle>,
}

impl Device {
    pub async fn open(
        target: &Target,
        scope: &str,
        group_key: &str,
        id: &str,
    ) -> anyhow::Result<Device> {
        let key = onramp::attestation::sas::derive_device_key(group_key, id)?;
        let address = format!("{scope}/registrations/{id}");
        let token = device_token(&key, scope, id)?;
        let mut device = Device {
            tls: target.connect().await?,
            read: BytesMut::new(),
            replies: None,
        };
        let init = SaslInit {
            mechanism: "PLAIN".into(),
            initial_response: Some(Binary::from(format!("\0{address}\0{token}").into_bytes())),
            hostname: Some("localhost".into()),
        };
        let mut out = SASL_HEADER.to_vec();
        write_frame(&mut out, SASL_FRAME, 0, &init, &[])?;
        device.tls.write_all(&out).await?;
        device.header(SASL_HEADER).await?;
        loop {
            let mut frame = device.frame().await?;
            match (sasl::FrameCodec {}).decode(&mut frame)? {
                Some(sasl::Frame::Mechanisms(_)) => continue,
                Some(sasl::Frame::Outcome(outcome)) if outcome.code == SaslCode::Ok => break,
                other => bail!("login of {id} refused: {other:?}"),
            }
        }
        let mut out = AMQP_HEADER.to_vec();
        opening(&mut out, id, &address)?;
        device.tls.write_all(&out).await?;
        device.header(AMQP_HEADER).await?;
        // Open, begin, the server's two attaches (its own handles for the links) and its flows:
        // go on once the request link has credit.
        let mut requests = None;
        loop {
            match device.next().await? {
                FrameBody::Attach(attach) if attach.name == "requests" => {
                    requests = Some(attach.handle)
                }
                FrameBody::Attach(attach) if attach.name == "replies" => {
                    device.replies = Some(attach.handle)
                }
                FrameBody::Flow(flow)
                    if flow.handle.is_some()
                        && flow.handle == requests
                        && flow.link_credit.unwrap_or(0) > 0 =>
                {
                    break;
                }
                _ => {}
            }
        }
        Ok(device)
    }

    /// Sends the register request; the reply must carry the final `assigned` state.
    pub async fn register(mut self, id: &str) -> anyhow::Result<()> {
        let transfer = Transfer {
            handle: REQUESTS,
            delivery_id: Some(0),
            delivery_tag: Some(Binary::from(vec![0])),
            message_format: Some(0),
            settled: Some(false),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let payload = request_message(id)?;
        let mut out = Vec::new();
        write_frame(&mut out, AMQP_FRAME, 0, &transfer, &payload)?;
        self.tls.write_all(&out).await?;
        let reply = loop {
            if let FrameBody::Transfer {
                performative,
                payload,
            } = self.next().await?
                && Some(&performative.handle) == self.replies.as_ref()
            {
                break payload;
            }
        };
        if !String::from_utf8_lossy(&reply).contains(r#""status":"assigned""#) {
            bail!(
                "unexpected reply for {id}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        let mut out = Vec::new();
        write_frame(&mut out, AMQP_FRAME, 0, &Close { error: None }, &[])?;
        self.tls.write_all(&out).await?;
        self.tls.shutdown().await.ok();
        Ok(())
    }

    async fn header(&mut self, expected: &[u8; 8]) -> anyhow::Result<()> {
        let mut header = [0u8; 8];
        self.fill(8).await?;
        header.copy_from_slice(&self.read.split_to(8));
        if &header != expected {
            bail!("the server answered with header {header:?}");
        }
        Ok(())
    }

    /// The next frame's bytes after its size.
    async fn frame(&mut self) -> anyhow::Result<BytesMut> {
        self.fill(4).await?;
        let size = u32::from_be_bytes(self.read[..4].try_into().expect("4 bytes")) as usize;
        if size < 8 {
            bail!("a frame of {size} bytes");
        }
        self.fill(size).await?;
        let mut frame = self.read.split_to(size);
        Ok(frame.split_off(4))
    }

    async fn next(&mut self) -> anyhow::Result<FrameBody> {
        let mut bytes = self.frame().await?;
        let frame = FrameDecoder {}
            .decode(&mut bytes)?
            .context("an empty frame")?;
        if let FrameBody::Close(close) = &frame.body {
            bail!("the server closed the connection: {:?}", close.error);
        }
        Ok(frame.body)
    }

    async fn fill(&mut self, n: usize) -> anyhow::Result<()> {
        while self.read.len() < n {
            if self.tls.read_buf(&mut self.read).await? == 0 {
                bail!("the server hung up");
            }
        }
        Ok(())
    }
}

/// The frames after the AMQP header: open, begin, the receiver link (with credit) and the sender
/// link.
fn opening(out: &mut Vec<u8>, id: &str, address: &str) -> Result<(), serde_amqp::Error> {
    let attach = |name: &str, handle: Handle, role: Role| Attach {
        name: name.into(),
        handle,
        role: role.clone(),
        snd_settle_mode: Default::default(),
        rcv_settle_mode: Default::default(),
        source: Some(Box::new(match role {
            Role::Receiver => Source::builder().address(address.to_string()).build(),
            Role::Sender => Source::builder().build(),
        })),
        target: Some(Box::new(TargetArchetype::Target(match role {
            Role::Receiver => LinkTarget::builder().build(),
            Role::Sender => LinkTarget::builder().address(address.to_string()).build(),
        }))),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: (role == Role::Sender).then_some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    let open = encoding::open(id, Some("localhost"), 65536);
    let begin = encoding::begin(64);
    let credit = Flow {
        next_incoming_id: Some(0),
        incoming_window: 64,
        next_outgoing_id: 0,
        outgoing_window: 64,
        handle: Some(REPLIES),
        delivery_count: Some(0),
        link_credit: Some(8),
        available: None,
        drain: false,
        echo: false,
        properties: None,
    };
    write_frame(out, AMQP_FRAME, 0, &open, &[])?;
    write_frame(out, AMQP_FRAME, 0, &begin, &[])?;
    write_frame(
        out,
        AMQP_FRAME,
        0,
        &attach("replies", REPLIES, Role::Receiver),
        &[],
    )?;
    write_frame(out, AMQP_FRAME, 0, &credit, &[])?;
    write_frame(
        out,
        AMQP_FRAME,
        0,
        &attach("requests", REQUESTS, Role::Sender),
        &[],
    )
}

/// The register request's sections: properties (correlation-id), application properties
/// (the operation) and the DeviceRegistration JSON as data.
fn request_message(id: &str) -> anyhow::Result<Bytes> {
    let properties = Properties::builder()
        .correlation_id("1".to_string())
        .build();
    let operation = ApplicationProperties::builder()
        .insert(
            "iotdps-operation-type".to_string(),
            SimpleValue::String("iotdps-register".into()),
        )
        .build();
    let body = Data(Binary::from(
        format!(r#"{{"registrationId":"{id}"}}"#).into_bytes(),
    ));
    let mut bytes = serde_amqp::to_vec(&properties)?;
    bytes.extend(serde_amqp::to_vec(&operation)?);
    bytes.extend(serde_amqp::to_vec(&body)?);
    Ok(Bytes::from(bytes))
}
