//! Model-based tests of log compaction (`Log::clean`): any sequence of keyed writes,
//! tombstones, rolls and cleanings leaves exactly what the model says, at the offsets the
//! records were written at, and the same after a reopen without a clean shutdown.

use bytes::Bytes;
use proptest::prelude::*;
use strom_protocol::kafka_protocol::records::{Compression, RecordBatchDecoder};
use strom_storage::{CleanOptions, Log, LogConfig};

const DELETE_RETENTION_MS: u64 = 5_000;

/// A producer batch of keyed records (`None`: a tombstone), all stamped `ts`.
fn keyed_batch(records: &[(u8, Option<u8>)], ts: i64, compression: Compression) -> Vec<u8> {
    let records =
        records.iter().map(|(k, v)| (Some(Bytes::from(vec![b'k', *k])), v.map(|v| Bytes::from(vec![b'v', v]))));
    strom_protocol::batch::encode_records(records, ts, compression).unwrap().to_vec()
}

/// (offset, key, value) of every record readable from the log start, following reads
/// across holes until a read returns nothing.
fn contents(log: &Log) -> Vec<(i64, Bytes, Option<Bytes>)> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.log_end_offset() {
        let r = log.read(at, 64 * 1024, None).unwrap();
        if r.records.is_empty() {
            break;
        }
        assert!(r.next_offset > at);
        let mut buf = r.records.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf).unwrap() {
            for rec in set.records {
                out.push((rec.offset, rec.key.unwrap(), rec.value));
            }
        }
        at = r.next_offset;
    }
    out
}

/// The sizes of the log's segment files, in offset order.
fn segment_file_sizes(dir: &std::path::Path) -> Vec<u64> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::metadata(p).unwrap().len()).collect()
}

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<(u8, Option<u8>)>, bool),
    Roll,
    Clean { after_ms: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (proptest::collection::vec((0u8..6, proptest::option::weighted(0.8, any::<u8>())), 1..4), any::<bool>())
            .prop_map(|(r, gz)| Op::Write(r, gz)),
        2 => Just(Op::Roll),
        2 => (0i64..12_000).prop_map(|after_ms| Op::Clean { after_ms }),
    ]
}

#[derive(Debug, Clone)]
struct Rec {
    offset: i64,
    key: u8,
    value: Option<u8>,
    ts: i64,
    sealed: bool,
}

/// The model of a cleaning: in sealed segments only each key's latest record stays, and a
/// tombstone only while younger than the delete retention.
fn model_clean(model: &mut Vec<Rec>, now_ms: i64) {
    let mut latest = std::collections::HashMap::new();
    for r in model.iter().filter(|r| r.sealed) {
        latest.insert(r.key, r.offset);
    }
    model.retain(|r| {
        !r.sealed
            || (latest[&r.key] == r.offset && !(r.value.is_none() && r.ts + (DELETE_RETENTION_MS as i64) < now_ms))
    });
}

