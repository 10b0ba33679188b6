//! [`ReplicaManager`]: the set of partition replicas this broker holds. Only the metadata
//! follower changes the set ([`ReplicaManager::apply_image`]: open, re-role, delete); the
//! request handlers reach a partition through [`ReplicaManager::get`] and serve produce and
//! fetch through it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use strom_metadata::image::MetadataImage;
use strom_storage::{CleanOptions, CleanStats, CompressionType, Log, LogConfig, TimestampType};
use tokio::sync::Notify;

use super::{Partition, ReplicaError, ReplicaRole, TopicPartition};

/// What [`ReplicaManager::fetch`] read from one partition.
#[derive(Debug)]
pub struct FetchRead {
    pub records: Bytes,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// For read_committed: the aborted transactions with records among `records`.
    pub aborted: Option<Vec<strom_storage::AbortedTxn>>,
}

/// Every partition replica this broker holds.
pub struct ReplicaManager {
    node_id: i32,
    log_dir: PathBuf,
    defaults: LogConfig,
    partitions: RwLock<BTreeMap<TopicPartition, Arc<Partition>>>,
    /// Partitions whose ISR may need to change (a follower caught up), for the ISR manager.
    isr_checks: Mutex<Vec<Arc<Partition>>>,
    pub isr_check_wanted: Notify,
    /// Whether the log directory still takes writes ([`super::log_dir`]'s rule).
    pub log_dir_health: Arc<super::LogDirHealth>,
    /// Where request handlers and the fetcher do their log reads and appends
    /// ([`super::disk_io`]'s rule).
    pub disk: super::DiskIo,
}

impl ReplicaManager {
    pub fn new(node_id: i32, log_dir: PathBuf, defaults: LogConfig) -> Self {
        ReplicaManager {
            node_id,
            log_dir,
            defaults,
            partitions: RwLock::new(BTreeMap::new()),
            isr_checks: Mutex::new(Vec::new()),
            isr_check_wanted: Notify::new(),
            log_dir_health: Arc::default(),
            disk: super::DiskIo::default(),
        }
    }

