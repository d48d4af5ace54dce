//! The DPS link protocol over AMQP: the device attaches a receiver link (source) and a sender link
//! (target), both on `{idScope}/registrations/{registrationId}`; each request message it sends
//! (`iotdps-operation-type` = `iotdps-register` or `iotdps-get-operationstatus`) is settled, then
//! answered on the other link with the same `correlation-id` and the JSON in a data section. A
//! refused request is a Rejected outcome carrying the Azure error JSON. Only decoding and
//! encoding happen here: registration, polling and diagnostics are the Provisioner's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint, ListenerSessionHandle};
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, Fields};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message, MessageId, Properties, Source, Target, TargetArchetype,
};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{SimpleValue, Symbol, Value};
use tokio_util::sync::CancellationToken;

use super::sasl::{Login, parse_device_name};
use crate::attestation::x509::PresentedChain;
use crate::diagnostics::Protocol;
use crate::domain::provisioner::{
    Credential, OperationReply, ProvisionError, Provisioner, RegisterRequest, StatusRequest,
};
use crate::proto::error::ErrorBody;

pub const OPERATION_TYPE: &str = "iotdps-operation-type";
pub const OPERATION_ID: &str = "iotdps-operation-id";
pub const REGISTER: &str = "iotdps-register";
pub const GET_OPERATION_STATUS: &str = "iotdps-get-operationstatus";
/// Node sends the `forceRegistration` of its register call. Onramp runs the assignment on every
/// register request under the enrollment's reprovisioning policy, so `true` asks for nothing more;
/// the property is read so that a value that is not a boolean is refused, not ignored.
pub const FORCE_REGISTRATION: &str = "iotdps-forceRegistration";
/// Attach properties naming the DPS API version the SDK speaks and the SDK itself.
pub const API_VERSION: &str = "com.microsoft:api-version";
pub const CLIENT_VERSION: &str = "com.microsoft:client-version";
/// Azure's condition for "slow down"; the device retries after `retry-after`.
pub const THROTTLED: &str = "com.microsoft:device-container-throttled";

/// The device's two links and who it is.
pub struct LinkPair {
    /// The device's sender link: its requests arrive here.
    requests: Receiver,
    /// The device's receiver link: replies go here.
    replies: Sender,
    id_scope: String,
    registration_id: String,
    credential: Credential,
}

/// What a device's attach properties say about its SDK. Any API version is accepted, as over
/// HTTPS and MQTT; both are logged with the connection so an operator can tell SDKs apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub api_version: Option<String>,
    pub client_version: Option<String>,
}

impl ClientInfo {
    /// Reads the properties of one attach; a link without them leaves what the other link said.
    pub fn read(&mut self, attach: &Attach) {
        let text = |name: &str| match attach.properties.as_ref()?.get(&Symbol::from(name))? {
            Value::String(s) => Some(s.clone()),
            Value::Symbol(s) => Some(s.as_str().to_string()),
            _ => None,
        };
        self.api_version = text(API_VERSION).or(self.api_version.take());
        self.client_version = text(CLIENT_VERSION).or(self.client_version.take());
    }
}

/// What a request needs besides the links.
pub struct Context {
    pub provisioner: Arc<Provisioner>,
    pub protocol: Protocol,
    pub client: Option<std::net::IpAddr>,
    pub idle_timeout: Duration,
}

/// The address part after an optional `amqps://host/` (the C SDK sends the full URL).
fn device_address(address: &str) -> &str {
    match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
        None => address,
    }
}

fn attach_address(attach: &Attach) -> Option<String> {
    let address = match attach.role {
        // The device receives replies from its source...
        definitions::Role::Receiver => attach.source.as_ref()?.address.clone(),
        // ...and sends requests to its target.
        definitions::Role::Sender => match attach.target.as_deref()? {
            TargetArchetype::Target(target) => target.address.clone(),
        },
    }?;
    Some(device_address(&address).to_string())
}