fn expected(model: &[Rec]) -> Vec<(i64, Bytes, Option<Bytes>)> {
    model
        .iter()
        .map(|r| (r.offset, Bytes::from(vec![b'k', r.key]), r.value.map(|v| Bytes::from(vec![b'v', v]))))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_compacted_log_holds_exactly_the_latest_record_of_every_key(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        // Segments roll only when the test says so, so the model knows what is sealed.
        let config = LogConfig { segment_bytes: 1 << 30, segment_ms: None, retention_ms: None, ..LogConfig::default() };
        let (mut log, _) = Log::open(dir.path(), config.clone()).unwrap();
        let mut model: Vec<Rec> = Vec::new();
        let mut clock = 0i64;
        let mut next = 0i64;
        for op in ops {
            clock += 1_000;
            match op {
                Op::Write(records, gzip) => {
                    let codec = if gzip { Compression::Gzip } else { Compression::None };
                    let info = log.append_as_leader(&keyed_batch(&records, clock, codec), 0, clock).unwrap();
                    prop_assert_eq!(info.first_offset, next);
                    for (k, v) in records {
                        model.push(Rec { offset: next, key: k, value: v, ts: clock, sealed: false });
                        next += 1;
                    }
                }
                Op::Roll => {
                    log.roll().unwrap();
                    model.iter_mut().for_each(|r| r.sealed = true);
                }
                Op::Clean { after_ms } => {
                    let now_ms = clock + after_ms;
                    log.clean(CleanOptions { delete_retention_ms: DELETE_RETENTION_MS, ..CleanOptions::at(now_ms) }).unwrap();
                    model_clean(&mut model, now_ms);
                    let sizes = segment_file_sizes(dir.path());
                    let middle = &sizes[1..sizes.len().saturating_sub(1).max(1)];
                    prop_assert!(middle.iter().all(|s| *s > 0), "a segment cleaned to nothing is removed: {:?}", sizes);
                }
            }
            prop_assert_eq!(log.log_end_offset(), next, "the log end never moves back");
        }
        let want = expected(&model);
        prop_assert_eq!(&contents(&log), &want);
        // A read of any offset, removed or not, starts at the first record at or after it.
        for at in 0..next {
            let first = log.read(at, 1 << 20, None).unwrap();
            let mut buf = first.records.clone();
            let got = RecordBatchDecoder::decode_all(&mut buf).unwrap()
                .into_iter().flat_map(|s| s.records).map(|r| r.offset).find(|o| *o >= at);
            prop_assert_eq!(got, want.iter().map(|r| r.0).find(|o| *o >= at), "read at {}", at);
        }
        // Reopened without a clean shutdown: the same records at the same offsets.
        drop(log);
        let (log, _) = Log::open(dir.path(), config).unwrap();
        prop_assert_eq!(log.log_end_offset(), next);
        prop_assert_eq!(&contents(&log), &want);
    }
}

#[test]
fn a_cleaning_interrupted_before_its_swap_leaves_the_segment_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 30, segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let (mut log, _) = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..10u8 {
        log.append_as_leader(&keyed_batch(&[(i % 2, Some(i))], 1_000, Compression::None), 0, 1_000).unwrap();
    }
    log.roll().unwrap();
    let before = contents(&log);
    drop(log);
    // What a crash after writing the cleaned file, before the rename, leaves: a partial
    // `.cleaned` beside the intact segment.
    std::fs::write(dir.path().join("00000000000000000000.log.cleaned"), b"partial").unwrap();
    let (mut log, _) = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(contents(&log), before);
    assert!(!dir.path().join("00000000000000000000.log.cleaned").exists(), "the leftover is removed");
    // A completed cleaning keeps offsets 8 and 9 (the latest of keys 0 and 1).
    let stats =
        log.clean(CleanOptions { delete_retention_ms: DELETE_RETENTION_MS, ..CleanOptions::at(2_000) }).unwrap();
    assert_eq!((stats.segments_rewritten, stats.records_removed), (1, 8));
    let offsets: Vec<i64> = contents(&log).iter().map(|r| r.0).collect();
    assert_eq!(offsets, vec![8, 9]);
    // And a follower may continue the sparse log at its end.
    assert_eq!(log.log_end_offset(), 10);
    drop(log);
    let (log, report) = Log::open(dir.path(), config).unwrap();
    assert_eq!(contents(&log).iter().map(|r| r.0).collect::<Vec<_>>(), vec![8, 9]);
    assert_eq!(report.truncated_bytes, 0);
}

