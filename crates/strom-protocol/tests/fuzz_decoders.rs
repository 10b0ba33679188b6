//! Fuzzing the request decoder and the RecordBatch view with arbitrary bytes: whatever a
//! client sends, decoding returns a value or a typed error. A panic or an allocation abort
//! fails the test (the process dies), which is how an untrusted array count that asked for
//! gigabytes was found in the kafka-protocol codecs (see vendor/kafka-protocol/README.strom.md).

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use strom_protocol::batch::{claimed_size, BatchView};
use strom_protocol::frame::{decode_request, split_frame};
use strom_protocol::kafka_protocol::messages::ApiKey;

/// Every API key kafka-protocol knows, at every version it can decode: the fuzzer reaches
/// each body decoder, not only the header check.
fn every_version(api: ApiKey) -> Option<(i16, i16)> {
    let range = api.valid_versions();
    Some((range.min, range.max))
}

fn api_and_version() -> impl Strategy<Value = (i16, i16)> {
    let apis: Vec<(i16, i16, i16)> =
        ApiKey::iter().map(|k| (k as i16, k.valid_versions().min, k.valid_versions().max)).collect();
    proptest::sample::select(apis).prop_flat_map(|(key, min, max)| (Just(key), min..=max))
}

fn request_frame(key: i16, version: i16, body: &[u8]) -> Bytes {
    let mut frame = BytesMut::new();
    frame.put_i16(key);
    frame.put_i16(version);
    frame.put_i32(7);
    frame.extend_from_slice(body);
    frame.freeze()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]

    #[test]
    fn decode_request_never_panics_on_random_bodies(
        (key, version) in api_and_version(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = decode_request(request_frame(key, version, &body), every_version);
    }

    /// Bodies made mostly of large counts and lengths: the values that make a naive decoder
    /// reserve memory it was never sent.
    #[test]
    fn decode_request_never_trusts_counts(
        (key, version) in api_and_version(),
        words in proptest::collection::vec(prop_oneof![Just(0x7fff_ffffu32), Just(0xffff_ffffu32), Just(0x0fff_ffffu32), any::<u32>()], 0..32),
    ) {
        let body: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        let _ = decode_request(request_frame(key, version, &body), every_version);
    }

    #[test]
    fn split_frame_takes_whole_frames_or_refuses(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        max in 0usize..1 << 20,
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(frame)) = split_frame(&mut buf, max) {
            prop_assert!(frame.len() <= max);
            prop_assert_eq!(frame.len() + 4 + buf.len(), bytes.len());
        }
    }

    #[test]
    fn batch_view_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = claimed_size(&bytes);
        if let Ok(view) = BatchView::parse(&bytes) {
            // Every accessor reads inside the buffer it was given.
            let _ = (view.base_offset(), view.last_offset(), view.records_count(), view.max_timestamp());
            prop_assert!(view.size() <= bytes.len());
        }
        let _ = BatchView::parse_validated(&bytes);
    }
}