/// Accepts the two links; both must name the device the connection logged in as (or, with a
/// certificate, the same device).
pub async fn attach<FS, FT>(
    session: &mut ListenerSessionHandle,
    acceptor: &LinkAcceptor<FS, FT>,
    login: &Login,
    chain: Option<&PresentedChain>,
) -> anyhow::Result<LinkPair>
where
    FS: Fn(Source) -> Option<Source>,
    FT: Fn(Target) -> Option<Target>,
{
    let (mut requests, mut replies, mut named) = (None, None, None::<String>);
    let mut client = ClientInfo::default();
    while requests.is_none() || replies.is_none() {
        let attach = session
            .next_incoming_attach()
            .await
            .ok_or_else(|| anyhow::anyhow!("the session ended before both links attached"))?;
        let address = attach_address(&attach).unwrap_or_default();
        let (scope, id) = parse_device_name(&address)
            .ok_or_else(|| anyhow::anyhow!("link address {address:?} is not a device's"))?;
        let logged_in = match login {
            Login::Device {
                id_scope,
                registration_id,
                ..
            } => scope.eq_ignore_ascii_case(id_scope) && id.eq_ignore_ascii_case(registration_id),
            Login::Certificate => true,
        };
        if !logged_in {
            anyhow::bail!("link address {address:?} is not the device that logged in");
        }
        if named
            .as_ref()
            .is_some_and(|n| !n.eq_ignore_ascii_case(&address))
        {
            anyhow::bail!("the two links name different devices");
        }
        named = Some(address.clone());
        client.read(&attach);
        match acceptor.accept_incoming_attach(attach, session).await? {
            LinkEndpoint::Receiver(r) => requests = Some(r),
            LinkEndpoint::Sender(s) => replies = Some(s),
        }
    }
    let (id_scope, registration_id) = match parse_device_name(named.as_deref().unwrap_or("")) {
        Some((scope, id)) => (scope.to_string(), id.to_string()),
        None => anyhow::bail!("no device address"),
    };
    let credential = match login {
        Login::Device { login, .. } => Credential::Login(login.clone()),
        Login::Certificate => Credential::from_parts(None, chain),
    };
    tracing::debug!(
        %registration_id,
        api_version = client.api_version.as_deref().unwrap_or("-"),
        client_version = client.client_version.as_deref().unwrap_or("-"),
        "AMQP device linked"
    );
    Ok(LinkPair {
        requests: requests.expect("attached"),
        replies: replies.expect("attached"),
        id_scope,
        registration_id,
        credential,
    })
}

/// A request as the device sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub correlation_id: Option<MessageId>,
    pub operation: Operation,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Register,
    Status {
        operation_id: String,
    },
    /// Refused with 400 and this reason: an unknown operation type, a malformed property.
    Invalid(String),
}