#[test]
fn a_follower_copies_a_compacted_leader_and_keeps_the_holes_across_a_crash() {
    let config = LogConfig { segment_bytes: 1 << 30, segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let leader_dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = Log::open(leader_dir.path(), config.clone()).unwrap();
    for i in 0..20u8 {
        leader.append_as_leader(&keyed_batch(&[(i % 3, Some(i))], 1_000, Compression::None), 0, 1_000).unwrap();
    }
    leader.roll().unwrap();
    leader.append_as_leader(&keyed_batch(&[(9, Some(9))], 1_000, Compression::None), 0, 1_000).unwrap();
    leader.clean(CleanOptions { delete_retention_ms: DELETE_RETENTION_MS, ..CleanOptions::at(2_000) }).unwrap();
    // The follower fetches from 0, as a new replica does: batches with holes between them.
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut follower, _) = Log::open(follower_dir.path(), config.clone()).unwrap();
    let mut at = 0;
    while at < leader.log_end_offset() {
        let r = leader.read(at, 1 << 20, None).unwrap();
        if r.records.is_empty() {
            break;
        }
        follower.append_as_follower(&r.records, 1_000).unwrap();
        at = r.next_offset;
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(contents(&follower), contents(&leader));
    drop(follower); // no clean shutdown: the holes are scanned, and kept
    let (follower, report) = Log::open(follower_dir.path(), config).unwrap();
    assert_eq!(report.truncated_bytes, 0, "{report:?}");
    assert_eq!(contents(&follower), contents(&leader));
    assert_eq!(contents(&follower).iter().map(|r| r.0).collect::<Vec<_>>(), vec![17, 18, 19, 20]);
}

#[test]
fn a_cleaning_is_dropped_when_the_log_changed_under_it_and_young_segments_wait() {
    let config = LogConfig { segment_bytes: 1 << 30, segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), config).unwrap();
    for i in 0..6u8 {
        log.append_as_leader(&keyed_batch(&[(0, Some(i))], 1_000, Compression::None), 0, 1_000).unwrap();
    }
    log.roll().unwrap();
    log.append_as_leader(&keyed_batch(&[(1, Some(1))], 1_000, Compression::None), 0, 1_000).unwrap();
    let before = contents(&log);
    // Younger than min.compaction.lag.ms: nothing to plan.
    let young = CleanOptions { min_compaction_lag_ms: 60_000, ..CleanOptions::at(2_000) };
    assert!(log.plan_clean(young).is_none());
    // Planned and prepared off the log, then a truncation: the work is dropped, the log intact.
    let plan = log.plan_clean(CleanOptions::at(2_000)).expect("a sealed segment to clean");
    let prepared = plan.prepare().unwrap();
    log.truncate_to(6).unwrap();
    assert_eq!(log.install_clean(prepared).unwrap().segments_rewritten, 0);
    assert_eq!(contents(&log), before[..6].to_vec());
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".cleaned")));
    // The dirty ratio: everything sealed is dirty until a cleaning covers it.
    let (dirty, all) = log.dirty_bytes();
    assert!(dirty > 0 && dirty == all);
    assert_eq!(log.clean(CleanOptions::at(2_000)).unwrap().records_removed, 5);
    assert_eq!(log.dirty_bytes().0, 0);
}

const CRASH_CHILD_ENV: &str = "STROM_STORAGE_CLEAN_CRASH_CHILD_DIR";
/// Keys each round writes, one record per key, in one batch.
const CRASH_KEYS: u8 = 16;

fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        retention_ms: None,
        compact: true,
        delete: false,
        delete_retention_ms: 0,
        ..LogConfig::default()
    }
}

/// Round `r`'s record for `key`: a value naming the round, or (every few rounds per key) a
/// tombstone. Values are padded so a few rounds fill a segment.
fn crash_record(round: u64, key: u8) -> (Bytes, Option<Bytes>) {
    let k = Bytes::from(vec![b'k', key]);
    if (round + key as u64).is_multiple_of(4) {
        return (k, None);
    }
    (k, Some(Bytes::from(format!("r{round}-k{key}-{}", "x".repeat(60)))))
}

