//! The log's behaviour as the broker relies on it: layout, lookups, roll, retention, flush,
//! epochs, limits.

mod common;

use common::*;
use strom_storage::{Log, LogConfig, LogError};

fn open(dir: &std::path::Path, cfg: LogConfig) -> Log {
    Log::open(dir, cfg).unwrap().0
}

#[test]
fn kafka_file_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for t in 0..40 {
        log.append_as_leader(&batch(t, 3, t as i64), 4, 0).unwrap();
    }
    log.close().unwrap();
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for n in ["00000000000000000000.log", "00000000000000000000.index", "00000000000000000000.timeindex"] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    assert!(names.iter().filter(|n| n.ends_with(".log")).count() > 1, "rolled on segment.bytes");
    assert!(names.contains(&"leader-epoch-checkpoint".to_string()));
    assert!(names.contains(&"recovery-point-offset-checkpoint".to_string()));
    let epochs = std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(epochs, "0\n1\n4 0\n");
    for seg in names.iter().filter(|n| n.ends_with(".log")) {
        let base: i64 = seg.trim_end_matches(".log").parse().unwrap();
        let len = std::fs::metadata(dir.path().join(seg)).unwrap().len();
        assert!(len <= 4096, "segment {base} is {len} bytes");
    }
}

#[test]
fn read_returns_whole_batches_and_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let b = batch(1, 10, 5);
    for _ in 0..5 {
        log.append_as_leader(&b, 0, 0).unwrap();
    }
    // Offset inside the second batch: the whole second batch comes back.
    let r = log.read(13, 1, None).unwrap();
    let got = batches(&r.records);
    assert_eq!(got.len(), 1, "one batch even though it exceeds max_bytes");
    assert_eq!((got[0].0, got[0].1), (10, 19));
    assert_eq!(r.next_offset, 20);
    // Exactly two batches fit.
    let r = log.read(0, 2 * b.len(), None).unwrap();
    assert_eq!(batches(&r.records).len(), 2);
    // The high watermark limits what a consumer sees.
    let r = log.read(0, 1 << 20, Some(30)).unwrap();
    assert_eq!(batches(&r.records).len(), 3);
    assert!(log.read(30, 1 << 20, Some(30)).unwrap().records.is_empty());
    // Out of range.
    assert!(matches!(log.read(51, 100, None), Err(LogError::OffsetOutOfRange { .. })));
    assert!(matches!(log.read(51, 100, None).unwrap_err(), LogError::OffsetOutOfRange { .. }));
    assert!(log.read(50, 100, None).unwrap().records.is_empty());
}

#[test]
fn timestamp_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for t in 0..100i64 {
        log.append_as_leader(&batch(t as u64, 1, 1000 + t * 10), 0, 0).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1500).unwrap(), Some((50, 1500)));
    assert_eq!(log.offset_for_timestamp(1505).unwrap(), Some((51, 1510)));
    assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((99, 1990)));
    // The same after a clean restart (indexes loaded from disk).
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.offset_for_timestamp(1505).unwrap(), Some((51, 1510)));
    assert_eq!(log.max_timestamp().map(|m| m.1), Some(1990));
}

/// One batch of `n` records whose timestamps are `t0, t0 + 10, …`, compressed as asked.
fn spread_batch(n: i64, t0: i64, compression: strom_protocol::kafka_protocol::records::Compression) -> Vec<u8> {
    use strom_protocol::kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: t0 + i * 10,
            key: None,
            value: Some(bytes::Bytes::from(vec![b'v'; 100])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
    buf.to_vec()
}

#[test]
fn timestamp_lookups_find_the_record_inside_a_batch_also_when_compressed() {
    use strom_protocol::kafka_protocol::records::Compression;
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small_config());
        // Offsets 0..10 at 1000, 1010, …, 1090; then 10..20 at 2000, 2010, …
        log.append_as_leader(&spread_batch(10, 1000, compression), 0, 0).unwrap();
        log.append_as_leader(&spread_batch(10, 2000, compression), 0, 0).unwrap();
        assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some((0, 1000)), "{compression:?}");
        assert_eq!(log.offset_for_timestamp(1035).unwrap(), Some((4, 1040)), "{compression:?}");
        assert_eq!(log.offset_for_timestamp(1090).unwrap(), Some((9, 1090)), "{compression:?}");
        assert_eq!(log.offset_for_timestamp(1091).unwrap(), Some((10, 2000)), "{compression:?}");
        assert_eq!(log.offset_for_timestamp(2055).unwrap(), Some((16, 2060)), "{compression:?}");
        assert_eq!(log.offset_for_timestamp(2091).unwrap(), None, "{compression:?}");
        // Records before the log start are not answers, even inside a batch that straddles it.
        log.delete_records_before(13).unwrap();
        assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some((13, 2030)), "{compression:?}");
    }
}

