//! Who sent a request, and what they may do: every handler asks [`Access`] before acting, with
//! the operation and resource Kafka's KafkaApis checks for that API, and answers a refusal
//! with Kafka's code (TOPIC_ / GROUP_ / CLUSTER_AUTHORIZATION_FAILED) for that part of the
//! request only. With no authorizer configured (`authorizer.class.name` unset), everyone may
//! do everything, as in Kafka. The decision is `strom_metadata::acl::authorize`, on the ACLs
//! of this broker's metadata image.
//!
//! What each API needs (as Kafka):
//! | API | needs |
//! | --- | --- |
//! | Produce | WRITE on the topic (a transactional batch: and WRITE on its transactional id) |
//! | Fetch (consumer) / (follower) | READ on the topic / CLUSTER_ACTION on the cluster |
//! | ListOffsets, Metadata | DESCRIBE on the topic (Metadata lists only those; auto-creation needs CREATE) |
//! | OffsetForLeaderEpoch | DESCRIBE on the topic (a follower: CLUSTER_ACTION) |
//! | CreateTopics | CREATE on the cluster or the topic |
//! | DeleteTopics, DeleteRecords / CreatePartitions | DELETE / ALTER on the topic |
//! | DescribeConfigs / AlterConfigs, IncrementalAlterConfigs | DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic, or the cluster for a broker |
//! | InitProducerId (idempotent) | IDEMPOTENT_WRITE on the cluster, or WRITE on some topic |
//! | FindCoordinator (group), DescribeGroups | DESCRIBE on the group |
//! | JoinGroup, SyncGroup, Heartbeat, LeaveGroup | READ on the group |
//! | OffsetCommit | READ on the group and on each topic |
//! | OffsetFetch | DESCRIBE on the group and on each topic |
//! | DeleteGroups / OffsetDelete | DELETE on the group (and READ on each topic) |
//! | ListGroups | DESCRIBE on the cluster, else only groups the principal may describe |
//! | DescribeLogDirs, DescribeAcls, DescribeUserScramCredentials | DESCRIBE on the cluster |
//! | CreateAcls, DeleteAcls, AlterUserScramCredentials | ALTER on the cluster |
//! | InitProducerId (transactional), EndTxn | WRITE on the transactional id |
//! | FindCoordinator (transaction), DescribeTransactions | DESCRIBE on the transactional id |
//! | ListTransactions | only ids the principal may describe |
//! | AddPartitionsToTxn v0–3 | WRITE on the transactional id and on each topic |
//! | AddPartitionsToTxn v4 (verification), WriteTxnMarkers | CLUSTER_ACTION on the cluster |
//! | AddOffsetsToTxn | WRITE on the transactional id, READ on the group |
//! | TxnOffsetCommit | WRITE on the transactional id, READ on the group and on each topic |
//! | DescribeProducers | READ on the topic |

use std::sync::Arc;

use strom_metadata::acl::{authorize, AuthorizerSettings, Operation, Permission, Requester, ResourceType};
use strom_metadata::image::MetadataImage;

pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const SECURITY_DISABLED: i16 = 54;

pub use strom_metadata::acl::CLUSTER_NAME;

/// The sender of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `User:alice`, `User:CN=alice,O=example` (mTLS), or `User:ANONYMOUS`.
    pub principal: String,
    /// The client's address.
    pub host: String,
}

impl Session {
    pub fn anonymous(host: String) -> Self {
        Session { principal: format!("User:{}", strom_security::ANONYMOUS), host }
    }
}

/// One request's view of the authorizer.
pub struct Access<'a> {
    session: &'a Session,
    settings: Option<&'a AuthorizerSettings>,
    image: Arc<MetadataImage>,
}

impl<'a> Access<'a> {
    pub fn new(session: &'a Session, settings: Option<&'a AuthorizerSettings>, image: Arc<MetadataImage>) -> Self {
        Access { session, settings, image }
    }

    /// Whether an authorizer is configured at all.
    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    fn who(&self) -> Requester<'_> {
        Requester { principal: &self.session.principal, host: &self.session.host }
    }

    /// May the sender do `op` to the resource?
    pub fn may(&self, op: Operation, resource_type: ResourceType, name: &str) -> bool {
        match self.settings {
            None => true,
            Some(s) => authorize(&self.image.acls, s, &self.who(), op, resource_type, name),
        }
    }

    pub fn may_topic(&self, op: Operation, topic: &str) -> bool {
        self.may(op, ResourceType::Topic, topic)
    }

    pub fn may_group(&self, op: Operation, group: &str) -> bool {
        self.may(op, ResourceType::Group, group)
    }

    pub fn may_cluster(&self, op: Operation) -> bool {
        self.may(op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Kafka's `authorizeByResourceType`: may the sender do `op` to *some* resource of the
    /// type (an ALLOW for it, on any pattern, not denied outright with a `*` pattern)?
    pub fn may_some(&self, op: Operation, resource_type: ResourceType) -> bool {
        let Some(s) = self.settings else { return true };
        if s.super_users.contains(&self.session.principal) {
            return true;
        }
        let who = self.who();
        let mine = |p: &str, h: &str| (p == who.principal || p == "User:*") && (h == who.host || h == "*");
        let relevant = |a: &&strom_metadata::acl::AclBinding| {
            a.resource_type == resource_type
                && mine(&a.principal, &a.host)
                && (a.operation == op || a.operation == Operation::All)
        };
        let denied_everywhere = self.image.acls.iter().filter(relevant).any(|a| {
            a.permission == Permission::Deny
                && a.resource_name == "*"
                && a.pattern_type == strom_metadata::acl::PatternType::Literal
        });
        !denied_everywhere && self.image.acls.iter().filter(relevant).any(|a| a.permission == Permission::Allow)
    }
}
