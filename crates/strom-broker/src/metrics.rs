//! The broker's Prometheus metrics, named after Kafka's JMX metrics as the common JMX
//! exporter renders them (`kafka_server_brokertopicmetrics_bytesin_total{topic=…}`,
//! `kafka_server_replicamanager_underreplicatedpartitions`, …) so existing dashboards and
//! alerts map over.
//!
//! Counters are bumped where things happen (produce, fetch, request dispatch, connections,
//! ISR changes); state gauges (partition counts, under-replicated, log sizes, group lag) are
//! recomputed from the replica manager and the group coordinator at each scrape
//! ([`BrokerMetrics::refresh`]), so they can never drift from the state they describe.
//! Per-partition series (log size, segments, lag) can be switched off to bound cardinality.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use strom_metadata::image::MetadataImage;

use crate::coordinator::group::OffsetStore;
use crate::replica::ReplicaManager;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub request: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub group: String,
    pub topic: String,
    pub partition: String,
}

pub(crate) fn latency_histogram() -> Histogram {
    // 0.1 ms … ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

pub struct BrokerMetrics {
    pub bytes_in: Family<TopicLabels, Counter>,
    pub messages_in: Family<TopicLabels, Counter>,
    pub bytes_out: Family<TopicLabels, Counter>,
    pub replication_bytes_out: Counter,
    /// Batches a leader re-encoded into a topic's `compression.type`.
    pub recompressed_batches: Counter,
    /// Committed offsets expired by `offsets.retention.minutes` (written as tombstones).
    pub expired_offsets: Counter,
    /// The log cleaner's work: sealed bytes read, cleaned bytes written, records removed.
    pub cleaner_bytes_read: Counter,
    pub cleaner_bytes_written: Counter,
    pub cleaner_records_removed: Counter,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub request_queue_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub response_send_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    pub connections: Gauge,
    /// TLS handshakes that failed (untrusted or expired certificates, plaintext clients).
    pub failed_handshakes: Counter,
    /// SASL authentications (Kafka's successful-/failed-authentication-total).
    pub successful_authentications: Counter,
    pub failed_authentications: Counter,
    pub produce_purgatory: Gauge,
    /// The broker's heartbeat round trips (shared with [`crate::lifecycle::BrokerLifecycle`]).
    heartbeat_seconds: Histogram,
    partition_count: Gauge,
    producer_id_count: Gauge,
    leader_count: Gauge,
    under_replicated: Gauge,
    under_min_isr: Gauge,
    offline_partitions: Gauge,
    metadata_offset: Gauge,
    log_size: Family<PartitionLabels, Gauge>,
    log_segments: Family<PartitionLabels, Gauge>,
    group_lag: Family<LagLabels, Gauge>,
    per_partition: AtomicBool,
}

impl BrokerMetrics {
    pub fn new(per_partition: bool, heartbeat_seconds: Histogram) -> Self {
        BrokerMetrics {
            bytes_in: Family::default(),
            messages_in: Family::default(),
            bytes_out: Family::default(),
            replication_bytes_out: Counter::default(),
            recompressed_batches: Counter::default(),
            expired_offsets: Counter::default(),
            cleaner_bytes_read: Counter::default(),
            cleaner_bytes_written: Counter::default(),
            cleaner_records_removed: Counter::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            request_queue_seconds: Family::new_with_constructor(latency_histogram),
            response_send_seconds: Family::new_with_constructor(latency_histogram),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            connections: Gauge::default(),
            failed_handshakes: Counter::default(),
            successful_authentications: Counter::default(),
            failed_authentications: Counter::default(),
            produce_purgatory: Gauge::default(),
            heartbeat_seconds,
            partition_count: Gauge::default(),
            producer_id_count: Gauge::default(),
            leader_count: Gauge::default(),
            under_replicated: Gauge::default(),
            under_min_isr: Gauge::default(),
            offline_partitions: Gauge::default(),
            metadata_offset: Gauge::default(),
            log_size: Family::default(),
            log_segments: Family::default(),
            group_lag: Family::default(),
            per_partition: AtomicBool::new(per_partition),
        }
    }

    /// Adds every metric to `registry` under Kafka's names.
    pub fn register(&self, r: &mut Registry) {
        r.register("kafka_server_brokertopicmetrics_bytesin", "Bytes produced, per topic", self.bytes_in.clone());
        r.register(
            "kafka_server_brokertopicmetrics_messagesin",
            "Records produced, per topic",
            self.messages_in.clone(),
        );
        r.register(
            "kafka_server_brokertopicmetrics_bytesout",
            "Bytes fetched by consumers, per topic",
            self.bytes_out.clone(),
        );
        r.register(
            "kafka_server_brokertopicmetrics_replicationbytesout",
            "Bytes fetched by follower replicas",
            self.replication_bytes_out.clone(),
        );
        r.register(
            "strom_broker_recompressed_batches",
            "Produced batches the leader re-encoded into the topic's compression.type (the one place produce re-encodes)",
            self.recompressed_batches.clone(),
        );
        r.register(
            "strom_group_offsets_expired",
            "Committed offsets expired by offsets.retention.minutes (their group empty that long)",
            self.expired_offsets.clone(),
        );
        r.register(
            "strom_log_cleaner_bytes_read",
            "Bytes of sealed compacted segments the log cleaner read",
            self.cleaner_bytes_read.clone(),
        );
        r.register(
            "strom_log_cleaner_bytes_written",
            "Bytes of cleaned segments the log cleaner wrote",
            self.cleaner_bytes_written.clone(),
        );
        r.register(
            "strom_log_cleaner_records_removed",
            "Records the log cleaner removed (superseded values and expired tombstones)",
            self.cleaner_records_removed.clone(),
        );
        r.register(
            "strom_tls_failed_handshakes",
            "TLS handshakes that failed on SSL listeners (plaintext clients, untrusted or expired certificates)",
            self.failed_handshakes.clone(),
        );
        r.register(
            "kafka_server_socket_server_metrics_successful_authentication",
            "SASL authentications that succeeded",
            self.successful_authentications.clone(),
        );
        r.register(
            "kafka_server_socket_server_metrics_failed_authentication",
            "SASL authentications that failed (wrong password, unknown user, malformed exchange)",
            self.failed_authentications.clone(),
        );
        r.register("kafka_network_requestmetrics_requests", "Requests handled, per API", self.requests.clone());
        r.register(
            "strom_broker_heartbeat_seconds",
            "Round trip of the broker's heartbeats to the active controller (answered ones)",
            self.heartbeat_seconds.clone(),
        );
        r.register(
            "kafka_network_requestmetrics_totaltime_seconds",
            "Request handling time (from read to response), per API",
            self.request_seconds.clone(),
        );
        r.register(
            "kafka_network_requestmetrics_requestqueuetime_seconds",
            "Time a request waited, read off the socket, before its handling began (behind the \
             earlier requests of its connection), per API",
            self.request_queue_seconds.clone(),
        );
        r.register(
            "kafka_network_requestmetrics_responsesendtime_seconds",
            "Time to write a response to the socket, per API (responses are written by the \
             connection as soon as they are ready: there is no response queue to wait in)",
            self.response_send_seconds.clone(),
        );
        r.register(
            "kafka_server_replicamanager_isrshrinks",
            "ISR shrinks committed by this leader",
            self.isr_shrinks.clone(),
        );
        r.register(
            "kafka_server_replicamanager_isrexpands",
            "ISR expands committed by this leader",
            self.isr_expands.clone(),
        );
        r.register(
            "kafka_server_socketservermetrics_connection_count",
            "Open client connections",
            self.connections.clone(),
        );
        r.register(
            "kafka_server_delayedoperationpurgatory_purgatorysize_produce",
            "acks=all produce requests waiting for the high watermark",
            self.produce_purgatory.clone(),
        );
        r.register(
            "kafka_server_replicamanager_partitioncount",
            "Partition replicas on this broker",
            self.partition_count.clone(),
        );
        r.register(
            "kafka_server_replicamanager_produceridcount",
            "Idempotent producer ids whose state the partitions here keep (KIP-847)",
            self.producer_id_count.clone(),
        );
        r.register(
            "kafka_server_replicamanager_leadercount",
            "Partitions this broker leads",
            self.leader_count.clone(),
        );
        r.register(
            "kafka_server_replicamanager_underreplicatedpartitions",
            "Partitions led here whose ISR is smaller than their replica set",
            self.under_replicated.clone(),
        );
        r.register(
            "kafka_server_replicamanager_underminisrpartitioncount",
            "Partitions led here whose ISR is below min.insync.replicas",
            self.under_min_isr.clone(),
        );
        r.register(
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            "Partitions without a leader (cluster-wide, from this broker's metadata)",
            self.offline_partitions.clone(),
        );
        r.register(
            "strom_broker_metadata_offset",
            "The metadata offset this broker has applied (compare with strom_controller_metadata_offset)",
            self.metadata_offset.clone(),
        );
        r.register("kafka_log_log_size", "Bytes of a partition replica's log", self.log_size.clone());
        r.register("kafka_log_log_numlogsegments", "Segments of a partition replica's log", self.log_segments.clone());
        r.register(
            "kafka_consumergroup_lag",
            "Records a group has not committed yet (high watermark minus committed offset), on its \
             coordinator, for every partition the coordinator holds a replica of",
            self.group_lag.clone(),
        );
    }

    pub fn record_request(&self, api: &str, queued_seconds: f64, seconds: f64) {
        let l = RequestLabels { request: api.to_string() };
        self.requests.get_or_create(&l).inc();
        self.request_queue_seconds.get_or_create(&l).observe(queued_seconds);
        self.request_seconds.get_or_create(&l).observe(seconds);
    }

    pub fn record_response_send(&self, api: &str, seconds: f64) {
        let l = RequestLabels { request: api.to_string() };
        self.response_send_seconds.get_or_create(&l).observe(seconds);
    }

    /// Recomputes the state gauges (called before each scrape).
    pub fn refresh(
        &self,
        image: &MetadataImage,
        replicas: &ReplicaManager,
        offsets: &OffsetStore,
        min_isr_default: i32,
    ) {
        let per_partition = self.per_partition.load(Ordering::Relaxed);
        self.log_size.clear();
        self.log_segments.clear();
        self.group_lag.clear();
        let (mut parts, mut leaders, mut under, mut under_min, mut producer_ids) = (0, 0, 0, 0, 0);
        for p in replicas.all() {
            parts += 1;
            producer_ids += p.producer_count() as i64;
            let role = p.role();
            if p.is_leader() {
                leaders += 1;
                if role.isr.len() < role.replicas.len() {
                    under += 1;
                }
                let min_isr = image
                    .topic_configs
                    .get(&p.tp.topic)
                    .and_then(|c| c.get("min.insync.replicas"))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(min_isr_default.max(1) as usize);
                if role.isr.len() < min_isr {
                    under_min += 1;
                }
            }
            if per_partition {
                let l = PartitionLabels { topic: p.tp.topic.clone(), partition: p.tp.partition.to_string() };
                let (size, segments) = p.with_log(|log| (log.size_bytes(), log.segment_count()));
                self.log_size.get_or_create(&l).set(size as i64);
                self.log_segments.get_or_create(&l).set(segments as i64);
            }
        }
        self.partition_count.set(parts);
        self.producer_id_count.set(producer_ids);
        self.leader_count.set(leaders);
        self.under_replicated.set(under);
        self.under_min_isr.set(under_min);
        let offline = image.topics.values().flat_map(|t| t.partitions.values()).filter(|p| p.leader < 0).count();
        self.offline_partitions.set(offline as i64);
        self.metadata_offset.set(image.offset);
        if per_partition {
            for group in offsets.groups() {
                if !offsets.leads(&group) {
                    continue;
                }
                for ((topic, partition), c) in offsets.fetch(&group) {
                    // A follower's high watermark trails the leader's by at most one fetch:
                    // close enough for lag, and it covers the partitions led elsewhere. A
                    // partition with no replica here has no series.
                    let Some(p) = replicas.get(&topic, partition) else { continue };
                    let lag = (p.high_watermark() - c.offset).max(0);
                    let l = LagLabels { group: group.clone(), topic, partition: partition.to_string() };
                    self.group_lag.get_or_create(&l).set(lag);
                }
            }
        }
    }
}
