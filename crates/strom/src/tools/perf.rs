//! `strom perf produce` / `strom perf consume`: load generators with Kafka's perf-test
//! reports (records/s, MB/s, latency percentiles).
//!
//! The producer fills batches of `--batch-size` bytes with `--record-size`-byte records and
//! keeps `--in-flight` requests outstanding per partition leader (one connection each); a
//! record's latency is its request's round trip. The consumer fetches every partition from
//! the earliest offset and counts records from batch headers (no decompression).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use strom_client::Connection;
use strom_protocol::batch::BatchView;
use strom_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use strom_protocol::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use strom_protocol::kafka_protocol::messages::*;

use super::cluster::{error_name, Cluster};
use super::records;
use strom_protocol::values::topic_name;

#[derive(clap::Subcommand, Debug)]
pub enum PerfCommand {
    /// Produce records as fast as the cluster takes them and report throughput and latency.
    Produce(ProduceArgs),
    /// Consume a topic from the beginning and report throughput.
    Consume(ConsumeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 500_000)]
    num_records: u64,
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// 0 is sent as 1 (the tool needs a response to measure latency), 1, or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// Bytes of records per produce request (per partition).
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: usize,
    /// Requests outstanding per partition leader.
    #[arg(long, default_value_t = 5)]
    in_flight: usize,
    /// Records per second to aim at (as kafka-producer-perf-test's --throughput); -1: as
    /// fast as the cluster takes them.
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    throughput: f64,
    #[arg(long, default_value = "none")]
    compression: String,
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    #[arg(long)]
    topic: String,
    /// Stop after this many records.
    #[arg(long)]
    messages: u64,
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
}

pub async fn run(cmd: PerfCommand) -> anyhow::Result<()> {
    match cmd {
        PerfCommand::Produce(a) => produce(a).await,
        PerfCommand::Consume(a) => consume(a).await,
    }
}

