//! Storage benchmarks (`cargo bench -p strom-storage`). Figures go into docs/benchmarks.md.
//!
//! - append: 16 KiB batches of 1 KiB records, no fsync, one batch per append (a produce
//!   request of one batch) and 64 per append (a request or a follower fetch of 1 MiB), beside
//!   `dd bs=1M` and `dd bs=16K` writing the same number of bytes to the same directory,
//!   measured in the same run, and bare `pwrite`s of 16 KiB (the kernel's bound for one write
//!   per batch);
//! - read: sequential read of a 1 GiB log from the page cache, in 1 MiB fetches;
//! - append with fsync on every batch (`flush.messages=1`): MB/s and p50/p99 latency;
//! - clean: compaction of a 128 MiB log of 1 KiB keyed records where every key was written
//!   twice (half the records superseded), in sealed 32 MiB segments, beside a sequential read
//!   of the same log in the same run.

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use strom_protocol::batch::build_batch;
use strom_storage::{Log, LogConfig};

const RECORD: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
const MIB: u64 = 1 << 20;

fn batch_16k() -> Vec<u8> {
    let value = vec![b'x'; RECORD];
    let values: Vec<&[u8]> = (0..RECORDS_PER_BATCH).map(|_| value.as_slice()).collect();
    build_batch(0, 1_700_000_000_000, &values)
}

fn bench_dir() -> tempfile::TempDir {
    // Under target/ so it is on the same disk as the build, not tmpfs.
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn append(c: &mut Criterion) {
    let batch = batch_16k();
    let total: u64 = 64 * MIB;
    let batches = total / batch.len() as u64 / 64 * 64; // whole requests of 64 for the batched variant
    let mut g = c.benchmark_group("append_no_fsync");
    g.sample_size(10).throughput(Throughput::Bytes(batches * batch.len() as u64));
    g.bench_function("strom_log_16KiB_batches", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let dir = bench_dir();
                let (mut log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
                let t = Instant::now();
                for _ in 0..batches {
                    log.append_as_leader(&batch, 0, 0).unwrap();
                }
                elapsed += t.elapsed();
            }
            elapsed
        })
    });
    let per_request: Vec<u8> = (0..64).flat_map(|_| batch.iter().copied()).collect();
    g.bench_function("strom_log_16KiB_batches_64_per_append", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let dir = bench_dir();
                let (mut log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
                let t = Instant::now();
                for _ in 0..batches / 64 {
                    log.append_as_leader(&per_request, 0, 0).unwrap();
                }
                elapsed += t.elapsed();
            }
            elapsed
        })
    });
    for (name, bs, unit) in [("dd_bs_1M_same_dir", "1M", MIB), ("dd_bs_16K_same_dir", "16K", 16 * 1024)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let dir = bench_dir();
                    let out = dir.path().join("dd.out");
                    let count = (batches * batch.len() as u64).div_ceil(unit);
                    let t = Instant::now();
                    let status = Command::new("dd")
                        .args([
                            "if=/dev/zero",
                            &format!("of={}", out.display()),
                            &format!("bs={bs}"),
                            &format!("count={count}"),
                        ])
                        .stderr(std::process::Stdio::null())
                        .status()
                        .unwrap();
                    elapsed += t.elapsed();
                    assert!(status.success());
                }
                elapsed
            })
        });
    }
    // The kernel's own bound for one write per batch: bare `pwrite`s of the same 16 KiB
    // buffer to a fresh file (no validation, no indexes, no log): what the one-batch append
    // could reach at best without holding acknowledged bytes in memory.
    g.bench_function("bare_pwrite_16KiB_same_dir", |b| {
        use std::os::unix::fs::FileExt;
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let dir = bench_dir();
                let f = std::fs::File::create(dir.path().join("bare.out")).unwrap();
                let t = Instant::now();
                for i in 0..batches {
                    f.write_all_at(&batch, i * batch.len() as u64).unwrap();
                }
                elapsed += t.elapsed();
            }
            elapsed
        })
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let batch = batch_16k();
    let dir = bench_dir();
    let (mut log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
    while log.size_bytes() < 1024 * MIB {
        log.append_as_leader(&batch, 0, 0).unwrap();
    }
    let size = log.size_bytes();
    let mut g = c.benchmark_group("read_page_cache");
    g.sample_size(10).throughput(Throughput::Bytes(size));
    g.bench_function("sequential_1GiB_in_1MiB_fetches", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut bytes = 0usize;
            while at < log.log_end_offset() {
                let r = log.read(at, MIB as usize, None).unwrap();
                bytes += r.records.len();
                at = r.next_offset;
            }
            assert_eq!(bytes as u64, size);
        })
    });
    g.finish();
}

