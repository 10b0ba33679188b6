//! Coordinators: the brokers' services whose state lives in a compacted internal topic and
//! is served by the leader of the partition a key hashes to.
//!
//! - [`group`]: the group coordinator (classic consumer-group protocol) and committed
//!   offsets, in `__consumer_offsets`.
//! - [`state_log`]: what every coordinator shares: which partition a key belongs to, loading a
//!   partition when this broker starts to lead it (in a new leader epoch), and appending state
//!   records that are acknowledged only once committed (acks=all).
//! - [`txn`]: the transaction coordinator (KIP-98): transactional ids, their producer ids
//!   and epochs and open transactions, in `__transaction_state`.
//!
//! **Coordinator rule:** a broker answers for a key only while it leads the key's partition,
//! and only after it has loaded that partition in the current leader epoch; a write is
//! acknowledged only once the partition's high watermark passes it in the epoch it was
//! written in. So a coordinator failover loses no acknowledged state.

pub mod group;
pub mod state_log;
pub mod txn;

pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;

/// Java's `String.hashCode`, which Kafka uses to map a group (or transactional id) to its partition.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The partition of `key` among `partitions` (Kafka's `Utils.abs(hash) % partitions`).
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    (java_string_hash(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_hash_is_javas_string_hash() {
        // Java: "hello".hashCode() == 99162322, "test".hashCode() == 3556498, and a string
        // long enough to wrap: "consumer-group-1".hashCode() == 147483020.
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("test"), 3_556_498);
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(java_string_hash("consumer-group-1"), 147_483_020);
        assert_eq!(partition_for("consumer-group-1", 50), 20);
    }
}
