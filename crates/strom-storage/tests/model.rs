//! Model-based property test: random sequences of append / read / truncate / roll /
//! delete-records / retention / restart against a simple in-memory model of the log.

mod common;

use common::*;
use proptest::prelude::*;
use strom_storage::{Log, LogError};

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, epoch_bump: bool },
    Read { at: u16, max_bytes: u16 },
    Truncate { at: u16 },
    Roll,
    DeleteRecords { at: u16 },
    RetainBytes { limit: u16 },
    CleanRestart,
    CrashRestart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..8, proptest::bool::weighted(0.1)).prop_map(|(records, epoch_bump)| Op::Append { records, epoch_bump }),
        3 => (any::<u16>(), any::<u16>()).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::Roll),
        1 => any::<u16>().prop_map(|at| Op::DeleteRecords { at }),
        1 => any::<u16>().prop_map(|limit| Op::RetainBytes { limit }),
        1 => Just(Op::CleanRestart),
        1 => Just(Op::CrashRestart),
    ]
}

/// The model: stored batches (base, last, bytes) and the log start offset.
#[derive(Default)]
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>,
    log_start: i64,
    leo: i64,
}

impl Model {
    fn visible(&self) -> Vec<u8> {
        self.batches.iter().filter(|(_, last, _)| *last >= self.log_start).flat_map(|(_, _, b)| b.clone()).collect()
    }
}

fn pick(at: u16, lo: i64, hi: i64) -> i64 {
    lo + (at as i64) % (hi - lo + 1).max(1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small_config();
        let (mut log, _) = Log::open(dir.path(), cfg.clone()).unwrap();
        let mut m = Model::default();
        let mut epoch = 0;
        let mut tag = 0u64;
        for op in ops {
            match op {
                Op::Append { records, epoch_bump } => {
                    if epoch_bump { epoch += 1; }
                    tag += 1;
                    let b = batch(tag, records, 1_000 + tag as i64);
                    let info = log.append_as_leader(&b, epoch, 0).unwrap();
                    prop_assert_eq!(info.first_offset, m.leo);
                    prop_assert_eq!(info.last_offset, m.leo + records as i64 - 1);
                    m.batches.push((m.leo, info.last_offset, as_stored(&b, m.leo, epoch)));
                    m.leo = info.last_offset + 1;
                }
                Op::Read { at, max_bytes } => {
                    let offset = pick(at, m.log_start - 2, m.leo + 2);
                    let max_bytes = max_bytes as usize % 3000;
                    match log.read(offset, max_bytes, None) {
                        Err(LogError::OffsetOutOfRange { .. }) => {
                            prop_assert!(offset < m.log_start || offset > m.leo, "{} in range", offset);
                        }
                        Err(e) => prop_assert!(false, "read failed: {}", e),
                        Ok(r) => {
                            prop_assert!(offset >= m.log_start && offset <= m.leo);
                            let got = batches(&r.records);
                            if offset == m.leo {
                                prop_assert!(got.is_empty());
                            } else {
                                let i = m.batches.iter().position(|(_, last, _)| *last >= offset).unwrap();
                                prop_assert!(!got.is_empty(), "the first batch always comes back");
                                for (k, g) in got.iter().enumerate() {
                                    prop_assert_eq!(g, &m.batches[i + k]);
                                }
                                prop_assert!(got.len() == 1 || r.records.len() <= max_bytes);
                                prop_assert_eq!(r.next_offset, got.last().unwrap().1 + 1);
                            }
                        }
                    }
                }
                Op::Truncate { at } => {
                    let offset = pick(at, m.log_start, m.leo);
                    let new_end = log.truncate_to(offset).unwrap();
                    if offset <= m.log_start {
                        m.batches.clear();
                        m.leo = m.log_start;
                    } else if offset < m.leo {
                        m.batches.retain(|(_, last, _)| *last < offset);
                        // A batch containing `offset` goes entirely.
                        m.leo = m.batches.last().map_or(m.log_start, |(_, last, _)| last + 1);
                        if m.leo <= m.log_start {
                            m.batches.clear();
                            m.leo = m.log_start;
                        }
                    }
                    prop_assert_eq!(new_end, m.leo);
                    prop_assert!(log.epochs().iter().all(|(_, o)| *o < m.leo));
                }
                Op::Roll => log.roll().unwrap(),
                Op::DeleteRecords { at } => {
                    let offset = pick(at, 0, m.leo);
                    let start = log.delete_records_before(offset).unwrap();
                    m.log_start = m.log_start.max(offset);
                    prop_assert_eq!(start, m.log_start);
                }
                Op::RetainBytes { limit } => {
                    let mut c = cfg.clone();
                    c.retention_bytes = Some(limit as u64 % 20_000);
                    log.set_config(c);
                    log.apply_retention(0).unwrap();
                    log.set_config(cfg.clone());
                    prop_assert!(log.log_start_offset() >= m.log_start);
                    m.log_start = log.log_start_offset();
                }
                Op::CleanRestart => {
                    log.close().unwrap();
                    let (l, report) = Log::open(dir.path(), cfg.clone()).unwrap();
                    prop_assert!(report.clean_shutdown);
                    prop_assert_eq!(report.segments_scanned, 0);
                    log = l;
                }
                Op::CrashRestart => {
                    drop(log);
                    let (l, report) = Log::open(dir.path(), cfg.clone()).unwrap();
                    prop_assert_eq!(report.truncated_bytes, 0);
                    log = l;
                }
            }
            prop_assert_eq!(log.log_end_offset(), m.leo);
            prop_assert_eq!(log.log_start_offset(), m.log_start);
            let epochs = log.epochs();
            prop_assert!(epochs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        }
        prop_assert_eq!(read_all(&log), m.visible());
    }
}
