//! Slow and hostile clients (issue 18, point 5): a flood of half-open TCP connections and
//! stalled TLS handshakes on the HTTPS and MQTT listeners does not keep a real device out, and
//! each stalled connection is closed after `limits.handshake_timeout_secs`; an MQTT client that
//! stops reading is dropped after `limits.mqtt_write_timeout_secs`; an MQTT packet declaring more
//! than the limit is refused on its header, before its bytes are waited for.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt::Client;
use crate::support::instance::{Instance, enroll_devices};

/// Stalled connections per listener: half say nothing, half start a TLS record and stop.
const FLOOD: usize = 1_500;

async fn stall(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut stalled = Vec::with_capacity(count);
    for n in 0..count {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        if n % 2 == 1 {
            // A handshake record header announcing 512 bytes that never come.
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                .await
                .unwrap();
        }
        stalled.push(tcp);
    }
    stalled
}

/// True once the server has closed `tcp` (end of stream or reset).
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut byte = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_does_not_keep_devices_out() {
    let i = Instance::with_limits(|l| {
        l.max_connections = 10_000;
        l.handshake_timeout_secs = 3;
    })
    .await;
    let devices = enroll_devices(&i, "flooded", 2).await;
    let started = Instant::now();
    let mut stalled = stall(i.addr, FLOOD).await;
    stalled.extend(stall(i.mqtt_addr, FLOOD).await);
    let flooded = started.elapsed();

    let (id, key) = &devices[0];
    let https = Instant::now();
    let (status, _, body) = i.register(id, key, json!({"registrationId": id})).await;
    let https = https.elapsed();
    assert!(matches!(status, 200 | 202), "{status} {body}");
    assert_eq!(body["status"], "assigned", "{body}");
    let (id, key) = &devices[1];
    let mqtt = Instant::now();
    let (topic, body) = Client::device(&i, id, key).await.register("1", id).await;
    let mqtt = mqtt.elapsed();
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    assert_eq!(body["status"], "assigned", "{body}");
    eprintln!(
        "{} stalled connections opened in {flooded:?}; meanwhile a registration took {https:?} \
         over HTTPS and {mqtt:?} over MQTT (TLS handshake included)",
        stalled.len()
    );

    // Past the handshake timeout (counted from the last one's accept) every stalled connection
    // has been closed by the server.
    let last_opened = started + flooded;
    tokio::time::sleep_until((last_opened + Duration::from_millis(3_500)).into()).await;
    let mut open = 0;
    for tcp in &mut stalled {
        if !closed_by_server(tcp).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "stalled connections still open after the handshake timeout"
    );
    i.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_client_that_stops_reading_is_dropped() {
    let i = Instance::with_limits(|l| {
        l.mqtt_write_timeout_secs = 1;
        // Thousands of malformed requests a second: the limit is not what this is about.
        l.registrations_per_second = 0;
    })
    .await;
    let (id, key) = &enroll_devices(&i, "deaf", 1).await[0];
    let mut client = Client::device(&i, id, key).await;
    // Requests with a malformed body, each answered at once with a 400, never read.
    let mut batch = BytesMut::new();
    for _ in 0..100 {
        let topic = "$dps/registrations/PUT/iotdps-register/?$rid=1";
        let publish = Publish::new(topic, QoS::AtMostOnce, b"not json".to_vec());
        Packet::Publish(publish)
            .write(&mut batch, usize::MAX)
            .unwrap();
    }
    let mut sent = 0;
    let blocked = loop {
        let write = client.send_raw(&batch);
        if tokio::time::timeout(Duration::from_millis(500), write)
            .await
            .is_err()
        {
            break true;
        }
        sent += 100;
        if sent >= 1_000_000 {
            break false;
        }
    };
    assert!(
        blocked,
        "the server kept reading {sent} requests it could not answer"
    );
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Reading now drains what was sent before the drop, then meets the end of the connection.
    let closed = tokio::time::timeout(Duration::from_secs(10), client.closed()).await;
    assert!(
        closed.is_ok_and(|c| c),
        "the session outlived its write timeout"
    );
    eprintln!(
        "a client that stopped reading after {sent} requests was dropped; seen closed {:?} later",
        stopped.elapsed()
    );
    i.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_mqtt_packet_is_refused_on_its_header() {
    let i = Instance::with_limits(|_| {}).await;
    let (id, key) = &enroll_devices(&i, "big", 1).await[0];
    let mut client = Client::device(&i, id, key).await;
    // A PUBLISH header declaring 200 MiB (variable-length 80 80 80 64); not one byte follows.
    client.send_raw(&[0x30, 0x80, 0x80, 0x80, 0x64]).await;
    let closed = tokio::time::timeout(Duration::from_secs(2), client.closed()).await;
    assert!(
        closed.is_ok_and(|c| c),
        "the server waited for the declared bytes"
    );
    i.finish().await;
}
