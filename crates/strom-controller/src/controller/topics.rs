//! Topic changes: creation (names, configs, replica placement), deletion, partition counts,
//! and config changes of topics and brokers. Each is one batch of records computed from the
//! up-to-date image under the write lock ([`Controller::write`]).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{Controller, ControllerError};
use crate::placement;
use strom_metadata::image::MetadataImage;
use strom_metadata::records::{ConfigResource, MetadataRecord};
use strom_metadata::topic_config;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions`.
    pub num_partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit replica lists per partition (instead of the two counts).
    pub assignments: Vec<Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

/// A created (or validated) topic.
#[derive(Debug, Clone)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

impl Controller {
    /// Creates topics (or, with `validate_only`, only checks them). One result per topic.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> (Vec<Result<CreatedTopic, ControllerError>>, i64) {
        if let Err(e) = self.check_active() {
            return (topics.iter().map(|_| Err(e.clone())).collect(), -1);
        }
        let r = self
            .write(|image| {
                let mut records = Vec::new();
                let mut results = Vec::new();
                let mut planned = image.clone();
                for t in &topics {
                    // Kafka: a name given twice in one request is refused for every copy.
                    if topics.iter().filter(|o| o.name == t.name).count() > 1 {
                        results.push(Err(ControllerError::InvalidRequest("Duplicate topic name.".into())));
                        continue;
                    }
                    let r = self.plan_topic(&planned, t);
                    if let Ok((recs, _)) = &r {
                        // Later topics of the same request see the earlier ones.
                        planned.apply_batch(planned.offset + 1, recs);
                        if !validate_only {
                            records.extend(recs.iter().cloned());
                        }
                    }
                    results.push(r.map(|(_, c)| c));
                }
                Ok((records, results))
            })
            .await;
        match r {
            Ok((results, offset)) => (results, offset),
            Err(e) => (topics.iter().map(|_| Err(e.clone())).collect(), -1),
        }
    }

    fn plan_topic(
        &self,
        image: &MetadataImage,
        t: &NewTopic,
    ) -> Result<(Vec<MetadataRecord>, CreatedTopic), ControllerError> {
        topic_config::validate_topic_name(&t.name).map_err(ControllerError::InvalidTopic)?;
        if image.topics.contains_key(&t.name) {
            return Err(ControllerError::TopicExists(t.name.clone()));
        }
        let key = topic_config::collision_key(&t.name);
        if let Some(other) = image.topics.keys().find(|n| topic_config::collision_key(n) == key) {
            return Err(ControllerError::InvalidTopic(format!(
                "topic {} collides with existing topic {other} ('.' and '_' are the same in metric names)",
                t.name
            )));
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v).map_err(ControllerError::InvalidConfig)?;
        }
        let live: Vec<_> = image.live_brokers().collect();
        let assignments = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err(ControllerError::InvalidRequest(
                    "both replica assignments and partition count or replication factor were given".into(),
                ));
            }
            let rf = t.assignments[0].len();
            for a in &t.assignments {
                if a.len() != rf || a.is_empty() {
                    return Err(ControllerError::InvalidReplicationFactor(
                        "every partition needs the same, non-zero number of replicas".into(),
                    ));
                }
                if let Some(b) = a.iter().find(|b| !image.brokers.contains_key(b)) {
                    return Err(ControllerError::InvalidReplicationFactor(format!("unknown broker {b} in assignment")));
                }
            }
            t.assignments.clone()
        } else {
            let n = if t.num_partitions == -1 { self.config.num_partitions } else { t.num_partitions };
            let rf =
                if t.replication_factor == -1 { self.config.default_replication_factor } else { t.replication_factor };
            if n < 1 {
                return Err(ControllerError::InvalidPartitions(format!(
                    "number of partitions must be at least 1, got {n}"
                )));
            }
            let start = image.topics.values().map(|t| t.partitions.len()).sum::<usize>();
            placement::assign(&live, 0, n, rf, start)
                .map_err(|e| ControllerError::InvalidReplicationFactor(e.to_string()))?
        };
        let topic_id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic { name: t.name.clone(), topic_id }];
        for (k, v) in &t.configs {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(t.name.clone()),
                key: k.clone(),
                value: Some(v.clone()),
            });
        }
        for (p, replicas) in assignments.iter().enumerate() {
            let isr: Vec<i32> =
                replicas.iter().copied().filter(|r| image.brokers.get(r).is_some_and(|b| !b.fenced)).collect();
            let isr = if isr.is_empty() { replicas.clone() } else { isr };
            let leader = if image.brokers.get(&isr[0]).is_some_and(|b| !b.fenced) { isr[0] } else { -1 };
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: p as i32,
                replicas: replicas.clone(),
                isr,
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        let created = CreatedTopic {
            topic_id,
            num_partitions: assignments.len() as i32,
            replication_factor: assignments.first().map_or(0, |a| a.len() as i16),
        };
        Ok((records, created))
    }

    /// Deletes topics by name. One result per topic.
    pub async fn delete_topics(&self, names: Vec<String>) -> (Vec<Result<Uuid, ControllerError>>, i64) {
        if let Err(e) = self.check_active() {
            return (names.iter().map(|_| Err(e.clone())).collect(), -1);
        }
        let r = self
            .write(|image| {
                let mut records = Vec::new();
                let results = names
                    .iter()
                    .map(|n| match image.topics.get(n) {
                        Some(t) => {
                            if !records
                                .iter()
                                .any(|r| matches!(r, MetadataRecord::RemoveTopic { topic_id } if *topic_id == t.id))
                            {
                                records.push(MetadataRecord::RemoveTopic { topic_id: t.id });
                            }
                            Ok(t.id)
                        }
                        None => Err(ControllerError::UnknownTopic(n.clone())),
                    })
                    .collect();
                Ok((records, results))
            })
            .await;
        match r {
            Ok((results, offset)) => (results, offset),
            Err(e) => (names.iter().map(|_| Err(e.clone())).collect(), -1),
        }
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(
        &self,
        topic: String,
        count: i32,
        validate_only: bool,
    ) -> Result<i64, ControllerError> {
        self.check_active()?;
        let ((), offset) = self
            .write(|image| {
                let Some(t) = image.topics.get(&topic) else {
                    return Err(ControllerError::UnknownTopic(topic.clone()));
                };
                let current = t.partitions.len() as i32;
                if count <= current {
                    return Err(ControllerError::InvalidPartitions(format!(
                        "topic {topic} has {current} partitions; the new count must be larger, got {count}"
                    )));
                }
                let rf = t.partitions.values().next().map_or(1, |p| p.replicas.len() as i16);
                let live: Vec<_> = image.live_brokers().collect();
                let assignments = placement::assign(&live, current, count - current, rf, 0)
                    .map_err(|e| ControllerError::InvalidReplicationFactor(e.to_string()))?;
                if validate_only {
                    return Ok((vec![], ()));
                }
                let records = assignments
                    .into_iter()
                    .enumerate()
                    .map(|(i, replicas)| MetadataRecord::Partition {
                        topic_id: t.id,
                        partition: current + i as i32,
                        isr: replicas.clone(),
                        leader: replicas[0],
                        replicas,
                        leader_epoch: 0,
                        partition_epoch: 0,
                    })
                    .collect();
                Ok((records, ()))
            })
            .await?;
        Ok(offset)
    }

    /// Sets (`Some`) or removes (`None`) config keys of a topic or broker. With `replace`,
    /// every key not named is removed (the legacy AlterConfigs semantics).
    pub async fn alter_configs(
        &self,
        resource: ConfigResource,
        changes: Vec<(String, Option<String>)>,
        replace: bool,
        validate_only: bool,
    ) -> Result<i64, ControllerError> {
        self.check_active()?;
        let ((), offset) = self
            .write(|image| {
                let current = match &resource {
                    ConfigResource::Topic(t) => {
                        if !image.topics.contains_key(t) {
                            return Err(ControllerError::UnknownTopic(t.clone()));
                        }
                        image.topic_configs.get(t)
                    }
                    ConfigResource::Broker(b) => image.broker_configs.get(b),
                };
                let mut records = Vec::new();
                for (k, v) in &changes {
                    if let (ConfigResource::Topic(_), Some(v)) = (&resource, v) {
                        topic_config::validate(k, v).map_err(ControllerError::InvalidConfig)?;
                    }
                    // A broker applies only its TLS listeners' keystores and truststores while
                    // it runs (strom_broker::dynamic_config, which also checks them first).
                    // (A key an older Strom stored may be deleted.)
                    let dynamic = v.is_none() || strom_security::tls::reconfigurable(k).is_some();
                    if matches!(resource, ConfigResource::Broker(_)) && !dynamic {
                        return Err(ControllerError::InvalidRequest(format!(
                            "Cannot update these configs dynamically: [{k}] (only \
                             listener.name.<listener>.ssl.keystore.* and ssl.truststore.* keys are)"
                        )));
                    }
                    records.push(MetadataRecord::Config {
                        resource: resource.clone(),
                        key: k.clone(),
                        value: v.clone(),
                    });
                }
                if replace {
                    for k in current.into_iter().flat_map(|c| c.keys()) {
                        if !changes.iter().any(|(c, _)| c == k) {
                            records.push(MetadataRecord::Config {
                                resource: resource.clone(),
                                key: k.clone(),
                                value: None,
                            });
                        }
                    }
                }
                Ok((if validate_only { vec![] } else { records }, ()))
            })
            .await?;
        Ok(offset)
    }
}
