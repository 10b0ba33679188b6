//! `strom consumer-groups`: the flags and output of Kafka's `kafka-consumer-groups.sh`
//! (`--list`, `--describe` with lag per partition, `--delete`, `--reset-offsets`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use strom_protocol::kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use strom_protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use strom_protocol::kafka_protocol::messages::*;

use super::cluster::{error_name, Cluster};
use strom_protocol::values::{str_bytes, topic_name};

#[derive(clap::Args, Debug)]
pub struct GroupsArgs {
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    /// List all consumer groups.
    #[arg(long)]
    list: bool,
    /// Describe a group: offsets, log end offsets and lag per partition, and members.
    #[arg(long)]
    describe: bool,
    /// Delete a group (it must have no members).
    #[arg(long)]
    delete: bool,
    /// Reset a group's offsets (it must have no members).
    #[arg(long)]
    reset_offsets: bool,
    /// Delete a group's committed offsets of --topic (`T` for every partition, `T:0,1` for
    /// some); refused for a topic the group's live members subscribe to.
    #[arg(long)]
    delete_offsets: bool,
    #[arg(long)]
    group: Option<String>,
    /// With --reset-offsets: the topic (default: every topic the group has offsets for).
    /// With --delete-offsets: `T` or `T:0,1`.
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    to_earliest: bool,
    #[arg(long)]
    to_latest: bool,
    #[arg(long)]
    to_offset: Option<i64>,
    #[arg(long)]
    shift_by: Option<i64>,
    /// YYYY-MM-DDTHH:mm:SS.sss (UTC).
    #[arg(long)]
    to_datetime: Option<String>,
    /// Show the new offsets without changing them (the default).
    #[arg(long)]
    dry_run: bool,
    /// Change the offsets.
    #[arg(long)]
    execute: bool,
}

pub async fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let actions = [args.list, args.describe, args.delete, args.reset_offsets, args.delete_offsets];
    if actions.iter().filter(|a| **a).count() != 1 {
        bail!("exactly one of --list, --describe, --delete, --reset-offsets, --delete-offsets is required");
    }
    let mut cluster = Cluster::connect(&args.bootstrap_server).await?;
    if args.list {
        return list(&mut cluster).await;
    }
    let group = args.group.clone().context("--group is required")?;
    let coordinator = find_coordinator(&mut cluster, &group).await?;
    if args.describe {
        describe(&mut cluster, coordinator, &group).await
    } else if args.delete {
        delete(&mut cluster, coordinator, &group).await
    } else if args.delete_offsets {
        let topic = args.topic.as_deref().context("--delete-offsets needs --topic")?;
        delete_offsets(&mut cluster, coordinator, &group, topic).await
    } else {
        reset(&mut cluster, coordinator, &group, &args).await
    }
}

async fn list(cluster: &mut Cluster) -> anyhow::Result<()> {
    let md = cluster.metadata(Some(vec![])).await?;
    let mut names = Vec::new();
    for b in &md.brokers {
        let resp = cluster.send_to(b.node_id.0, 4, &ListGroupsRequest::default(), Duration::ZERO).await?;
        names.extend(resp.groups.iter().map(|g| g.group_id.0.to_string()));
    }
    names.sort();
    names.dedup();
    for n in names {
        println!("{n}");
    }
    Ok(())
}

async fn find_coordinator(cluster: &mut Cluster, group: &str) -> anyhow::Result<i32> {
    cluster.find_coordinator(group, 0).await
}

/// (topic, partition) → committed offset.
async fn committed(
    cluster: &mut Cluster,
    coordinator: i32,
    group: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(str_bytes(group));
    req.topics = None;
    let resp = cluster.send_to(coordinator, 7, &req, Duration::ZERO).await?;
    if resp.error_code != 0 {
        bail!("offset fetch for {group}: {}", error_name(resp.error_code));
    }
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| ((t.name.0.to_string(), p.partition_index), p.committed_offset)))
        .filter(|(_, o)| *o >= 0)
        .collect())
}

/// `timestamp` offsets (-1 latest, -2 earliest, or a time) of `partitions`.
async fn list_offsets(
    cluster: &mut Cluster,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let leaders = cluster.leaders(topic).await?;
    let mut out = BTreeMap::new();
    for p in partitions {
        let leader = leaders.get(p).copied().unwrap_or(-1);
        let mut lp = ListOffsetsPartition::default();
        lp.partition_index = *p;
        lp.timestamp = timestamp;
        let mut lt = ListOffsetsTopic::default();
        lt.name = topic_name(topic);
        lt.partitions = vec![lp];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![lt];
        let resp = cluster.send_to(leader, 7, &req, Duration::ZERO).await?;
        if let Some(r) = resp.topics.first().and_then(|t| t.partitions.first()) {
            if r.error_code == 0 {
                out.insert(*p, r.offset);
            }
        }
    }
    Ok(out)
}