#[test]
fn retention_by_time_and_size_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { retention_ms: Some(1000), ..small_config() };
    let mut log = open(dir.path(), cfg.clone());
    for t in 0..60i64 {
        // Old records first, then recent ones.
        let ts = if t < 40 { 1_000 } else { 100_000 };
        log.append_as_leader(&batch(t as u64, 2, ts), 0, 0).unwrap();
    }
    let segs = log.segment_count();
    let deleted = log.apply_retention(100_500).unwrap();
    assert!(deleted > 0 && log.segment_count() == segs - deleted);
    // Nothing recent was deleted, and the log start moved to a segment boundary.
    assert!(log.log_start_offset() <= 80, "start {}", log.log_start_offset());
    assert!(log.log_start_offset() > 0);
    assert_eq!(log.read(log.log_start_offset(), 1 << 20, None).map(|r| !r.records.is_empty()).ok(), Some(true));
    // Everything expired: the active segment is rolled and deleted too.
    log.apply_retention(10_000_000).unwrap();
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert_eq!(log.log_end_offset(), 120, "offsets keep counting after retention");

    // Size: keeps at least retention.bytes.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { retention_bytes: Some(10_000), ..small_config() });
    for t in 0..200 {
        log.append_as_leader(&batch(t, 2, 0), 0, 0).unwrap();
    }
    let before = log.size_bytes();
    log.apply_retention(0).unwrap();
    assert!(log.size_bytes() >= 10_000 && log.size_bytes() < before, "{} of {before}", log.size_bytes());
    assert!(log.size_bytes() < 10_000 + 4096 + 4096);
}

#[test]
fn delete_records_moves_the_start_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for t in 0..50 {
        log.append_as_leader(&batch(t, 2, 0), 0, 0).unwrap();
    }
    assert_eq!(log.delete_records_before(33).unwrap(), 33);
    assert!(matches!(log.read(10, 100, None), Err(LogError::OffsetOutOfRange { .. })));
    let r = log.read(33, 100, None).unwrap();
    assert_eq!(batches(&r.records)[0].0, 32, "the batch containing the start offset");
    assert!(log.delete_records_before(101).is_err());
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), 33);
}

#[test]
fn flush_interval_one_moves_the_recovery_point_on_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { flush_interval_messages: 1, ..small_config() });
    for t in 0..5 {
        let info = log.append_as_leader(&batch(t, 2, 0), 0, 0).unwrap();
        assert_eq!(log.recovery_point(), info.last_offset + 1);
    }
    let lazy_dir = tempfile::tempdir().unwrap();
    let mut lazy = open(lazy_dir.path(), small_config());
    lazy.append_as_leader(&batch(1, 2, 0), 0, 0).unwrap();
    assert_eq!(lazy.recovery_point(), 0, "default: no fsync per append");
    lazy.flush().unwrap();
    assert_eq!(lazy.recovery_point(), 2);
}

#[test]
fn rolled_segments_become_durable_outside_the_append_path_and_only_then_count_as_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let mut t = 0;
    while log.segment_count() < 3 {
        log.append_as_leader(&batch(t, 3, 0), 0, 0).unwrap();
        t += 1;
    }
    // Rolling synced nothing: the recovery point has not moved past the rolled segments.
    assert_eq!(log.recovery_point(), 0);
    let work = log.sealed_to_sync().expect("two rolled segments to sync");
    assert_eq!(work.paths.len(), 2 * 3, "each rolled segment's .log, .index and .timeindex");
    for p in &work.paths {
        strom_storage::sync_file(p).unwrap();
    }
    // An append in between (the lock is not held during the syncs) changes nothing.
    log.append_as_leader(&batch(t, 3, 0), 0, 0).unwrap();
    log.sealed_synced(work).unwrap();
    let active_base = active_segment_base(&log);
    assert_eq!(log.recovery_point(), active_base, "durable up to the active segment");
    assert!(log.sealed_to_sync().is_none());

    // A sync that a truncation overtook does not move the recovery point.
    while log.segment_count() < 5 {
        log.append_as_leader(&batch(t, 3, 0), 0, 0).unwrap();
        t += 1;
    }
    let work = log.sealed_to_sync().expect("newly rolled segments");
    log.truncate_to(active_base + 1).unwrap();
    let before = log.recovery_point();
    log.sealed_synced(work).unwrap();
    assert_eq!(log.recovery_point(), before);
    assert!(log.recovery_point() <= log.log_end_offset());
    // And the flush path syncs whatever is left before moving the recovery point to the end.
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), log.log_end_offset());
    assert!(log.sealed_to_sync().is_none());
}