    /// Bounds the concurrent disk operations of request handlers (`num.io.threads`).
    pub fn with_io_threads(mut self, threads: usize) -> Self {
        self.disk = super::DiskIo::new(threads);
        self
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Asks the ISR manager to look at `p` soon.
    pub fn request_isr_check(&self, p: Arc<Partition>) {
        self.isr_checks.lock().unwrap_or_else(|p| p.into_inner()).push(p);
        self.isr_check_wanted.notify_one();
    }

    /// The partitions asked about since the last call.
    pub fn take_isr_checks(&self) -> Vec<Arc<Partition>> {
        std::mem::take(&mut *self.isr_checks.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let key = TopicPartition { topic: topic.to_string(), partition };
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(&key).cloned()
    }

    /// All partitions, in order.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }

    /// The log config of `topic`: broker defaults with the topic's overrides.
    pub fn log_config(&self, image: &MetadataImage, topic: &str) -> LogConfig {
        let mut c = self.defaults.clone();
        let Some(over) = image.topic_configs.get(topic) else { return c };
        let num = |k: &str| over.get(k).and_then(|v| v.parse::<i64>().ok());
        let opt = |v: i64| (v >= 0).then_some(v as u64);
        // Kafka's Long.MAX_VALUE (the default) means no bound.
        let bound = |v: i64| (0..i64::MAX).contains(&v).then_some(v as u64);
        if let Some(v) = num("segment.bytes") {
            c.segment_bytes = v.max(14) as u64;
        }
        if let Some(v) = num("segment.ms") {
            c.segment_ms = opt(v);
        }
        if let Some(v) = num("retention.ms") {
            c.retention_ms = opt(v);
        }
        if let Some(v) = num("retention.bytes") {
            c.retention_bytes = opt(v);
        }
        if let Some(v) = num("index.interval.bytes") {
            c.index_interval_bytes = v.max(1) as u64;
        }
        if let Some(v) = num("flush.messages") {
            c.flush_interval_messages = v.max(1) as u64;
        }
        if let Some(v) = num("flush.ms") {
            c.flush_interval_ms = opt(v);
        }
        if let Some(v) = num("max.message.bytes") {
            c.max_batch_bytes = v.max(0) as usize;
        }
        if let Some(policy) = over.get("cleanup.policy") {
            let names = |p: &str| policy.split(',').any(|x| x.trim() == p);
            c.compact = names("compact");
            c.delete = names("delete");
        }
        if let Some(v) = num("delete.retention.ms") {
            c.delete_retention_ms = v.max(0) as u64;
        }
        if let Some(v) = num("min.compaction.lag.ms") {
            c.min_compaction_lag_ms = v.max(0) as u64;
        }
        if let Some(v) = num("max.compaction.lag.ms") {
            c.max_compaction_lag_ms = bound(v);
        }
        if let Some(v) = over.get("min.cleanable.dirty.ratio").and_then(|v| v.trim().parse::<f64>().ok()) {
            c.min_cleanable_dirty_ratio = v;
        }
        if let Some(codec) = over.get("compression.type").and_then(|v| CompressionType::parse(v)) {
            c.compression = codec;
        }
        match over.get("message.timestamp.type").map(String::as_str) {
            Some("LogAppendTime") => c.timestamp_type = TimestampType::LogAppendTime,
            Some("CreateTime") => c.timestamp_type = TimestampType::CreateTime,
            _ => {}
        }
        if let Some(v) = num("message.timestamp.before.max.ms") {
            c.timestamp_before_max_ms = bound(v);
        }
        if let Some(v) = num("message.timestamp.after.max.ms") {
            c.timestamp_after_max_ms = bound(v);
        }
        c
    }

    /// Brings the replicas in line with `image`: opens logs for partitions assigned here,
    /// updates roles and configs, and deletes partitions whose topic is gone.
    pub fn apply_image(&self, image: &MetadataImage) {
        let mut wanted = BTreeMap::new();
        for t in image.topics.values() {
            for (p, part) in &t.partitions {
                if part.replicas.contains(&self.node_id) {
                    wanted.insert(TopicPartition { topic: t.name.clone(), partition: *p }, (t.id, part));
                }
            }
        }
        // Under the table's lock only what is quick (roles, configs, removals from the table):
        // every request looks partitions up in it. Deleting and opening logs is disk work,
        // done after, off the async workers (disk_io's rule).
        let mut gone_dirs = Vec::new();
        let mut to_open = Vec::new();
        {
            let mut parts = self.partitions.write().unwrap_or_else(|p| p.into_inner());
            // Gone: the topic was deleted (or the replica moved away), or deleted and created
            // again under its name (another topic id: its old log must not be the new one's).
            let gone: Vec<TopicPartition> = parts
                .iter()
                .filter(|(k, p)| wanted.get(*k).is_none_or(|(id, _)| *id != p.topic_id))
                .map(|(k, _)| k.clone())
                .collect();
            for tp in gone {
                if let Some(p) = parts.remove(&tp) {
                    p.wake(); // fetches waiting on it answer now (the partition is no longer here)
                    gone_dirs.push((tp, p.with_log(|l| l.dir().to_path_buf())));
                }
            }
            for (tp, (topic_id, part)) in wanted {
                let role = ReplicaRole {
                    leader: part.leader,
                    leader_epoch: part.leader_epoch,
                    partition_epoch: part.partition_epoch,
                    isr: part.isr.clone(),
                    replicas: part.replicas.clone(),
                };
                let config = self.log_config(image, &tp.topic);
                match parts.get(&tp) {
                    Some(existing) if existing.topic_id == topic_id => {
                        existing.apply_role(role);
                        existing.with_log(|l| {
                            if *l.config() != config {
                                l.set_config(config)
                            }
                        });
                    }
                    _ => to_open.push((tp, topic_id, role, config)),
                }
            }
        }
        let opened = self.disk.run_sync(|| {
            for (tp, dir) in gone_dirs {
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => tracing::info!(node = self.node_id, partition = %tp, "partition deleted"),
                    Err(e) => {
                        tracing::warn!(node = self.node_id, partition = %tp, error = %e, "cannot delete partition")
                    }
                }
            }
            let mut opened = Vec::new();
            for (tp, topic_id, role, config) in to_open {
                let dir = self.log_dir.join(tp.to_string());
                match Log::open(&dir, config) {
                    Ok((log, report)) => {
                        if report.truncated_bytes > 0 {
                            tracing::warn!(node = self.node_id, partition = %tp, ?report, "log recovered with a cut tail");
                        }
                        let p = Partition::open(tp.clone(), topic_id, self.node_id, log, role, self.log_dir_health.clone());
                        opened.push((tp, p));
                    }
                    Err(e) => {
                        tracing::error!(node = self.node_id, partition = %tp, error = %e, "cannot open partition log; it stays offline")
                    }
                }
            }
            opened
        });
        let mut parts = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        parts.extend(opened);
        // Roles, ISRs or configs may have changed: whoever waits on a partition looks again.
        for p in parts.values() {
            p.wake();
        }
    }

    /// Serves one partition of a Fetch: checks the client's leader epoch and that this broker
    /// leads, records a follower's progress (`replica_id` ≥ 0: its fetch offset is its LEO;
    /// this may move the HW, waking acks=all waiters, and queue an ISR expansion), then reads
    /// whole batches from `fetch_offset`: for consumers up to the HW (read_uncommitted) or
    /// the last stable offset (`read_committed`, with the aborted transactions among what
    /// it returns), for followers up to the LEO. At most `limit_bytes`, except that a first
    /// batch is returned whole; `None` reads nothing (the response is full).
    pub fn fetch(
        &self,
        p: &Arc<Partition>,
        replica_id: i32,
        fetch_offset: i64,
        current_leader_epoch: i32,
        limit_bytes: Option<usize>,
        read_committed: bool,
    ) -> Result<FetchRead, ReplicaError> {
        p.check_epoch(current_leader_epoch)?;
        if !p.is_leader() {
            return Err(ReplicaError::NotLeader(p.tp.to_string()));
        }
        if replica_id >= 0 {
            let outcome = p.record_follower_fetch(replica_id, fetch_offset);
            if outcome.high_watermark_moved {
                p.wake();
            }
            if outcome.expand_isr {
                self.request_isr_check(p.clone());
            }
        }
        let read_committed = read_committed && replica_id < 0;
        let high_watermark = p.high_watermark();
        let last_stable_offset = p.last_stable_offset_at(high_watermark);
        let mut out = FetchRead {
            records: Bytes::new(),
            high_watermark,
            last_stable_offset,
            aborted: read_committed.then(Vec::new),
        };
        let Some(limit_bytes) = limit_bytes else { return Ok(out) };
        let max_offset = match (replica_id >= 0, read_committed) {
            (true, _) => None,
            (false, true) => Some(last_stable_offset),
            (false, false) => Some(high_watermark),
        };
        let read = p.read(fetch_offset, limit_bytes, max_offset)?;
        if read_committed && !read.records.is_empty() {
            out.aborted = Some(p.aborted_txns(fetch_offset, read.next_offset));
        }
        out.records = read.records;
        Ok(out)
    }

    /// Flushes every log that is due (`flush.ms`), makes rolled segments durable and applies
    /// retention; run on a timer, off the async runtime (it blocks on fdatasync). A rolled
    /// segment is synced outside the log lock, so appends to the partition go on meanwhile.
    pub fn housekeeping(&self, now_ms: i64, retention_due: bool) {
        for p in self.all() {
            if let Some(work) = p.with_log(|l| l.sealed_to_sync()) {
                let synced = work.paths.iter().try_for_each(|path| strom_storage::sync_file(path));
                match synced.and_then(|()| p.with_log(|l| l.sealed_synced(work))) {
                    Ok(()) => {}
                    Err(e) => {
                        let e = self.log_dir_health.check(self.node_id, "syncing rolled segments", e);
                        tracing::error!(node = self.node_id, partition = %p.tp, error = %e, "syncing rolled segments failed")
                    }
                }
            }
            if let Err(e) = p.snapshot_producers(false) {
                let e = self.log_dir_health.check(self.node_id, "producer state snapshot", e);
                tracing::error!(node = self.node_id, partition = %p.tp, error = %e, "producer state snapshot failed");
            }
            p.with_log(|l| {
                if let Err(e) = l.flush_if_due() {
                    let e = self.log_dir_health.check(self.node_id, "flush", e);
                    tracing::error!(node = self.node_id, partition = %p.tp, error = %e, "flush failed");
                }
                if retention_due {
                    match l.apply_retention(now_ms) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(node = self.node_id, partition = %p.tp, segments = n, "retention deleted segments"),
                        Err(e) => tracing::error!(node = self.node_id, partition = %p.tp, error = %e, "retention failed"),
                    }
                }
            });
        }
    }

