//! A request frame from the network: split off the byte stream, then decoded at any API key
//! and version kafka-protocol knows. Any outcome but a panic or an allocation abort is fine.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use strom_protocol::frame::{decode_request, split_frame};
use strom_protocol::kafka_protocol::messages::ApiKey;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    // As the broker reads: frames up to socket.request.max.bytes off the stream.
    while let Ok(Some(frame)) = split_frame(&mut buf, 100 * 1024 * 1024) {
        let _ = decode_request(frame, |api: ApiKey| {
            let v = api.valid_versions();
            Some((v.min, v.max))
        });
    }
    // And the bytes as one request body, as a frame already split.
    let _ = decode_request(bytes::Bytes::copy_from_slice(data), |api: ApiKey| {
        let v = api.valid_versions();
        Some((v.min, v.max))
    });
});