/// The child: reopens the log (recovering from the last kill), then forever appends a round
/// (one batch, printing `acked <round>`), rolls now and then, and cleans.
/// Runs only when spawned by `sigkill_during_cleaning_loses_nothing_and_resurrects_nothing`.
#[test]
fn clean_crash_child() {
    let Ok(dir) = std::env::var(CRASH_CHILD_ENV) else { return };
    let (mut log, _) = Log::open(std::path::Path::new(&dir), crash_config()).unwrap();
    let mut round = log.log_end_offset() as u64 / CRASH_KEYS as u64;
    loop {
        round += 1;
        let records = (0..CRASH_KEYS).map(|k| {
            let (k, v) = crash_record(round, k);
            (Some(k), v)
        });
        let now = strom_protocol::values::now_ms();
        let batch = strom_protocol::batch::encode_records(records, now, Compression::None).unwrap();
        log.append_as_leader(&batch, 0, now).unwrap();
        println!("acked {round}");
        if round.is_multiple_of(3) {
            log.roll().unwrap();
        }
        let stats = log.clean(CleanOptions::for_config(&crash_config(), now + 1, None)).unwrap();
        if stats.segments_rewritten > 0 {
            println!("cleaned {round}");
        }
    }
}

#[test]
fn sigkill_during_cleaning_loses_nothing_and_resurrects_nothing() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = 0u64;
    let mut cleanings = 0u64;
    let mut killed_mid_swap = 0u32;
    for kill in 0..10u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "clean_crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // Kill after a varying number of cleanings, so the kill lands in different phases.
        let kill_after = 20 + (kill * 37) % 60;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut line = String::new();
        let mut seen = 0;
        while seen < kill_after {
            line.clear();
            assert!(Instant::now() < deadline, "child too slow");
            assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
            let mut it = line.split_whitespace();
            match (it.next(), it.next().and_then(|r| r.parse::<u64>().ok())) {
                (Some("acked"), Some(r)) => acked = acked.max(r),
                (Some("cleaned"), Some(_)) => {
                    seen += 1;
                    cleanings += 1;
                }
                _ => {}
            }
        }
        // The kill lands a varying time into the next round (its append, roll or cleaning):
        // deliberate jitter, not a wait for a condition.
        std::thread::sleep(Duration::from_micros((kill * 1_700) % 9_000));
        child.kill().unwrap();
        child.wait().unwrap();
        let mid_swap = std::fs::read_dir(dir.path())
            .unwrap()
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".cleaned")));
        killed_mid_swap += mid_swap as u32;
        // Reopen as recovery does; the round after the last ack may or may not be there
        // (appends are one batch each: all of it or none).
        let (log, _) = Log::open(dir.path(), crash_config()).unwrap();
        let rounds = log.log_end_offset() as u64 / CRASH_KEYS as u64;
        assert_eq!(log.log_end_offset() as u64 % CRASH_KEYS as u64, 0, "kill {kill}: a round is one batch");
        assert!(rounds >= acked, "kill {kill}: acknowledged round {acked} lost (log holds {rounds})");
        let stored = contents(&log);
        // Offsets unchanged: the record at offset o is what round o/K wrote for key o%K.
        for (offset, key, value) in &stored {
            let (round, k) = (*offset as u64 / CRASH_KEYS as u64 + 1, (*offset as u64 % CRASH_KEYS as u64) as u8);
            assert_eq!((key, value), (&crash_record(round, k).0, &crash_record(round, k).1), "offset {offset}");
        }
        // Per key, the last record stored is the last round's: its value, or (a delete) its
        // tombstone or nothing at all, never an older value brought back.
        for k in 0..CRASH_KEYS {
            let (key, latest) = crash_record(rounds, k);
            let last = stored.iter().rev().find(|(_, sk, _)| *sk == key).map(|(_, _, v)| v.clone());
            match latest {
                Some(v) => assert_eq!(last, Some(Some(v)), "kill {kill}: key {k} lost its latest value"),
                None => assert!(matches!(last, None | Some(None)), "kill {kill}: deleted key {k} came back"),
            }
        }
        log.close().unwrap();
        acked = rounds;
    }
    assert!(cleanings >= 200, "only {cleanings} cleanings ran");
    eprintln!("{killed_mid_swap} of 10 kills left a cleaned file not yet swapped in");
}

