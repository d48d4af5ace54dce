//! The AMQP endpoint at the message level (the official Node SDK is in sdk.rs), with fe2o3-amqp's
//! client: a device registers and polls, each refusal has its documented outcome and a
//! diagnostics event, and garbage on the port leaves the server serving. SQLite and PostgreSQL.

use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition, Fields, Role};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message, Outcome, Properties, Source, Target, TargetArchetype,
};
use fe2o3_amqp::types::performatives::{Attach, Close};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Value};
use fe2o3_amqp::types::sasl::SaslInit;
use fe2o3_amqp::{Connection, Session};
use onramp::diagnostics::Protocol;
use onramp::domain::provisioner::{Credential, ProvisionError, RegisterRequest};
use onramp::model::*;
use onramp::transport::amqp::encoding::{self, AMQP_FRAME, SASL_FRAME, write_frame};
use serde_json::{Value as Json, json};
use tokio::io::AsyncWriteExt;

use crate::mqtt::tls_to;
use crate::support::instance::{
    Instance, MAX_AMQP_CONNECTIONS, enroll, random_key, symmetric_spec,
};

crate::backend_suite!(
    a_device_registers_and_polls_over_amqp,
    refused_logins_get_the_sasl_auth_outcome,
    refused_requests_are_rejected_with_the_azure_error,
    garbage_on_the_port_leaves_the_server_serving,
    frames_the_guard_refuses_never_reach_the_decoder,
    devices_that_leave_free_their_slots,
    a_login_stands_for_a_moment_then_the_token_is_checked_again,
);

pub(crate) struct Device {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    pub(crate) requests: Sender,
    replies: Receiver,
}

fn address(i: &Instance, id: &str) -> String {
    format!("{}/registrations/{id}", i.scope())
}

/// Logs in with SASL PLAIN (the SAS token as password) and attaches both links.
pub(crate) async fn open(i: &Instance, id: &str, token: &str) -> anyhow::Result<Device> {
    let tls = tls_to(i, i.amqp_addr).await;
    let connection = Connection::builder()
        .container_id("test-device")
        .hostname("localhost")
        .sasl_profile(SaslProfile::Plain {
            username: address(i, id),
            password: token.to_string(),
        })
        .open_with_stream(tls)
        .await?;
    linked(i, id, connection).await
}

/// The session and both links on a connection that has logged in.
pub(crate) async fn linked(
    i: &Instance,
    id: &str,
    mut connection: ConnectionHandle<()>,
) -> anyhow::Result<Device> {
    let mut session = Session::begin(&mut connection).await?;
    let replies = Receiver::attach(&mut session, "replies", address(i, id)).await?;
    let requests = Sender::attach(&mut session, "requests", address(i, id)).await?;
    Ok(Device {
        connection,
        session,
        requests,
        replies,
    })
}

pub(crate) fn request(
    operation: &str,
    operation_id: Option<&str>,
    correlation: &str,
    body: &[u8],
) -> Message<Body<Value>> {
    let mut properties = ApplicationProperties::builder().insert(
        "iotdps-operation-type".to_string(),
        SimpleValue::String(operation.into()),
    );
    if let Some(id) = operation_id {
        properties = properties.insert(
            "iotdps-operation-id".to_string(),
            SimpleValue::String(id.into()),
        );
    }
    Message::builder()
        .properties(
            Properties::builder()
                .correlation_id(correlation.to_string())
                .build(),
        )
        .application_properties(properties.build())
        .data(body.to_vec())
        .build()
        .map_body(|data| Body::Data(vec![data].into()))
}