fn text_property<'a>(properties: Option<&'a ApplicationProperties>, name: &str) -> Option<&'a str> {
    match properties?.get(name)? {
        SimpleValue::String(s) => Some(s.as_str()),
        SimpleValue::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

/// `iotdps-forceRegistration`: absent, a boolean, or the text `true` / `false`.
fn force_registration(properties: Option<&ApplicationProperties>) -> Result<bool, String> {
    match properties.and_then(|p| p.get(FORCE_REGISTRATION)) {
        None | Some(SimpleValue::Null) => Ok(false),
        Some(SimpleValue::Bool(force)) => Ok(*force),
        Some(SimpleValue::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(SimpleValue::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!(
            "{FORCE_REGISTRATION} must be a boolean, not {other:?}"
        )),
    }
}

/// Decodes a request message: its operation from the application properties, and its body (the
/// data sections joined; a value body, as a poll's, counts as empty).
pub fn decode(message: &Message<Body<Value>>) -> Request {
    let properties = message.application_properties.as_ref();
    let operation = match text_property(properties, OPERATION_TYPE) {
        Some(REGISTER) => match force_registration(properties) {
            Ok(_) => Operation::Register,
            Err(why) => Operation::Invalid(why),
        },
        Some(GET_OPERATION_STATUS) => Operation::Status {
            operation_id: text_property(properties, OPERATION_ID)
                .unwrap_or_default()
                .to_string(),
        },
        other => Operation::Invalid(format!(
            "unknown {OPERATION_TYPE} {:?}: expected {REGISTER} or {GET_OPERATION_STATUS}",
            other.unwrap_or_default()
        )),
    };
    let body = match message.body.try_as_data() {
        Ok(sections) => sections
            .flat_map(|d| d.iter().copied())
            .collect::<Vec<u8>>(),
        Err(_) => Vec::new(),
    };
    Request {
        correlation_id: message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone()),
        operation,
        body: Bytes::from(body),
    }
}

/// The reply to a request that succeeded: its JSON, `retry-after` while it is not final (both
/// spellings: C and Node read `retry-after`, C# `Retry-After`).
pub fn reply(correlation_id: Option<MessageId>, outcome: &OperationReply) -> Message<Body<Value>> {
    let json = serde_json::to_vec(&outcome.operation).unwrap_or_default();
    let mut properties = ApplicationProperties::builder();
    if !outcome.is_final() {
        let retry = outcome.retry_after_secs.to_string();
        properties = properties
            .insert(
                "retry-after".to_string(),
                SimpleValue::String(retry.clone()),
            )
            .insert("Retry-After".to_string(), SimpleValue::String(retry));
    }
    let mut message_properties = Properties::builder();
    if let Some(id) = correlation_id {
        message_properties = message_properties.correlation_id(id);
    }
    Message::builder()
        .properties(message_properties.build())
        .application_properties(properties.build())
        .data(json)
        .build()
        .map_body(|data| Body::Data(vec![data].into()))
}

/// A refusal as AMQP carries it: a condition, the Azure error JSON as description, and
/// `retry-after` in the info map when the device should come back.
pub fn rejection(error: &ProvisionError) -> definitions::Error {
    let status = error.status();
    let condition = match status {
        401 | 403 => ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess),
        404 => ErrorCondition::AmqpError(AmqpError::NotFound),
        429 => ErrorCondition::Custom(Symbol::from(THROTTLED)),
        503 => ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded),
        400..=499 => ErrorCondition::AmqpError(AmqpError::InvalidField),
        _ => ErrorCondition::AmqpError(AmqpError::InternalError),
    };
    let body = ErrorBody::new(error.code(), error.client_message());
    let description = serde_json::to_string(&body).unwrap_or_default();
    let info = error.retry_after_secs().map(|secs| {
        let mut info = Fields::new();
        // Node and C read `retry-after`, C# `Retry-After` (a case-sensitive map).
        for name in ["retry-after", "Retry-After"] {
            info.insert(Symbol::from(name), Value::Int(secs as i32));
        }
        info
    });
    definitions::Error::new(condition, Some(description), info)
}

/// The request loop: one request at a time, so replies leave in the order requests came (a
/// client that sends no correlation-id matches them by order).
pub async fn serve(
    pair: &mut LinkPair,
    context: &Context,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let delivery: Delivery<Body<Value>> = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = tokio::time::timeout(context.idle_timeout, pair.requests.recv()) => match received {
                Err(_) => anyhow::bail!("idle for {:?}", context.idle_timeout),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "AMQP request link ended");
                    break;
                }
                Ok(Ok(delivery)) => delivery,
            },
        };
        let request = decode(delivery.message());
        match answer(pair, context, &request).await {
            Ok(outcome) if outcome.drop_connection => {
                anyhow::bail!("test mode: connection dropped before the reply")
            }
            Ok(outcome) => {
                pair.requests.accept(&delivery).await?;
                // The reply goes out when the device gives credit, bounded like its silence; its
                // disposition is not awaited: nothing depends on it, and a device that never
                // settles would otherwise hold this loop, and its connection slot, for good.
                let reply = reply(request.correlation_id, &outcome);
                match tokio::time::timeout(context.idle_timeout, pair.replies.send_batchable(reply))
                    .await
                {
                    Ok(sent) => drop(sent?),
                    Err(_) => anyhow::bail!("no credit for a reply in {:?}", context.idle_timeout),
                }
            }
            Err(refusal) => pair.requests.reject(&delivery, rejection(&refusal)).await?,
        }
    }
    Ok(())
}

impl LinkPair {
    /// Detaches both links (the device answers with its detaches, if it is still there).
    pub async fn close(self) {
        let _ = self.requests.close().await;
        let _ = self.replies.close().await;
    }
}

