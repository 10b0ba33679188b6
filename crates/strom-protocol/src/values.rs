//! Small conversions every side of the wire needs: Kafka strings from Rust strings, and the
//! clock in Kafka's timestamp unit.

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// A topic name as the `kafka-protocol` codecs want it.
pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// A string as the `kafka-protocol` codecs want it.
pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The wall clock in Kafka's timestamp unit: milliseconds since the Unix epoch (0 if the
/// clock reads before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
