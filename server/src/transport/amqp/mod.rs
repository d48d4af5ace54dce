//! The AMQP 1.0 device endpoint over TLS (5671): the SASL front (`sasl`), then fe2o3-amqp's
//! connection, session and link acceptors, then the DPS link protocol (`links`): one receiver and
//! one sender link on `{idScope}/registrations/{registrationId}`, request messages answered on
//! the other link. Every registration rule stays in the Provisioner.

mod coalesce;
pub mod encoding;
pub mod guard;
pub mod links;
pub mod rewind;
pub mod sasl;

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor, SessionAcceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::listener::{ListenerLimits, Peer, accept_tls};
use crate::diagnostics::Protocol;
use crate::domain::provisioner::{ProvisionError, Provisioner};
use crate::proto::error::ErrorBody;
use coalesce::Coalesced;
use encoding::{AMQP_FRAME, write_frame};
use guard::{FrameGuard, FrameLimits};
use rewind::Rewind;
use sasl::{AMQP_HEADER, SASL_HEADER};

/// Bounds of one AMQP connection.
#[derive(Debug, Clone)]
pub struct AmqpLimits {
    /// From the TLS handshake to both links attached (SASL, open, begin, attach).
    pub setup_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Largest message accepted (the DPS body limit plus room for properties).
    pub max_message_bytes: usize,
}

/// How long a closing connection waits for the device's detach, end and close.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest frame either side sends; bigger messages span several transfers.
const MAX_FRAME: u32 = 64 * 1024;

impl AmqpLimits {
    fn frames(&self) -> FrameLimits {
        FrameLimits {
            max_frame: MAX_FRAME as usize,
            max_message: self.max_message_bytes,
        }
    }
}

pub async fn serve_amqp(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    provisioner: Arc<Provisioner>,
    limits: ListenerLimits,
    amqp: AmqpLimits,
    shutdown: CancellationToken,
) {
    accept_tls(
        listener,
        tls,
        limits,
        shutdown,
        move |stream, peer, shutdown| {
            let (provisioner, amqp) = (provisioner.clone(), amqp.clone());
            let device = Peer::of(&stream, peer);
            async move {
                let served = serve(
                    stream,
                    device,
                    &provisioner,
                    &amqp,
                    Protocol::Amqp,
                    shutdown,
                );
                if let Err(e) = Box::pin(served).await {
                    tracing::debug!(%peer, error = %e, "AMQP connection ended");
                }
            }
        },
    )
    .await
}

/// Drops the first `n` bytes of a connection's buffer; an emptied one is freed, so that an idle
/// connection holds none.
fn consume(buffer: &mut Vec<u8>, n: usize) {
    buffer.drain(..n);
    if buffer.is_empty() {
        *buffer = Vec::new();
    }
}

/// Refuses a connection before it opens, as an AMQP peer must (§2.4.1): our header, an `open`,
/// then a `close` carrying `amqp:unauthorized-access` and the Azure error JSON. A bare hang-up
/// would make rhea (the Node SDK) reconnect until it times out.
async fn refuse_connection<S: AsyncWrite + Unpin>(stream: &mut S, why: &str) -> anyhow::Result<()> {
    use fe2o3_amqp::types::definitions::{AmqpError, Error};
    use fe2o3_amqp::types::performatives::Close;
    let open = encoding::open("onramp", None, MAX_FRAME);
    let refusal = ProvisionError::Unauthorized(why.to_string());
    let body = ErrorBody::new(refusal.code(), refusal.client_message());
    let description = serde_json::to_string(&body)?;
    let close = Close {
        error: Some(Error::new(
            AmqpError::UnauthorizedAccess,
            Some(description),
            None,
        )),
    };
    let mut bytes = AMQP_HEADER.to_vec();
    write_frame(&mut bytes, AMQP_FRAME, 0, &open, &[])?;
    write_frame(&mut bytes, AMQP_FRAME, 0, &close, &[])?;
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(())
}

/// One connection, from its first byte to its close. A refused login closes the connection
/// after the SASL outcome; nothing half-open is left.
pub async fn serve<S>(
    stream: S,
    device: Peer,
    provisioner: &Arc<Provisioner>,
    limits: &AmqpLimits,
    protocol: Protocol,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Writes leave together when the connection waits for the device (see `coalesce`).
    let mut stream = Coalesced::new(stream);
    let setup = async {
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await?;
        let login = match sasl::classify_header(&header) {
            Ok(true) => {
                let chain = device.chain.as_ref();
                let negotiated = sasl::negotiate(&mut stream, provisioner, protocol, chain).await;
                match negotiated {
                    Ok(login) => login,
                    Err(e) => {
                        let _ = stream.shutdown().await;
                        return Err(anyhow::Error::from(e));
                    }
                }
            }
            Ok(false) => {
                let chain = device.chain.as_ref();
                match sasl::certificate_login(chain) {
                    Ok(login) => login,
                    Err(refusal) => {
                        let _ = refuse_connection(&mut stream, &refusal).await;
                        anyhow::bail!("certificate login refused: {refusal}");
                    }
                }
            }
            Err(e) => {
                // Tell a confused client which protocol this is, then hang up (AMQP §2.2).
                let _ = stream.write_all(&SASL_HEADER).await;
                let _ = stream.shutdown().await;
                return Err(e.into());
            }
        };
        // After SASL the client sends a fresh AMQP header; without SASL, replay the one read.
        let replay = match header == AMQP_HEADER {
            true => header.to_vec(),
            false => Vec::new(),
        };
        let acceptor = ConnectionAcceptor::builder()
            .container_id("onramp")
            .max_frame_size(MAX_FRAME)
            .idle_time_out(limits.idle_timeout.as_millis() as u32)
            .build();
        let guarded = FrameGuard::new(Rewind::new(replay, stream), limits.frames());
        let mut connection = acceptor.accept(guarded).await?;
        let incoming = connection
            .next_incoming_session()
            .await
            .ok_or_else(|| anyhow::anyhow!("the connection closed before a session began"))?;
        let mut session = SessionAcceptor::new()
            .accept_incoming_session(incoming, &mut connection)
            .await?;
        let link_acceptor = LinkAcceptor::builder()
            .max_message_size(limits.max_message_bytes as u64)
            .build();
        let pair =
            links::attach(&mut session, &link_acceptor, &login, device.chain.as_ref()).await?;
        anyhow::Ok((connection, session, pair))
    };
    let (mut connection, mut session, mut pair) =
        match tokio::time::timeout(limits.setup_timeout, Box::pin(setup)).await {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("AMQP setup took longer than {:?}", limits.setup_timeout),
        };
    let context = links::Context {
        provisioner: provisioner.clone(),
        protocol,
        client: device.ip,
        idle_timeout: limits.idle_timeout,
    };
    let served = links::serve(&mut pair, &context, shutdown).await;
    // Detach, end and close as AMQP asks; a device that is gone answers none of them (each waits
    // for the peer's reply), and its connection must not hold a slot until then.
    let goodbye = async {
        pair.close().await;
        let _ = session.end().await;
        let _ = connection.close().await;
    };
    if tokio::time::timeout(GOODBYE_TIMEOUT, goodbye)
        .await
        .is_err()
    {
        tracing::debug!(peer = ?device.ip, "the AMQP device left without a goodbye");
    }
    served
}