/// Not a criterion group: criterion reports means, and this needs percentiles.
fn fsync_latency() {
    let batch = batch_16k();
    let dir = bench_dir();
    let cfg = LogConfig { flush_interval_messages: 1, ..LogConfig::default() };
    let (mut log, _) = Log::open(dir.path(), cfg).unwrap();
    let n = 2000;
    let mut lat: Vec<Duration> = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        log.append_as_leader(&batch, 0, 0).unwrap();
        lat.push(s.elapsed());
    }
    let total = t.elapsed();
    lat.sort();
    let mb = (n * batch.len()) as f64 / 1e6;
    println!(
        "append_fsync_every_batch: {n} x {} B: {:.1} MB/s, p50 {:?}, p99 {:?}, max {:?}",
        batch.len(),
        mb / total.as_secs_f64(),
        lat[n / 2],
        lat[n * 99 / 100],
        lat[n - 1]
    );
}

/// A 16 KiB batch of 16 keyed 1 KiB records with keys `first..first + 16` (mod `keys`).
fn keyed_batch_16k(first: u64, keys: u64) -> Vec<u8> {
    let records = (0..RECORDS_PER_BATCH as u64).map(|i| {
        let key = bytes::Bytes::from(format!("key-{:012}", (first + i) % keys));
        (Some(key), Some(bytes::Bytes::from(vec![b'x'; RECORD])))
    });
    let none = strom_protocol::kafka_protocol::records::Compression::None;
    strom_protocol::batch::encode_records(records, 1_700_000_000_000, none).unwrap().to_vec()
}

fn clean(c: &mut Criterion) {
    let total: u64 = 128 * MIB;
    let batches = total / (16 * 1024 + 400);
    let keys = batches * RECORDS_PER_BATCH as u64 / 2;
    let config = LogConfig { segment_bytes: 32 * MIB, segment_ms: None, retention_ms: None, ..LogConfig::default() };
    let fill = |dir: &std::path::Path| {
        let (mut log, _) = Log::open(dir, config.clone()).unwrap();
        for b in 0..batches {
            log.append_as_leader(&keyed_batch_16k(b * RECORDS_PER_BATCH as u64, keys), 0, 0).unwrap();
        }
        log.roll().unwrap();
        log
    };
    let mut g = c.benchmark_group("clean");
    g.sample_size(10).throughput(Throughput::Bytes(total));
    g.bench_function("compact_128MiB_half_superseded", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let dir = bench_dir();
                let mut log = fill(dir.path());
                let t = Instant::now();
                let stats = log.clean(strom_storage::CleanOptions::at(1_700_000_000_000)).unwrap();
                elapsed += t.elapsed();
                assert!(stats.records_removed > 0);
            }
            elapsed
        })
    });
    g.bench_function("sequential_read_same_log", |b| {
        let dir = bench_dir();
        let log = fill(dir.path());
        b.iter(|| {
            let mut at = 0;
            while at < log.log_end_offset() {
                let r = log.read(at, MIB as usize, None).unwrap();
                at = r.next_offset;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, append, read, clean);

fn main() {
    benches();
    fsync_latency();
    Criterion::default().configure_from_args().final_summary();
}