#[test]
fn a_segment_cleaned_to_nothing_is_removed_and_its_offsets_read_as_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 30, segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let (mut log, _) = Log::open(dir.path(), config.clone()).unwrap();
    // Segments: [0: k0] [1: k1] [2: k1] [3: k2 (active)]. Cleaning empties segment 1 only; the
    // first segment stays, so the log still starts at 0.
    for (i, k) in [0u8, 1, 1, 2].into_iter().enumerate() {
        if i > 0 {
            log.roll().unwrap();
        }
        log.append_as_leader(&keyed_batch(&[(k, Some(i as u8))], 1_000, Compression::None), 0, 1_000).unwrap();
    }
    assert_eq!(log.segment_count(), 4);
    let stats =
        log.clean(CleanOptions { delete_retention_ms: DELETE_RETENTION_MS, ..CleanOptions::at(2_000) }).unwrap();
    assert_eq!((stats.segments_rewritten, stats.records_removed), (1, 1));
    assert_eq!(log.segment_count(), 3);
    assert!(!dir.path().join("00000000000000000001.log").exists());
    assert!(!dir.path().join("00000000000000000001.index").exists());
    let offsets = |log: &Log| contents(log).iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(offsets(&log), vec![0, 2, 3]);
    assert_eq!(log.log_start_offset(), 0);
    // A read of the removed offset starts at the next record.
    let mut r = log.read(1, 1 << 20, None).unwrap().records;
    let first = RecordBatchDecoder::decode_all(&mut r).unwrap()[0].records[0].offset;
    assert_eq!(first, 2);
    // The same after a reopen without a clean shutdown (the hole is below the sparse mark).
    drop(log);
    let (log, report) = Log::open(dir.path(), config).unwrap();
    assert_eq!(report.truncated_bytes, 0, "{report:?}");
    assert_eq!((offsets(&log), log.segment_count(), log.log_start_offset()), (vec![0, 2, 3], 3, 0));
}

#[test]
fn transaction_markers_survive_cleaning_and_are_no_records_of_any_key() {
    use strom_protocol::batch::TxnMarker;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 30, segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let (mut log, _) = Log::open(dir.path(), config).unwrap();
    let marker = |pid: i64, commit: bool| TxnMarker { commit, coordinator_epoch: 0 }.encode(pid, 0, 1_000).unwrap();
    // A user record whose key is the bytes of an abort marker's key.
    let lookalike = strom_protocol::batch::encode_records(
        [(Some(Bytes::from_static(&[0, 0, 0, 0])), Some(Bytes::from_static(b"u")))],
        1_000,
        Compression::None,
    )
    .unwrap();
    log.append_as_leader(&keyed_batch(&[(0, Some(0))], 1_000, Compression::None), 0, 1_000).unwrap(); // 0
    log.append_as_leader(&marker(7, false), 0, 1_000).unwrap(); // 1
    log.append_as_leader(&marker(8, false), 0, 1_000).unwrap(); // 2
    log.append_as_leader(&lookalike, 0, 1_000).unwrap(); // 3
    log.append_as_leader(&marker(9, true), 0, 1_000).unwrap(); // 4
    log.append_as_leader(&keyed_batch(&[(0, Some(1))], 1_000, Compression::None), 0, 1_000).unwrap(); // 5
    log.roll().unwrap();
    let stats =
        log.clean(CleanOptions { delete_retention_ms: DELETE_RETENTION_MS, ..CleanOptions::at(2_000) }).unwrap();
    assert_eq!(stats.records_removed, 1, "only key 0's older value");
    let offsets: Vec<i64> = contents(&log).iter().map(|r| r.0).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5], "every marker and the look-alike user record kept");
}

