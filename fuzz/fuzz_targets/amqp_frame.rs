//! The AMQP frame guard stands between a logged-in client and fe2o3-amqp's decoder: it must
//! never panic, and whatever it lets through, fe2o3 must decode without a panic or an allocation
//! beyond what the frame holds (libFuzzer's malloc limit catches one).
#![no_main]
use bytes::{Buf, BytesMut};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody, FrameDecoder};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp::types::primitives::Value;
use libfuzzer_sys::fuzz_target;
use onramp::transport::amqp::guard::{Deliveries, FrameLimits, check_frame};
use tokio_util::codec::Decoder;

const LIMITS: FrameLimits = FrameLimits {
    max_frame: 64 * 1024,
    max_message: 100 * 1024,
};

fuzz_target!(|data: &[u8]| {
    // The input is a frame's bytes after its size, as a client would send them.
    let mut frame = ((data.len() + 4) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(data);
    let mut deliveries = Deliveries::default();
    if check_frame(&frame, LIMITS, &mut deliveries).is_err() || data.len() < 4 {
        return;
    }
    let mut bytes = BytesMut::from(data);
    let decoded = FrameDecoder {}.decode(&mut bytes);
    if let Ok(Some(Frame {
        body: FrameBody::Transfer {
            performative,
            payload,
        },
        ..
    })) = decoded
    {
        if !performative.more {
            let reader = serde_amqp::read::IoReader::new(payload.reader());
            let _ = <Body<Value> as DecodeIntoMessage>::decode_message_from_reader(reader);
        }
    }
});