impl Device {
    /// Sends a request; on acceptance returns the reply's correlation-id, retry-after and JSON.
    pub(crate) async fn call(
        &mut self,
        message: Message<Body<Value>>,
    ) -> Result<(String, Option<String>, Json), Outcome> {
        match self.requests.send(message).await.unwrap() {
            Outcome::Accepted(_) => {}
            other => return Err(other),
        }
        let delivery =
            tokio::time::timeout(Duration::from_secs(10), self.replies.recv::<Body<Value>>())
                .await
                .expect("a reply")
                .unwrap();
        self.replies.accept(&delivery).await.unwrap();
        let message = delivery.message();
        let correlation = match message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone())
        {
            Some(fe2o3_amqp::types::messaging::MessageId::String(s)) => s,
            other => panic!("correlation-id {other:?}"),
        };
        let retry = message
            .application_properties
            .as_ref()
            .and_then(|p| p.get("retry-after"))
            .map(|v| format!("{v:?}"));
        let data: Vec<u8> = message
            .body
            .try_as_data()
            .unwrap()
            .flat_map(|d| d.iter().copied())
            .collect();
        Ok((correlation, retry, serde_json::from_slice(&data).unwrap()))
    }

    /// Sends a request that must be rejected with `condition`; returns the Azure error JSON the
    /// outcome carries as its description.
    async fn refused(&mut self, message: Message<Body<Value>>, condition: AmqpError) -> Json {
        let outcome = self.call(message).await.unwrap_err();
        let Outcome::Rejected(rejected) = outcome else {
            panic!("not rejected: {outcome:?}");
        };
        let error = rejected.error.expect("an error");
        let body = serde_json::from_str(error.description.as_deref().unwrap_or("null")).unwrap();
        assert_eq!(
            error.condition,
            ErrorCondition::AmqpError(condition),
            "{body}"
        );
        body
    }

    pub(crate) async fn close(mut self) {
        let _ = self.requests.close().await;
        let _ = self.replies.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

async fn a_device_registers_and_polls_over_amqp(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "amqp-dev",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let mut events = i.state.bus.subscribe();
    let mut device = open(i, "amqp-dev", &i.token("amqp-dev", &key))
        .await
        .unwrap();
    let body = json!({"registrationId": "amqp-dev"}).to_string();
    let (correlation, _, mut operation) = device
        .call(request("iotdps-register", None, "c-1", body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(correlation, "c-1");
    let mut polls = 0;
    while operation["status"] == "assigning" {
        polls += 1;
        assert!(polls < 20, "still assigning: {operation}");
        let id = operation["operationId"].as_str().unwrap().to_string();
        let (correlation, retry, next) = device
            .call(request(
                "iotdps-get-operationstatus",
                Some(&id),
                &format!("p-{polls}"),
                b"",
            ))
            .await
            .unwrap();
        assert_eq!(correlation, format!("p-{polls}"));
        if next["status"] == "assigning" {
            assert!(retry.is_some(), "retry-after while assigning");
        }
        operation = next;
    }
    assert_eq!(operation["status"], "assigned", "{operation}");
    assert_eq!(operation["registrationState"]["deviceId"], "amqp-dev");
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.protocol, event.registration_id.as_str()),
        (Protocol::Amqp, "amqp-dev")
    );
    device.close().await;
    let record = i
        .store()
        .get_registration("amqp-dev")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RegistrationStatus::Assigned);
}

async fn refused_logins_get_the_sasl_auth_outcome(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "amqp-login",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let mut events = i.state.bus.subscribe();
    // A wrong key, a token for another device, and another ID scope are all refused at login.
    let wrong_key = open(i, "amqp-login", &i.token("amqp-login", &random_key())).await;
    assert!(wrong_key.is_err(), "a wrong key logs in");
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.registration_id, "amqp-login");
    assert_eq!(event.error_code, Some(401002), "{event:?}");
    let other = open(i, "amqp-login", &i.token("someone-else", &key)).await;
    assert!(other.is_err(), "a token for another device logs in");
    let tls = tls_to(i, i.amqp_addr).await;
    let wrong_scope = Connection::builder()
        .container_id("test-device")
        .sasl_profile(SaslProfile::Plain {
            username: "0ne-other/registrations/amqp-login".into(),
            password: i.token("amqp-login", &key),
        })
        .open_with_stream(tls)
        .await;
    assert!(wrong_scope.is_err(), "another scope logs in");
    // Neither SASL nor a client certificate: refused before any AMQP frame is read.
    let tls = tls_to(i, i.amqp_addr).await;
    match Connection::builder()
        .container_id("anonymous")
        .open_with_stream(tls)
        .await
    {
        Err(_) => {}
        Ok(mut connection) => assert!(
            Session::begin(&mut connection).await.is_err(),
            "an anonymous connection began a session"
        ),
    }
    // The right key still works afterwards.
    let device = open(i, "amqp-login", &i.token("amqp-login", &key))
        .await
        .unwrap();
    device.close().await;
}