/// The base offset of the active (last) segment, from the segment files' names.
fn active_segment_base(log: &Log) -> i64 {
    std::fs::read_dir(log.dir())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(".log").and_then(|s| s.parse().ok()))
        .max()
        .unwrap()
}

#[test]
fn segment_ms_rolls_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { segment_ms: Some(1000), ..LogConfig::default() });
    log.append_as_leader(&batch(1, 1, 10_000), 0, 10_000).unwrap();
    log.append_as_leader(&batch(2, 1, 10_500), 0, 10_500).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append_as_leader(&batch(3, 1, 11_001), 0, 11_001).unwrap();
    assert_eq!(log.segment_count(), 2);
    // Records with old timestamps (a replay) roll by their own times, as Kafka: not one
    // segment per batch because the clock is far ahead of them.
    for t in 0..5 {
        log.append_as_leader(&batch(4 + t, 1, 20_000 + t as i64), 0, 10_000_000).unwrap();
    }
    assert_eq!(log.segment_count(), 3, "one roll for the jump to 20 000, none after");
}

#[test]
fn leader_epochs_and_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    log.append_as_leader(&batch(1, 5, 0), 1, 0).unwrap(); // 0..4 epoch 1
    log.append_as_leader(&batch(2, 5, 0), 3, 0).unwrap(); // 5..9 epoch 3
    log.append_as_leader(&batch(3, 5, 0), 3, 0).unwrap(); // 10..14 epoch 3
    log.append_as_leader(&batch(4, 5, 0), 6, 0).unwrap(); // 15..19 epoch 6
    assert_eq!(log.epochs(), &[(1, 0), (3, 5), (6, 15)]);
    assert_eq!(log.end_offset_for_epoch(6), Some((6, 20)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 15)));
    assert_eq!(log.end_offset_for_epoch(4), Some((3, 15)), "largest epoch ≤ 4 is 3");
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 0)));
    assert_eq!(log.end_offset_for_epoch(7), None);
    // Follower truncation to the divergence point drops later epochs.
    log.truncate_to(15).unwrap();
    assert_eq!(log.epochs(), &[(1, 0), (3, 5)]);
    assert_eq!(log.log_end_offset(), 15);
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.epochs(), &[(1, 0), (3, 5)]);
}

#[test]
fn follower_append_must_continue_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = open(dir.path(), small_config());
    leader.append_as_leader(&batch(1, 3, 0), 2, 0).unwrap();
    leader.append_as_leader(&batch(2, 3, 0), 2, 0).unwrap();
    let all = leader.read(0, 1 << 20, None).unwrap().records;

    let fdir = tempfile::tempdir().unwrap();
    let mut follower = open(fdir.path(), small_config());
    follower.append_as_follower(&all, 0).unwrap();
    assert_eq!(follower.read(0, 1 << 20, None).unwrap().records, all, "replicas agree byte for byte");
    assert_eq!(follower.epochs(), &[(2, 0)]);
    let e = follower.append_as_follower(&all, 0).unwrap_err();
    assert!(matches!(e, LogError::NotContiguous { expected: 6, got: 0 }));
}

#[test]
fn oversized_and_invalid_batches_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { max_batch_bytes: 200, ..small_config() });
    let big = batch(1, 20, 0);
    assert!(matches!(log.append_as_leader(&big, 0, 0).unwrap_err(), LogError::TooLarge { .. }));
    // A good batch followed by a corrupt one: nothing is written.
    let mut two = batch(1, 1, 0);
    let mut bad = batch(2, 1, 0);
    let n = bad.len();
    bad[n - 1] ^= 1;
    two.extend_from_slice(&bad);
    assert!(matches!(log.append_as_leader(&two, 0, 0).unwrap_err(), LogError::Batch(_)));
    assert_eq!(log.log_end_offset(), 0);
    assert!(matches!(log.append_as_leader(&[], 0, 0).unwrap_err(), LogError::Empty));
}

#[test]
fn deleting_the_partition_removes_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("orders-0");
    let mut log = open(&p, small_config());
    log.append_as_leader(&batch(1, 1, 0), 0, 0).unwrap();
    log.delete().unwrap();
    assert!(!p.exists());
}

/// Descriptors this process holds open on files under `dir`.
fn open_files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir.canonicalize().unwrap()))
        .count()
}