/// Decodes a consumer protocol assignment: (topic, partitions) pairs.
fn assignment(mut b: &[u8]) -> Vec<(String, Vec<i32>)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    let mut out = Vec::new();
    let parse = |b: &mut &[u8], out: &mut Vec<(String, Vec<i32>)>| -> Option<()> {
        take(b, 2)?;
        let n = i32::from_be_bytes(take(b, 4)?.try_into().ok()?);
        for _ in 0..n.max(0) {
            let len = i16::from_be_bytes(take(b, 2)?.try_into().ok()?);
            let topic = String::from_utf8_lossy(take(b, len.max(0) as usize)?).into_owned();
            let count = i32::from_be_bytes(take(b, 4)?.try_into().ok()?);
            let mut parts = Vec::new();
            for _ in 0..count.max(0) {
                parts.push(i32::from_be_bytes(take(b, 4)?.try_into().ok()?));
            }
            out.push((topic, parts));
        }
        Some(())
    };
    let _ = parse(&mut b, &mut out);
    out
}

async fn describe(cluster: &mut Cluster, coordinator: i32, group: &str) -> anyhow::Result<()> {
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(str_bytes(group))];
    let resp = cluster.send_to(coordinator, 5, &req, Duration::ZERO).await?;
    let g = resp.groups.first().context("empty DescribeGroups response")?;
    if g.error_code != 0 {
        bail!("describe {group}: {}", error_name(g.error_code));
    }
    // (topic, partition) → (member id, host, client id)
    let mut owners: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
    for m in &g.members {
        for (t, ps) in assignment(&m.member_assignment) {
            for p in ps {
                owners.insert(
                    (t.clone(), p),
                    (m.member_id.to_string(), format!("/{}", m.client_host), m.client_id.to_string()),
                );
            }
        }
    }
    let offsets = committed(cluster, coordinator, group).await?;
    let mut rows: BTreeMap<(String, i32), (Option<i64>, Option<i64>)> = BTreeMap::new();
    for (k, o) in &offsets {
        rows.entry(k.clone()).or_default().0 = Some(*o);
    }
    for k in owners.keys() {
        rows.entry(k.clone()).or_default();
    }
    let topics: Vec<String> =
        rows.keys().map(|(t, _)| t.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for t in topics {
        let parts: Vec<i32> = rows.keys().filter(|(tt, _)| *tt == t).map(|(_, p)| *p).collect();
        for (p, end) in list_offsets(cluster, &t, &parts, -1).await? {
            if let Some(r) = rows.get_mut(&(t.clone(), p)) {
                r.1 = Some(end);
            }
        }
    }
    if g.members.is_empty() {
        eprintln!("\nConsumer group '{group}' has no active members.");
    }
    println!();
    println!(
        "{:<16}{:<16}{:<11}{:<16}{:<16}{:<8}{:<40}{:<16}CLIENT-ID",
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST"
    );
    let dash = || "-".to_string();
    for ((t, p), (cur, end)) in rows {
        let lag = match (cur, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => dash(),
        };
        let (member, host, client) = owners.get(&(t.clone(), p)).cloned().unwrap_or_else(|| (dash(), dash(), dash()));
        println!(
            "{:<16}{:<16}{:<11}{:<16}{:<16}{:<8}{:<40}{:<16}{}",
            group,
            t,
            p,
            cur.map_or_else(dash, |c| c.to_string()),
            end.map_or_else(dash, |e| e.to_string()),
            lag,
            member,
            host,
            client
        );
    }
    Ok(())
}

async fn delete(cluster: &mut Cluster, coordinator: i32, group: &str) -> anyhow::Result<()> {
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![GroupId(str_bytes(group))];
    let resp = cluster.send_to(coordinator, 2, &req, Duration::ZERO).await?;
    match resp.results.first().map_or(0, |r| r.error_code) {
        0 => {
            println!("Deletion of requested consumer groups ('{group}') was successful.");
            Ok(())
        }
        code => bail!(
            "Deletion of some consumer groups failed:\n* Group '{group}' could not be deleted due to: {}",
            error_name(code)
        ),
    }
}