async fn refused_requests_are_rejected_with_the_azure_error(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "amqp-bad",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let mut device = open(i, "amqp-bad", &i.token("amqp-bad", &key))
        .await
        .unwrap();
    let invalid = || AmqpError::InvalidField;
    let error = device
        .refused(
            request("iotdps-register", None, "m-1", b"{not json"),
            invalid(),
        )
        .await;
    assert_eq!(error["errorCode"], 400004, "{error}");
    let unknown = request("iotdps-delete-everything", None, "m-2", b"");
    let error = device.refused(unknown, invalid()).await;
    let message = |error: &Json| error["message"].as_str().unwrap().to_string();
    assert!(message(&error).contains("iotdps-register"), "{error}");
    // forceRegistration is read: a value that is not a boolean is refused, not ignored.
    let mut forced = request("iotdps-register", None, "m-2b", b"{}");
    if let Some(properties) = forced.application_properties.as_mut() {
        properties.insert("iotdps-forceRegistration".into(), SimpleValue::Int(1));
    }
    let error = device.refused(forced, invalid()).await;
    assert!(message(&error).contains("forceRegistration"), "{error}");
    let poll = request("iotdps-get-operationstatus", Some("no-such-op"), "m-3", b"");
    device.refused(poll, AmqpError::NotFound).await;
    // The session is still good for a proper request.
    let body = json!({"registrationId": "amqp-bad"}).to_string();
    let (_, _, operation) = device
        .call(request("iotdps-register", None, "m-4", body.as_bytes()))
        .await
        .unwrap();
    assert!(["assigned", "assigning"].contains(&operation["status"].as_str().unwrap()));
    // A body over the limit ends the link: nothing of it reaches the Provisioner.
    let huge = vec![b' '; 200 * 1024];
    let sent = device
        .requests
        .send(request("iotdps-register", None, "m-5", &huge))
        .await;
    assert!(
        !matches!(sent, Ok(Outcome::Accepted(_))),
        "an oversized body was accepted"
    );
    device.close().await;
}

async fn garbage_on_the_port_leaves_the_server_serving(i: &Instance) {
    // Plain garbage, a truncated SASL frame, and a frame claiming to be huge.
    let attempts: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"AMQP\x03\x01\x00\x00\x00\x00\x00\x20\x02\x01\x00\x00\x00\x53",
        b"AMQP\x03\x01\x00\x00\xff\xff\xff\xff",
    ];
    for bytes in attempts {
        let mut tls = tls_to(i, i.amqp_addr).await;
        let _ = tls.write_all(bytes).await;
        let _ = tls.flush().await;
        let mut sink = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut sink),
        )
        .await;
        assert!(read.is_ok(), "the server left {bytes:?} hanging");
    }
    let key = random_key();
    enroll(
        i.store(),
        "amqp-after",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let mut device = open(i, "amqp-after", &i.token("amqp-after", &key))
        .await
        .unwrap();
    let body = json!({"registrationId": "amqp-after"}).to_string();
    assert!(
        device
            .call(request("iotdps-register", None, "g-1", body.as_bytes()))
            .await
            .is_ok()
    );
    device.close().await;
}