async fn answer(
    pair: &LinkPair,
    context: &Context,
    request: &Request,
) -> Result<OperationReply, ProvisionError> {
    match &request.operation {
        Operation::Register => {
            let register = RegisterRequest {
                id_scope: pair.id_scope.clone(),
                registration_id: pair.registration_id.clone(),
                body: request.body.clone(),
                credential: pair.credential.clone(),
                protocol: context.protocol,
                client: context.client,
            };
            context.provisioner.register(register).await
        }
        Operation::Status { operation_id } => {
            let status = StatusRequest {
                id_scope: pair.id_scope.clone(),
                registration_id: pair.registration_id.clone(),
                credential: pair.credential.clone(),
                protocol: context.protocol,
            };
            context
                .provisioner
                .operation_status(status, operation_id)
                .await
        }
        Operation::Invalid(why) => {
            let refusal = ProvisionError::BadRequest(why.clone());
            context
                .provisioner
                .report_refusal(&pair.registration_id, context.protocol, &refusal);
            Err(refusal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(properties: ApplicationProperties) -> Message<Body<Value>> {
        Message::builder()
            .application_properties(properties)
            .data(b"{}".to_vec())
            .build()
            .map_body(|data| Body::Data(vec![data].into()))
    }

    #[test]
    fn force_registration_must_be_a_boolean() {
        let register = |force: Option<SimpleValue>| {
            let mut properties = ApplicationProperties::builder().insert(
                OPERATION_TYPE.to_string(),
                SimpleValue::String(REGISTER.into()),
            );
            if let Some(force) = force {
                properties = properties.insert(FORCE_REGISTRATION.to_string(), force);
            }
            decode(&request(properties.build())).operation
        };
        assert_eq!(register(None), Operation::Register);
        assert_eq!(register(Some(SimpleValue::Bool(true))), Operation::Register);
        assert_eq!(
            register(Some(SimpleValue::String("False".into()))),
            Operation::Register
        );
        assert!(matches!(
            register(Some(SimpleValue::Int(1))),
            Operation::Invalid(why) if why.contains(FORCE_REGISTRATION)
        ));
        let unknown = ApplicationProperties::builder()
            .insert(
                OPERATION_TYPE.to_string(),
                SimpleValue::String("iotdps-delete".into()),
            )
            .build();
        assert!(matches!(
            decode(&request(unknown)).operation,
            Operation::Invalid(why) if why.contains("iotdps-delete")
        ));
    }

    #[test]
    fn a_throttled_or_unavailable_device_is_told_when_to_come_back() {
        let retry_after = |e: &definitions::Error, name: &str| {
            e.info
                .as_ref()
                .and_then(|i| i.get(&Symbol::from(name)))
                .cloned()
        };
        let throttled = rejection(&ProvisionError::Throttled {
            what: "registrations",
            retry_after: 7,
        });
        assert_eq!(
            throttled.condition,
            ErrorCondition::Custom(Symbol::from(THROTTLED))
        );
        for name in ["retry-after", "Retry-After"] {
            assert_eq!(retry_after(&throttled, name), Some(Value::Int(7)), "{name}");
        }
        let body: serde_json::Value =
            serde_json::from_str(throttled.description.as_deref().unwrap()).unwrap();
        assert_eq!(body["errorCode"], 429001);

        let down = rejection(&ProvisionError::Unavailable("database down".into()));
        assert_eq!(retry_after(&down, "retry-after"), Some(Value::Int(3)));
        assert!(!down.description.unwrap().contains("database down"));
        let refused = rejection(&ProvisionError::Unauthorized("wrong key".into()));
        assert_eq!(refused.info, None, "a refusal is final: no retry-after");
    }

    #[test]
    fn attach_properties_name_the_sdk() {
        let attach = |properties: Option<Fields>| Attach {
            name: "link".into(),
            handle: 0.into(),
            role: definitions::Role::Sender,
            snd_settle_mode: Default::default(),
            rcv_settle_mode: Default::default(),
            source: None,
            target: None,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties,
        };
        let mut properties = Fields::new();
        properties.insert(
            Symbol::from(API_VERSION),
            Value::String("2019-03-31".into()),
        );
        properties.insert(
            Symbol::from(CLIENT_VERSION),
            Value::Symbol(Symbol::from("azure-iot-provisioning-device/1.9.1")),
        );
        let mut client = ClientInfo::default();
        client.read(&attach(Some(properties)));
        // The second link says nothing: what the first said stays.
        client.read(&attach(None));
        assert_eq!(
            client,
            ClientInfo {
                api_version: Some("2019-03-31".into()),
                client_version: Some("azure-iot-provisioning-device/1.9.1".into()),
            }
        );
    }
}