#[test]
fn open_file_handles_stay_bounded_however_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for t in 0..400u64 {
        log.append_as_leader(&batch(t, 3, t as i64), 0, 0).unwrap();
    }
    assert!(log.segment_count() > 15, "only {} segments", log.segment_count());
    assert_eq!(open_files_under(dir.path()), 1, "only the active segment's log file is held open");
    // Reads and lookups over every segment open and close sealed ones as they go.
    let mut offset = 0;
    while offset < log.log_end_offset() {
        offset = log.read(offset, 1 << 20, None).unwrap().next_offset;
    }
    assert!(log.offset_for_timestamp(0).unwrap().is_some());
    assert_eq!(open_files_under(dir.path()), 1);
    // The same after a restart, and after truncating back into an older (sealed) segment:
    // the new active segment is the one held open, and appends continue.
    log.close().unwrap();
    let mut log = open(dir.path(), small_config());
    assert_eq!(open_files_under(dir.path()), 1);
    log.truncate_to(99).unwrap();
    assert_eq!(open_files_under(dir.path()), 1);
    log.append_as_leader(&batch(0, 3, 0), 0, 0).unwrap();
    assert_eq!(log.log_end_offset(), 102);
    assert_eq!(open_files_under(dir.path()), 1);
}

#[test]
fn a_log_append_time_log_stamps_the_append_time_and_keeps_a_valid_crc() {
    use strom_protocol::batch::{BatchView, LOG_APPEND_TIME_FLAG};
    use strom_storage::TimestampType;
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { timestamp_type: TimestampType::LogAppendTime, ..small_config() });
    let info = log.append_as_leader(&batch(1, 3, 1_000), 4, 1_700_000_000_000).unwrap();
    assert_eq!((info.max_timestamp, info.log_append_time_ms), (1_700_000_000_000, 1_700_000_000_000));
    let stored = read_all(&log);
    let v = BatchView::parse_validated(&stored).expect("the stored batch passes its CRC");
    assert_eq!(v.max_timestamp(), 1_700_000_000_000);
    assert_ne!(v.attributes() & LOG_APPEND_TIME_FLAG, 0);
    // The time index follows the broker's timestamp, not the producer's.
    assert_eq!(log.offset_for_timestamp(1_699_999_999_000).unwrap().map(|(o, _)| o), Some(0));
    // CreateTime (the default) stores the producer's bytes and answers -1.
    let plain_dir = tempfile::tempdir().unwrap();
    let mut plain = open(plain_dir.path(), small_config());
    assert_eq!(plain.append_as_leader(&batch(1, 3, 1_000), 4, 5_000).unwrap().log_append_time_ms, -1);
}

#[test]
fn create_time_bounds_refuse_the_whole_append() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        LogConfig { timestamp_before_max_ms: Some(60_000), timestamp_after_max_ms: Some(60_000), ..small_config() };
    let mut log = open(dir.path(), cfg);
    let now = 10_000_000;
    let mut two = batch(1, 2, now);
    two.extend_from_slice(&batch(2, 2, now - 120_000));
    assert!(matches!(log.append_as_leader(&two, 0, now), Err(LogError::InvalidTimestamp { .. })));
    assert_eq!(log.log_end_offset(), 0, "nothing of a refused append is written");
    assert!(matches!(
        log.append_as_leader(&batch(3, 1, now + 120_000), 0, now),
        Err(LogError::InvalidTimestamp { .. })
    ));
    assert!(log.append_as_leader(&batch(4, 2, now - 59_000), 0, now).is_ok());
}

#[test]
fn a_topic_codec_re_encodes_batches_sent_in_another_and_keeps_every_record() {
    use bytes::Bytes;
    use strom_protocol::batch::BatchView;
    use strom_protocol::kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use strom_storage::CompressionType;
    // An idempotent producer's gzip batch of three keyed records with a header.
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 77,
            producer_epoch: 2,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: 10 + i as i32,
            timestamp: 1_000 + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value {i} ").repeat(20))),
            headers: [("h".into(), Some(Bytes::from_static(b"1")))].into_iter().collect(),
        })
        .collect();
    let mut sent = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut sent,
        records.iter(),
        &RecordEncodeOptions { version: 2, compression: Compression::Gzip },
    )
    .unwrap();
    for (target, codec) in [(CompressionType::Zstd, 4), (CompressionType::Uncompressed, 0), (CompressionType::Gzip, 1)]
    {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), LogConfig { compression: target, ..small_config() });
        let info = log.append_as_leader(&sent, 3, 5_000).unwrap();
        assert_eq!(info.recompressed_batches, u64::from(codec != 1), "{target:?}");
        assert_eq!((info.first_offset, info.last_offset), (0, 2));
        let stored = read_all(&log);
        let v = BatchView::parse_validated(&stored).unwrap();
        assert_eq!(v.compression(), codec, "{target:?}");
        assert_eq!((v.producer_id(), v.producer_epoch(), v.base_sequence()), (77, 2, 10));
        let got = RecordBatchDecoder::decode_all(&mut Bytes::from(stored)).unwrap().remove(0).records;
        for (g, r) in got.iter().zip(&records) {
            assert_eq!((&g.key, &g.value, g.timestamp, &g.headers), (&r.key, &r.value, r.timestamp, &r.headers));
        }
        assert_eq!(got.len(), 3);
    }
    // `producer` (the default) stores the gzip batch as sent.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    assert_eq!(log.append_as_leader(&sent, 3, 5_000).unwrap().recompressed_batches, 0);
    assert_eq!(&read_all(&log)[16..], &sent[16..]);
}