/// A hand-written device's first bytes: SASL PLAIN with its token, the AMQP header, open, begin
/// and `attaches`, all in one write.
fn raw_opening(i: &Instance, id: &str, token: &str, attaches: &[Attach]) -> Vec<u8> {
    let mut out = b"AMQP\x03\x01\x00\x00".to_vec();
    let response = format!("\0{}\0{token}", address(i, id));
    let init = SaslInit {
        mechanism: "PLAIN".into(),
        initial_response: Some(Binary::from(response.into_bytes())),
        hostname: None,
    };
    write_frame(&mut out, SASL_FRAME, 0, &init, &[]).unwrap();
    out.extend_from_slice(b"AMQP\x00\x01\x00\x00");
    let open = encoding::open("raw", None, 65536);
    let begin = encoding::begin(64);
    write_frame(&mut out, AMQP_FRAME, 0, &open, &[]).unwrap();
    write_frame(&mut out, AMQP_FRAME, 0, &begin, &[]).unwrap();
    for attach in attaches {
        write_frame(&mut out, AMQP_FRAME, 0, attach, &[]).unwrap();
    }
    out
}

/// The device's link `name`: as a sender it targets the device's address, as a receiver it
/// reads from it.
fn link(i: &Instance, id: &str, handle: u32, role: Role, properties: Option<Fields>) -> Attach {
    let (source, target) = match role {
        Role::Sender => (None, Some(address(i, id))),
        Role::Receiver => (Some(address(i, id)), None),
    };
    Attach {
        name: format!("{role:?}"),
        handle: handle.into(),
        initial_delivery_count: (role == Role::Sender).then_some(0),
        role,
        snd_settle_mode: Default::default(),
        rcv_settle_mode: Default::default(),
        source: Some(Box::new(Source {
            address: source,
            ..Source::builder().build()
        })),
        target: Some(Box::new(TargetArchetype::Target(Target {
            address: target,
            ..Target::builder().build()
        }))),
        unsettled: None,
        incomplete_unsettled: false,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties,
    }
}

/// How many attaches the server has sent in `answer`.
fn attaches(answer: &[u8]) -> usize {
    answer
        .windows(3)
        .filter(|w| *w == [0x00, 0x53, 0x12])
        .count()
}

/// Writes `bytes`, then reads until the server hangs up (`true`), `enough` holds of what it sent,
/// or 5 s pass.
async fn exchange(
    tls: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
    enough: impl Fn(&[u8]) -> bool,
) -> (bool, Vec<u8>) {
    tls.write_all(bytes).await.unwrap();
    tls.flush().await.unwrap();
    let (mut answer, mut chunk) = (Vec::new(), [0u8; 1024]);
    loop {
        let read = tokio::io::AsyncReadExt::read(tls, &mut chunk);
        match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, answer),
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => return (false, answer),
        }
        if enough(&answer) {
            return (false, answer);
        }
    }
}

async fn frames_the_guard_refuses_never_reach_the_decoder(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "amqp-guard",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let token = i.token("amqp-guard", &key);
    // A proper login, open and begin, then the device's attach: well formed, but its properties
    // nest a value deeper than the guard allows (serde_amqp recurses once per level).
    let nested = (0..20).fold(Value::Null, |inner, _| Value::List(vec![inner]));
    let mut properties = Fields::new();
    properties.insert(Symbol::from("x"), nested);
    let send = |properties: Option<Fields>| async {
        let attach = link(i, "amqp-guard", 0, Role::Sender, properties);
        let mut tls = tls_to(i, i.amqp_addr).await;
        let opening = raw_opening(i, "amqp-guard", &token, &[attach]);
        exchange(&mut tls, &opening, |answer| attaches(answer) > 0).await
    };
    // Without the nesting, the same bytes get the server's attach back: the test can tell.
    let (_, answer) = send(None).await;
    assert_eq!(attaches(&answer), 1, "a proper attach got no attach back");
    let (closed, answer) = send(Some(properties)).await;
    assert!(
        closed,
        "the server kept a connection with a refused frame open"
    );
    assert_eq!(
        attaches(&answer),
        0,
        "the nested attach reached fe2o3 and was answered"
    );
    // The server still serves.
    let device = open(i, "amqp-guard", &token).await.unwrap();
    device.close().await;
}

