//! `strom console-producer` and `strom console-consumer`: Kafka's console tools.
//!
//! The producer reads lines from stdin (`--property parse.key=true` splits a key off at
//! `key.separator`, a tab by default), partitions keyed records with Kafka's murmur2 (so a key
//! goes where Java and librdkafka producers send it) and unkeyed ones round robin, and sends
//! one batch per partition per round. The consumer reads assigned partitions (all, or
//! `--partition`) from `--offset` or `--from-beginning` and prints values (and keys, partitions,
//! offsets, timestamps with the `print.*` properties). With `--group` it is a member of a
//! consumer group ([`super::group_member`]): it reads the partitions the group assigns it from
//! the committed offsets and commits what it printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use strom_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use strom_protocol::kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use strom_protocol::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use strom_protocol::kafka_protocol::messages::*;
use tokio::io::AsyncBufReadExt;

use super::cluster::{error_name, Cluster};
use super::group_member::GroupMember;
use super::records;
use strom_protocol::values::topic_name;

#[derive(clap::Args, Debug)]
pub struct ProducerArgs {
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    #[arg(long)]
    topic: String,
    /// parse.key=true, key.separator=<sep>. Repeatable.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// acks: 0, 1 or all / -1.
    #[arg(long, default_value = "all")]
    request_required_acks: String,
    /// none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression_codec: String,
}

#[derive(clap::Args, Debug)]
pub struct ConsumerArgs {
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    #[arg(long)]
    topic: String,
    /// Only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// earliest, latest, or an offset (with --partition).
    #[arg(long, default_value = "latest")]
    offset: String,
    /// Same as --offset earliest.
    #[arg(long)]
    from_beginning: bool,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit when no record arrives for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// print.key, print.partition, print.offset, print.timestamp, key.separator. Repeatable.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Consume as a member of this consumer group: partitions shared with the group's other
    /// members, starting at the group's committed offsets, committing what was printed.
    #[arg(long)]
    group: Option<String>,
}

fn props(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    list.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .context(format!("--property {kv}: expected KEY=VALUE"))
        })
        .collect()
}

fn acks(s: &str) -> anyhow::Result<i16> {
    Ok(match s {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => bail!("acks {other}: expected 0, 1 or all"),
    })
}

pub async fn produce(args: ProducerArgs) -> anyhow::Result<()> {
    let props = props(&args.properties)?;
    let parse_key = props.get("parse.key").is_some_and(|v| v == "true");
    let sep = props.get("key.separator").cloned().unwrap_or_else(|| "\t".to_string());
    let acks = acks(&args.request_required_acks)?;
    let compression = records::compression(&args.compression_codec)?;
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let mut leaders = cluster.leaders(&args.topic).await?;
    let partitions = leaders.len() as i32;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut round_robin = 0i32;
    let mut eof = false;
    while !eof {
        // A round: every line available now (up to 1000), waiting a few ms for more.
        let mut by_partition: BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>> = BTreeMap::new();
        let mut n = 0;
        while n < 1000 {
            let wait = if n == 0 { Duration::from_secs(3600) } else { Duration::from_millis(5) };
            match tokio::time::timeout(wait, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    let (key, value) = match (parse_key, line.split_once(sep.as_str())) {
                        (true, Some((k, v))) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                        (true, None) => bail!("no key separator {sep:?} in line {line:?} (parse.key=true)"),
                        (false, _) => (None, Bytes::from(line)),
                    };
                    let p = match &key {
                        Some(k) => records::partition_for_key(k, partitions),
                        None => {
                            round_robin = (round_robin + 1) % partitions.max(1);
                            round_robin
                        }
                    };
                    by_partition.entry(p).or_default().push((key, value));
                    n += 1;
                }
                Ok(Ok(None)) => {
                    eof = true;
                    break;
                }
                Ok(Err(e)) => return Err(e).context("cannot read stdin"),
                Err(_) => break,
            }
        }
        for (p, recs) in by_partition {
            send_with_retries(&mut cluster, &mut leaders, &args.topic, p, &recs, acks, compression).await?;
        }
    }
    Ok(())
}