async fn delete_offsets(cluster: &mut Cluster, coordinator: i32, group: &str, topic: &str) -> anyhow::Result<()> {
    use strom_protocol::kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let (name, partitions) = match topic.split_once(':') {
        Some((t, ps)) => {
            let ps = ps
                .split(',')
                .map(|p| p.trim().parse::<i32>().with_context(|| format!("--topic {topic}: bad partition {p:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            (t.to_string(), ps)
        }
        None => (topic.to_string(), cluster.leaders(topic).await?.keys().copied().collect()),
    };
    let mut t = OffsetDeleteRequestTopic::default();
    t.name = topic_name(&name);
    t.partitions = partitions
        .iter()
        .map(|p| {
            let mut r = OffsetDeleteRequestPartition::default();
            r.partition_index = *p;
            r
        })
        .collect();
    let mut req = OffsetDeleteRequest::default();
    req.group_id = GroupId(str_bytes(group));
    req.topics = vec![t];
    let resp = cluster.send_to(coordinator, 0, &req, Duration::ZERO).await?;
    if resp.error_code != 0 {
        bail!("Error: deleting offsets of group '{group}' failed: {}", error_name(resp.error_code));
    }
    let results: Vec<(i32, i16)> =
        resp.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.error_code))).collect();
    let failed = results.iter().any(|(_, c)| *c != 0);
    if failed {
        println!("Request failed for deleting offsets with topic {name} group {group}");
    } else {
        println!("Request succeed for deleting offsets with topic {name} group {group}");
    }
    println!();
    println!("{:<30} {:<15} STATUS", "TOPIC", "PARTITION");
    for (p, code) in &results {
        let status = if *code == 0 { "Successful".to_string() } else { format!("Error: {}", error_name(*code)) };
        println!("{name:<30} {p:<15} {status}");
    }
    if failed {
        bail!("some offsets of group '{group}' were not deleted");
    }
    Ok(())
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:mm:SS[.sss]` (UTC).
fn parse_datetime(s: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("--to-datetime {s}: expected YYYY-MM-DDTHH:mm:SS.sss");
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let [y, m, day] = d[..] else { return Err(bad()) };
    let [hh, mm, ss] = t[..] else { return Err(bad()) };
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

async fn reset(cluster: &mut Cluster, coordinator: i32, group: &str, args: &GroupsArgs) -> anyhow::Result<()> {
    let current = committed(cluster, coordinator, group).await?;
    let topics: Vec<String> = match &args.topic {
        Some(t) => vec![t.clone()],
        None => current.keys().map(|(t, _)| t.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
    };
    let mut new: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in &topics {
        let parts: Vec<i32> = cluster.leaders(t).await?.keys().copied().collect();
        let earliest = list_offsets(cluster, t, &parts, -2).await?;
        let latest = list_offsets(cluster, t, &parts, -1).await?;
        let at_time = match &args.to_datetime {
            Some(s) => Some(list_offsets(cluster, t, &parts, parse_datetime(s)?).await?),
            None => None,
        };
        for p in parts {
            let (lo, hi) = (earliest.get(&p).copied().unwrap_or(0), latest.get(&p).copied().unwrap_or(0));
            let target = if args.to_earliest {
                lo
            } else if args.to_latest {
                hi
            } else if let Some(o) = args.to_offset {
                o
            } else if let Some(d) = args.shift_by {
                current.get(&(t.clone(), p)).copied().unwrap_or(lo) + d
            } else if let Some(m) = &at_time {
                m.get(&p).copied().filter(|o| *o >= 0).unwrap_or(hi)
            } else {
                bail!(
                    "--reset-offsets needs one of --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime"
                );
            };
            new.insert((t.clone(), p), target.clamp(lo, hi));
        }
    }
    println!("\n{:<31}{:<31}{:<11}{:<15}", "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET");
    for ((t, p), o) in &new {
        println!("{group:<31}{t:<31}{p:<11}{o:<15}");
    }
    if !args.execute {
        return Ok(());
    }
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(str_bytes(group));
    req.generation_id_or_member_epoch = -1;
    req.member_id = str_bytes("");
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), o) in &new {
        let mut cp = OffsetCommitRequestPartition::default();
        cp.partition_index = *p;
        cp.committed_offset = *o;
        cp.committed_leader_epoch = -1;
        cp.committed_metadata = Some(str_bytes(""));
        by_topic.entry(t).or_default().push(cp);
    }
    req.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut ct = OffsetCommitRequestTopic::default();
            ct.name = topic_name(t);
            ct.partitions = ps;
            ct
        })
        .collect();
    let resp = cluster.send_to(coordinator, 8, &req, Duration::ZERO).await?;
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "Error: Assignments can only be reset if the group '{group}' is inactive ({} on {}-{})",
                    error_name(p.error_code),
                    t.name.0,
                    p.partition_index
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_to_epoch_millis() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00.000").unwrap(), 0);
        assert_eq!(parse_datetime("2024-02-29T12:34:56.789").unwrap(), 1_709_210_096_789);
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn consumer_assignments_decode() {
        // version 0, one topic "t" with partitions 0 and 2, empty user data.
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2];
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(assignment(&b), vec![("t".to_string(), vec![0, 2])]);
        assert!(assignment(&[0, 0, 0, 0, 0, 9]).is_empty());
    }
}