async fn devices_that_leave_free_their_slots(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "amqp-leave",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let token = i.token("amqp-leave", &key);
    // Twice as many devices as the endpoint admits at once attach both links, then close their
    // connection without detaching them and hang up (as a device that lost its state might):
    // each slot must come free at once, not at the idle timeout, or the later ones would wait.
    let links = [
        link(i, "amqp-leave", 0, Role::Receiver, None),
        link(i, "amqp-leave", 1, Role::Sender, None),
    ];
    let leaving = async {
        for _ in 0..2 * MAX_AMQP_CONNECTIONS {
            let mut tls = tls_to(i, i.amqp_addr).await;
            let opening = raw_opening(i, "amqp-leave", &token, &links);
            let (_, answer) = exchange(&mut tls, &opening, |a| attaches(a) == 2).await;
            assert_eq!(attaches(&answer), 2, "the links were not attached");
            let mut close = Vec::new();
            write_frame(&mut close, AMQP_FRAME, 0, &Close { error: None }, &[]).unwrap();
            tls.write_all(&close).await.unwrap();
            let _ = tls.shutdown().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), leaving)
        .await
        .expect("connections that closed with attached links kept their slots");
    // Devices that send their request and never settle the reply (nor say anything more) are
    // closed at the idle timeout like any silent device; their slots come free.
    let body = json!({"registrationId": "amqp-leave"}).to_string();
    let silent = async {
        let mut held = Vec::new();
        for n in 0..2 * MAX_AMQP_CONNECTIONS {
            let mut device = open(i, "amqp-leave", &token).await.unwrap();
            let sent = device
                .requests
                .send(request(
                    "iotdps-register",
                    None,
                    &format!("s-{n}"),
                    body.as_bytes(),
                ))
                .await;
            assert!(matches!(sent, Ok(Outcome::Accepted(_))), "{sent:?}");
            held.push(device);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), silent)
        .await
        .expect("devices that never settled their reply kept their slots");
    let mut device = open(i, "amqp-leave", &token).await.unwrap();
    let body = json!({"registrationId": "amqp-leave"}).to_string();
    assert!(
        device
            .call(request("iotdps-register", None, "l-1", body.as_bytes()))
            .await
            .is_ok()
    );
    device.close().await;
}

/// The SASL login's check stands for the connection's requests right after it (the register
/// the SDK sends at once does not read the enrollment again), for that device only, and for a
/// moment only: a key rotated after the login refuses the requests that come later.
async fn a_login_stands_for_a_moment_then_the_token_is_checked_again(i: &Instance) {
    let (old_key, new_key) = (random_key(), random_key());
    for id in ["amqp-rotated", "amqp-neighbour"] {
        enroll(i.store(), id, None, symmetric_spec(&old_key, &old_key)).await;
    }
    let provisioner = &i.state.provisioner;
    let token = i.token("amqp-rotated", &old_key);
    let login = provisioner
        .check_login(i.scope(), "amqp-rotated", &token, Protocol::Amqp)
        .await
        .unwrap();
    enroll(
        i.store(),
        "amqp-rotated",
        None,
        symmetric_spec(&new_key, &new_key),
    )
    .await;
    let register = |id: &str| RegisterRequest {
        id_scope: i.scope().to_string(),
        registration_id: id.to_string(),
        body: bytes::Bytes::new(),
        credential: Credential::Login(login.clone()),
        protocol: Protocol::Amqp,
        client: None,
    };
    let at_once = provisioner.register(register("amqp-rotated")).await;
    assert!(at_once.is_ok(), "the login stands: {at_once:?}");
    let borrowed = provisioner.register(register("amqp-neighbour")).await;
    assert!(
        matches!(borrowed, Err(ProvisionError::Unauthorized(_))),
        "another device's login: {borrowed:?}"
    );
    // Past the Provisioner's cache lifetime (2 s) the token is checked against the new keys.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let later = provisioner.register(register("amqp-rotated")).await;
    assert!(
        matches!(later, Err(ProvisionError::Unauthorized(_))),
        "a later request with the rotated key: {later:?}"
    );
}