/// A transactional batch of producer `pid` (epoch 0) of keyed records, as a client writes it.
fn transactional_batch(pid: i64, records: &[(u8, Option<u8>)], ts: i64) -> Vec<u8> {
    use strom_protocol::kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: ts,
            key: Some(Bytes::from(vec![b'k', *k])),
            value: v.map(|v| Bytes::from(vec![b'v', v])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .unwrap();
    buf.to_vec()
}

#[test]
fn aborted_records_never_supersede_and_open_transactions_are_not_cleaned() {
    use strom_protocol::batch::TxnMarker;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 30, segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let (mut log, _) = Log::open(dir.path(), config).unwrap();
    let abort = |pid: i64| TxnMarker { commit: false, coordinator_epoch: 0 }.encode(pid, 0, 1_000).unwrap();
    log.append_as_leader(&keyed_batch(&[(0, Some(0)), (1, Some(0))], 1_000, Compression::None), 0, 1_000).unwrap(); // 0, 1
                                                                                                                    // Producer 7 writes key 0 in a transaction that aborts: its record is no value of key 0.
    log.append_as_leader(&transactional_batch(7, &[(0, Some(7))], 1_000), 0, 1_000).unwrap(); // 2
    log.append_as_leader(&abort(7), 0, 1_000).unwrap(); // 3
    log.add_aborted_txn(strom_storage::AbortedTxn {
        producer_id: 7,
        first_offset: 2,
        last_offset: 3,
        last_stable_offset: 4,
    })
    .unwrap();
    log.roll().unwrap();
    // Producer 8 writes key 1 in a transaction still open: the segment holding it is past the
    // last stable offset (4) and is not cleaned.
    log.append_as_leader(&transactional_batch(8, &[(1, Some(8))], 1_000), 0, 1_000).unwrap(); // 4
    log.roll().unwrap();
    let opts =
        CleanOptions { delete_retention_ms: DELETE_RETENTION_MS, uncleanable_from: 4, ..CleanOptions::at(2_000) };
    let stats = log.clean(opts).unwrap();
    assert_eq!(stats.records_removed, 1, "the aborted record, nothing else");
    let kept: Vec<(i64, Bytes, Option<Bytes>)> = contents(&log);
    let offsets: Vec<i64> = kept.iter().map(|r| r.0).collect();
    assert_eq!(offsets, vec![0, 1, 3, 4], "key 0's committed value, key 1's, the marker, the open record");
    assert_eq!(kept[0].2.as_deref(), Some(&b"v\x00"[..]), "key 0 keeps its committed value");
}

#[test]
fn markers_go_once_past_the_delete_horizon_with_nothing_of_their_transaction_left() {
    use strom_protocol::batch::TxnMarker;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 30, segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let (mut log, _) = Log::open(dir.path(), config).unwrap();
    let commit = |pid: i64| TxnMarker { commit: true, coordinator_epoch: 0 }.encode(pid, 0, 1_000).unwrap();
    // Producer 7 commits key 0, later superseded; producer 8 commits key 1, still the latest.
    log.append_as_leader(&transactional_batch(7, &[(0, Some(7))], 1_000), 0, 1_000).unwrap(); // 0
    log.append_as_leader(&commit(7), 0, 1_000).unwrap(); // 1
    log.append_as_leader(&transactional_batch(8, &[(1, Some(8))], 1_000), 0, 1_000).unwrap(); // 2
    log.append_as_leader(&commit(8), 0, 1_000).unwrap(); // 3
    log.append_as_leader(&keyed_batch(&[(0, Some(0))], 1_000, Compression::None), 0, 1_000).unwrap(); // 4
    log.roll().unwrap();
    // Within the delete horizon every marker stays.
    let young = CleanOptions { delete_retention_ms: DELETE_RETENTION_MS, ..CleanOptions::at(2_000) };
    log.clean(young).unwrap();
    assert_eq!(contents(&log).iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // Past it, producer 7's marker has nothing of its transaction left and goes; producer
    // 8's stays with its record.
    let old = CleanOptions { delete_retention_ms: DELETE_RETENTION_MS, ..CleanOptions::at(1_000 + 10_000) };
    let stats = log.clean(old).unwrap();
    assert_eq!(stats.records_removed, 1);
    assert_eq!(contents(&log).iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 3, 4]);
}