/// Milliseconds at the given percentiles of `lat` (sorted in place).
fn percentiles(lat: &mut [f64], ps: &[f64]) -> Vec<f64> {
    lat.sort_by(|a, b| a.total_cmp(b));
    ps.iter()
        .map(|p| if lat.is_empty() { 0.0 } else { lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] })
        .collect()
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let acks: i16 = match args.acks.as_str() {
        "all" | "-1" => -1,
        "1" | "0" => 1,
        other => bail!("--acks {other}: expected 0, 1 or all"),
    };
    let compression = records::compression(&args.compression)?;
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let leaders = cluster.leaders(&args.topic).await?;
    let md = cluster.metadata(None).await?;
    let addrs: BTreeMap<i32, String> =
        md.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
    let per_batch = (args.batch_size / args.record_size.max(1)).max(1);
    let value = Bytes::from(vec![b'x'; args.record_size]);
    let recs: Vec<(Option<Bytes>, Bytes)> = vec![(None, value); per_batch];
    let now = strom_protocol::values::now_ms();
    let batch = records::encode_batch(&recs, now, compression)?;
    let batches_total = args.num_records.div_ceil(per_batch as u64);
    let next_batch = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (partition, leader) in &leaders {
        let addr = addrs.get(leader).cloned().with_context(|| format!("no address for broker {leader}"))?;
        for _ in 0..args.in_flight.max(1) {
            let (addr, topic, batch, next) = (addr.clone(), args.topic.clone(), batch.clone(), next_batch.clone());
            let (partition, throughput) = (*partition, args.throughput);
            tasks.spawn(async move {
                let mut conn = Connection::connect(&addr, "strom-perf", Duration::from_secs(30)).await?;
                let mut lat = Vec::new();
                let mut sent = 0u64;
                let throughput = throughput;
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= batches_total {
                        break;
                    }
                    if throughput > 0.0 {
                        // Batch k is due when k batches' records were due at the target rate.
                        let due = start + Duration::from_secs_f64(k as f64 * per_batch as f64 / throughput);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let mut pd = PartitionProduceData::default();
                    pd.index = partition;
                    pd.records = Some(batch.clone());
                    let mut td = TopicProduceData::default();
                    td.name = topic_name(&topic);
                    td.partition_data = vec![pd];
                    let mut req = ProduceRequest::default();
                    req.acks = acks;
                    req.timeout_ms = 30_000;
                    req.topic_data = vec![td];
                    let t0 = Instant::now();
                    let resp = conn.send(9, &req, Duration::from_secs(30)).await?;
                    let code =
                        resp.responses.first().and_then(|t| t.partition_responses.first()).map_or(0, |p| p.error_code);
                    if code != 0 {
                        bail!("produce failed: {}", error_name(code));
                    }
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    sent += 1;
                }
                Ok::<_, anyhow::Error>((lat, sent))
            });
        }
    }
    let mut lat = Vec::new();
    let mut batches = 0u64;
    while let Some(r) = tasks.join_next().await {
        let (l, n) = r??;
        lat.extend(l);
        batches += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let records = batches * per_batch as u64;
    let mb = (records as f64 * args.record_size as f64) / (1024.0 * 1024.0);
    let avg = if lat.is_empty() { 0.0 } else { lat.iter().sum::<f64>() / lat.len() as f64 };
    let p = percentiles(&mut lat, &[0.5, 0.95, 0.99, 0.999, 1.0]);
    println!(
        "{records} records sent, {:.1} records/sec ({:.2} MB/sec), {avg:.2} ms avg latency, {:.2} ms max latency, {:.0} ms 50th, {:.0} ms 95th, {:.0} ms 99th, {:.0} ms 99.9th.",
        records as f64 / secs,
        mb / secs,
        p[4],
        p[0],
        p[1],
        p[2],
        p[3]
    );
    Ok(())
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let leaders = cluster.leaders(&args.topic).await?;
    let mut positions: BTreeMap<i32, i64> = leaders.keys().map(|p| (*p, 0)).collect();
    let start = Instant::now();
    let deadline = start + Duration::from_millis(args.timeout_ms);
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < args.messages {
        if Instant::now() > deadline {
            bail!("timed out after {records} of {} records", args.messages);
        }
        let by_leader: BTreeMap<i32, Vec<i32>> = leaders.iter().fold(BTreeMap::new(), |mut m, (p, l)| {
            m.entry(*l).or_default().push(*p);
            m
        });
        for (leader, parts) in by_leader {
            let mut ft = FetchTopic::default();
            ft.topic = topic_name(&args.topic);
            ft.partitions = parts
                .iter()
                .map(|p| {
                    let mut fp = FetchPartition::default();
                    fp.partition = *p;
                    fp.fetch_offset = positions[p];
                    fp.partition_max_bytes = 8 << 20;
                    fp.current_leader_epoch = -1;
                    fp.log_start_offset = -1;
                    fp
                })
                .collect();
            let mut req = FetchRequest::default();
            req.replica_id = BrokerId(-1);
            req.max_wait_ms = 100;
            req.min_bytes = 1;
            req.max_bytes = 64 << 20;
            req.session_epoch = -1;
            req.topics = vec![ft];
            let resp = cluster.send_to(leader, 12, &req, Duration::from_secs(1)).await?;
            for t in resp.responses {
                for pd in t.partitions {
                    if pd.error_code != 0 {
                        bail!("fetch {}-{}: {}", args.topic, pd.partition_index, error_name(pd.error_code));
                    }
                    let Some(data) = pd.records else { continue };
                    let pos = positions.entry(pd.partition_index).or_insert(0);
                    let mut rest: &[u8] = &data;
                    while let Ok(v) = BatchView::parse(rest) {
                        if v.last_offset() >= *pos {
                            records += v.records_count().max(0) as u64;
                            bytes += v.size() as u64;
                            *pos = v.last_offset() + 1;
                        }
                        rest = &rest[v.size()..];
                    }
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{records} records consumed, {:.1} records/sec ({:.2} MB/sec), {mb:.2} MB in {secs:.2} s.",
        records as f64 / secs,
        mb / secs
    );
    Ok(())
}