async fn send_with_retries(
    cluster: &mut Cluster,
    leaders: &mut BTreeMap<i32, i32>,
    topic: &str,
    partition: i32,
    recs: &[(Option<Bytes>, Bytes)],
    acks: i16,
    compression: strom_protocol::kafka_protocol::records::Compression,
) -> anyhow::Result<()> {
    let now = strom_protocol::values::now_ms();
    let batch = records::encode_batch(recs, now, compression)?;
    let mut last = String::new();
    for attempt in 0..10 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            *leaders = cluster.leaders(topic).await?;
        }
        let leader = leaders.get(&partition).copied().unwrap_or(-1);
        if leader < 0 {
            last = "no leader".into();
            continue;
        }
        let mut pd = PartitionProduceData::default();
        pd.index = partition;
        pd.records = Some(batch.clone());
        let mut td = TopicProduceData::default();
        td.name = topic_name(topic);
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.acks = acks;
        req.timeout_ms = 30_000;
        req.topic_data = vec![td];
        if acks == 0 {
            // No response comes back for acks=0: send on a fresh request and go on.
            req.acks = 1;
        }
        match cluster.send_to(leader, 9, &req, Duration::from_secs(30)).await {
            Ok(resp) => {
                let code =
                    resp.responses.first().and_then(|t| t.partition_responses.first()).map_or(0, |p| p.error_code);
                match code {
                    0 => return Ok(()),
                    // Retriable: leadership moved, not enough replicas yet, timed out.
                    5 | 6 | 7 | 19 | 20 => last = error_name(code).to_string(),
                    other => bail!("produce to {topic}-{partition} failed: {}", error_name(other)),
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    bail!("produce to {topic}-{partition} failed after retries: {last}")
}

/// The offset where the console consumer starts in each partition.
async fn start_offsets(
    cluster: &mut Cluster,
    topic: &str,
    leaders: &BTreeMap<i32, i32>,
    which: &str,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    if let Ok(n) = which.parse::<i64>() {
        return Ok(leaders.keys().map(|p| (*p, n)).collect());
    }
    let ts = match which {
        "earliest" => -2,
        "latest" => -1,
        other => bail!("--offset {other}: expected earliest, latest or a number"),
    };
    let mut out = BTreeMap::new();
    for (p, leader) in leaders {
        let mut lp = ListOffsetsPartition::default();
        lp.partition_index = *p;
        lp.timestamp = ts;
        let mut lt = ListOffsetsTopic::default();
        lt.name = topic_name(topic);
        lt.partitions = vec![lp];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![lt];
        let resp = cluster.send_to(*leader, 7, &req, Duration::ZERO).await?;
        let r = resp.topics.first().and_then(|t| t.partitions.first()).context("empty ListOffsets response")?;
        if r.error_code != 0 {
            bail!("list offsets of {topic}-{p}: {}", error_name(r.error_code));
        }
        out.insert(*p, r.offset);
    }
    Ok(out)
}

pub async fn consume(args: ConsumerArgs) -> anyhow::Result<()> {
    let props = props(&args.properties)?;
    let flag = |k: &str| props.get(k).is_some_and(|v| v == "true");
    let sep = props.get("key.separator").cloned().unwrap_or_else(|| "\t".to_string());
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    let all = cluster.leaders(&args.topic).await?;
    let which = if args.from_beginning { "earliest" } else { args.offset.as_str() };
    let mut member = None;
    let (mut leaders, mut positions) = match &args.group {
        Some(group) => {
            if args.partition.is_some() {
                bail!("--partition cannot be used with --group");
            }
            let m = GroupMember::join(&mut cluster, group, &args.topic, all.len() as i32).await?;
            let (l, p) = group_positions(&mut cluster, &m, &all, &args.topic, which).await?;
            member = Some(m);
            (l, p)
        }
        None => {
            let mut leaders = all.clone();
            if let Some(p) = args.partition {
                if !leaders.contains_key(&p) {
                    bail!("partition {p} of {} does not exist", args.topic);
                }
                leaders.retain(|k, _| *k == p);
            }
            let positions = start_offsets(&mut cluster, &args.topic, &leaders, which).await?;
            (leaders, positions)
        }
    };
    let mut printed = 0u64;
    let mut idle_since = std::time::Instant::now();
    let mut last_heartbeat = std::time::Instant::now();
    let stdout = std::io::stdout();
    'outer: loop {
        let mut got_any = false;
        let by_leader: BTreeMap<i32, Vec<i32>> = leaders.iter().fold(BTreeMap::new(), |mut m, (p, l)| {
            m.entry(*l).or_default().push(*p);
            m
        });
        if by_leader.is_empty() {
            // A group member with no partitions: wait for a rebalance.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (leader, parts) in by_leader {
            let mut ft = FetchTopic::default();
            ft.topic = topic_name(&args.topic);
            ft.partitions = parts
                .iter()
                .map(|p| {
                    let mut fp = FetchPartition::default();
                    fp.partition = *p;
                    fp.fetch_offset = positions.get(p).copied().unwrap_or(0);
                    fp.partition_max_bytes = 1 << 20;
                    fp.current_leader_epoch = -1;
                    fp.log_start_offset = -1;
                    fp
                })
                .collect();
            let mut req = FetchRequest::default();
            req.replica_id = BrokerId(-1);
            req.max_wait_ms = 500;
            req.min_bytes = 1;
            req.max_bytes = 50 << 20;
            req.session_epoch = -1;
            req.topics = vec![ft];
            let resp = match cluster.send_to(leader, 12, &req, Duration::from_secs(1)).await {
                Ok(r) => r,
                Err(_) => {
                    refresh_leaders(&mut cluster, &args.topic, &mut leaders).await?;
                    continue;
                }
            };
            for t in resp.responses {
                for pd in t.partitions {
                    match pd.error_code {
                        0 => {}
                        1 => {
                            // Out of range: start again at the earliest offset, as
                            // auto.offset.reset=earliest would.
                            let one: BTreeMap<i32, i32> = [(pd.partition_index, leader)].into();
                            let fresh = start_offsets(&mut cluster, &args.topic, &one, "earliest").await?;
                            positions.extend(fresh);
                            continue;
                        }
                        _ => {
                            refresh_leaders(&mut cluster, &args.topic, &mut leaders).await?;
                            continue;
                        }
                    }
                    let Some(bytes) = pd.records.filter(|r| !r.is_empty()) else { continue };
                    let pos = positions.entry(pd.partition_index).or_insert(0);
                    let mut out = stdout.lock();
                    for r in records::decode(bytes)? {
                        if r.offset < *pos {
                            continue;
                        }
                        *pos = r.offset + 1;
                        got_any = true;
                        let mut line = String::new();
                        if flag("print.timestamp") {
                            line.push_str(&format!("CreateTime:{}{sep}", r.timestamp));
                        }
                        if flag("print.partition") {
                            line.push_str(&format!("Partition:{}{sep}", pd.partition_index));
                        }
                        if flag("print.offset") {
                            line.push_str(&format!("Offset:{}{sep}", r.offset));
                        }
                        if flag("print.key") {
                            let k = r.key.as_ref().map_or("null".into(), |k| String::from_utf8_lossy(k).into_owned());
                            line.push_str(&format!("{k}{sep}"));
                        }
                        let v = r.value.as_ref().map_or("null".into(), |v| String::from_utf8_lossy(v).into_owned());
                        line.push_str(&v);
                        writeln!(out, "{line}")?;
                        printed += 1;
                        if args.max_messages.is_some_and(|m| printed >= m) {
                            out.flush()?;
                            break 'outer;
                        }
                    }
                    out.flush()?;
                }
            }
        }
        if let Some(m) = member.as_mut() {
            if got_any {
                m.commit(&mut cluster, &positions).await?;
            }
            if last_heartbeat.elapsed() >= Duration::from_secs(1) {
                last_heartbeat = std::time::Instant::now();
                if m.heartbeat(&mut cluster).await? {
                    m.commit(&mut cluster, &positions).await.ok();
                    m.rejoin(&mut cluster, all.len() as i32).await?;
                    (leaders, positions) = group_positions(&mut cluster, m, &all, &args.topic, which).await?;
                }
            }
        }
        if got_any {
            idle_since = std::time::Instant::now();
        } else if args.timeout_ms.is_some_and(|t| idle_since.elapsed() >= Duration::from_millis(t)) {
            break;
        }
    }
    if let Some(m) = &member {
        m.commit(&mut cluster, &positions).await?;
        m.leave(&mut cluster).await?;
    }
    eprintln!("Processed a total of {printed} messages");
    Ok(())
}

async fn refresh_leaders(cluster: &mut Cluster, topic: &str, leaders: &mut BTreeMap<i32, i32>) -> anyhow::Result<()> {
    let fresh = cluster.leaders(topic).await?;
    for (p, l) in leaders.iter_mut() {
        if let Some(n) = fresh.get(p) {
            *l = *n;
        }
    }
    Ok(())
}

/// A group member's partitions with their leaders, and where to start in each: the committed
/// offset, else `reset` (earliest or latest, as auto.offset.reset).
async fn group_positions(
    cluster: &mut Cluster,
    m: &GroupMember,
    all: &BTreeMap<i32, i32>,
    topic: &str,
    reset: &str,
) -> anyhow::Result<(BTreeMap<i32, i32>, BTreeMap<i32, i64>)> {
    let leaders: BTreeMap<i32, i32> =
        all.iter().filter(|(p, _)| m.assignment.contains(p)).map(|(p, l)| (*p, *l)).collect();
    let committed = m.committed(cluster).await?;
    let missing: BTreeMap<i32, i32> =
        leaders.iter().filter(|(p, _)| committed.get(p).is_none_or(|o| *o < 0)).map(|(p, l)| (*p, *l)).collect();
    let mut positions: BTreeMap<i32, i64> = committed.into_iter().filter(|(_, o)| *o >= 0).collect();
    if !missing.is_empty() {
        positions.extend(start_offsets(cluster, topic, &missing, reset).await?);
    }
    Ok((leaders, positions))
}