#[test]
fn an_append_may_block_when_it_would_flush_roll_or_record_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    assert!(log.append_may_block(100, 0, Some(0)), "the first append in epoch 0 checkpoints it");
    log.append_as_leader(&batch(1, 2, 0), 0, 0).unwrap();
    assert!(!log.append_may_block(100, 0, Some(0)), "a page-cache append");
    assert!(log.append_may_block(100, 0, Some(1)), "a new leader epoch");
    assert!(log.append_may_block(5000, 0, Some(0)), "past segment.bytes: a roll");
    let eager_dir = tempfile::tempdir().unwrap();
    let eager = open(eager_dir.path(), LogConfig { flush_interval_messages: 1, ..small_config() });
    assert!(eager.append_may_block(100, 0, None), "flush.messages=1: every append fsyncs");
}

#[test]
fn a_read_knows_whether_its_pages_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { segment_bytes: 1 << 20, ..small_config() });
    for t in 0..20 {
        log.append_as_leader(&batch(t, 10, 0), 0, 0).unwrap();
    }
    assert!(log.is_cached(0, 1 << 20), "just written: in the page cache");
    assert!(log.is_cached(log.log_end_offset(), 1 << 20), "nothing to read");
    // Written back and dropped from the cache: a read would wait on the disk.
    log.flush().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let f = std::fs::File::open(&path).unwrap();
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
    }
    assert!(!log.is_cached(0, 1 << 20), "evicted pages reported cached");
}

#[test]
fn a_sealed_segment_is_read_without_the_log_and_a_truncated_one_asks_for_the_lock() {
    use strom_storage::ReadPlan;
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { retention_bytes: Some(1), ..small_config() });
    for t in 0..60 {
        log.append_as_leader(&batch(t, 3, 0), 0, 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    let expected = log.read(0, 1500, None).unwrap();
    // The plan owns its file: the log can change (appends, the segment deleted by retention)
    // before it runs, and it still reads the batches the log held when it was made.
    let ReadPlan::Sealed(plan) = log.plan_read(0, 1500, None).unwrap() else {
        panic!("offset 0 is in a sealed segment")
    };
    log.append_as_leader(&batch(99, 3, 0), 0, 0).unwrap();
    assert!(log.apply_retention(0).unwrap() > 0);
    assert!(!dir.path().join("00000000000000000000.log").exists());
    let got = plan.run().unwrap();
    assert_eq!((got.records, got.next_offset), (expected.records, expected.next_offset));

    // The active segment is read at once; so is a read past the log end's limit.
    let end = log.log_end_offset();
    assert!(matches!(log.plan_read(end - 1, 1 << 20, None).unwrap(), ReadPlan::Done(r) if !r.records.is_empty()));
    assert!(matches!(log.plan_read(end, 1 << 20, None).unwrap(), ReadPlan::Done(r) if r.records.is_empty()));

    // A truncation into a sealed segment after the plan: the plan fails instead of inventing
    // batches, and the read under the lock sees the truncated log.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for t in 0..60 {
        log.append_as_leader(&batch(t, 3, 0), 0, 0).unwrap();
    }
    let ReadPlan::Sealed(plan) = log.plan_read(3, 1 << 20, None).unwrap() else { panic!("offset 3 is sealed") };
    let ReadPlan::Sealed(later) = log.plan_read(30, 1 << 20, None).unwrap() else { panic!("offset 30 is sealed") };
    assert_eq!(later.truncations(), log.truncations());
    log.truncate_to(3).unwrap();
    assert!(plan.run().is_err());
    // A plan of a segment the truncation deleted still reads the deleted file: its count
    // tells the caller to read again under the lock.
    assert!(later.truncations() != log.truncations());
    assert!(log.read(3, 1 << 20, None).unwrap().records.is_empty());
}