    /// Forgets idempotent producers silent for `max_age_ms` (`producer.id.expiration.ms`) in
    /// every partition; returns how many entries went.
    pub fn expire_producers(&self, now_ms: i64, max_age_ms: i64) -> usize {
        self.all().iter().map(|p| p.expire_producers(now_ms, max_age_ms)).sum()
    }

    /// One round of the log cleaner over the partitions of `shard` (of `shards`): each
    /// compacted log that is due is planned under its lock, cleaned off it, and installed
    /// under it again (`strom_storage::cleaner`'s lock rule), so appends and reads go on while
    /// it runs. Blocking: run it off the async runtime. Returns what the round did (all logs).
    pub fn clean_round(
        &self,
        now_ms: i64,
        shard: usize,
        shards: usize,
        io_max_bytes_per_second: Option<u64>,
    ) -> CleanStats {
        let mut total = CleanStats::default();
        for (i, p) in self.all().into_iter().enumerate() {
            if i % shards.max(1) != shard {
                continue;
            }
            // Nothing at or past the last stable offset is cleaned (the cleaner's transactions
            // rule): read before the log lock, it only grows meanwhile.
            let uncleanable_from = p.last_stable_offset();
            let plan = p.with_log(|l| {
                let opts = CleanOptions {
                    uncleanable_from,
                    ..CleanOptions::for_config(l.config(), now_ms, io_max_bytes_per_second)
                };
                l.cleaning_due(now_ms).then(|| l.plan_clean(opts)).flatten()
            });
            let Some(plan) = plan else { continue };
            let result = plan.prepare().and_then(|prepared| p.with_log(|l| l.install_clean(prepared)));
            match result {
                Ok(stats) => {
                    total.segments_rewritten += stats.segments_rewritten;
                    total.bytes_read += stats.bytes_read;
                    total.bytes_written += stats.bytes_written;
                    total.records_removed += stats.records_removed;
                    if stats.segments_rewritten > 0 {
                        tracing::info!(
                            node = self.node_id,
                            partition = %p.tp,
                            segments = stats.segments_rewritten,
                            removed = stats.records_removed,
                            bytes_read = stats.bytes_read,
                            bytes_written = stats.bytes_written,
                            "log compacted"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(node = self.node_id, partition = %p.tp, error = %e, "log cleaning failed; retried later")
                }
            }
        }
        total
    }

    /// Flushes and closes every log (clean shutdown). After a log directory failure nothing is
    /// written: the logs are dropped without their shutdown markers, so the next start
    /// recovers every segment instead of trusting them.
    pub fn close_all(&self) {
        let parts = std::mem::take(&mut *self.partitions.write().unwrap_or_else(|p| p.into_inner()));
        if self.log_dir_health.is_offline() {
            tracing::warn!(node = self.node_id, "log directory offline: logs closed without shutdown markers");
            return;
        }
        for (tp, p) in parts {
            // The next open reads only what was appended after this snapshot: nothing.
            if let Err(e) = p.snapshot_producers(true) {
                tracing::warn!(node = self.node_id, partition = %tp, error = %e, "producer state snapshot failed");
            }
            match Arc::try_unwrap(p) {
                Ok(p) => {
                    let log = p.into_log();
                    if let Err(e) = log.close() {
                        tracing::warn!(node = self.node_id, partition = %tp, error = %e, "close failed");
                    }
                }
                Err(p) => {
                    if let Err(e) = p.with_log(|l| l.flush()) {
                        tracing::warn!(node = self.node_id, partition = %tp, error = %e, "flush failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_metadata::image::{PartitionImage, TopicImage};
    use uuid::Uuid;

    fn image_with(topic: &str, id: u128) -> MetadataImage {
        let mut image = MetadataImage::default();
        let part = PartitionImage { replicas: vec![1], isr: vec![1], leader: 1, leader_epoch: 0, partition_epoch: 0 };
        let id = Uuid::from_u128(id);
        image.topics.insert(topic.into(), TopicImage { name: topic.into(), id, partitions: [(0, part)].into() });
        image
    }

    #[test]
    fn a_topic_deleted_and_created_again_under_its_name_starts_with_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(1, dir.path().to_path_buf(), LogConfig::default());
        replicas.apply_image(&image_with("t", 1));
        let old = replicas.get("t", 0).unwrap();
        let batch = strom_protocol::batch::build_batch(0, 0, &[b"old"]);
        old.append_as_leader(&batch, 0, None).unwrap();
        assert_eq!(old.log_end_offset(), 1);
        // Both the deletion and the new topic arrive in one image: another topic id.
        replicas.apply_image(&image_with("t", 2));
        let new = replicas.get("t", 0).unwrap();
        assert!(!Arc::ptr_eq(&old, &new));
        assert_eq!(new.topic_id, Uuid::from_u128(2));
        assert_eq!(new.log_end_offset(), 0, "the new topic inherited the old one's records");
    }
}
