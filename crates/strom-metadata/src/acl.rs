//! Access control lists with Kafka's model: who (principal, host) may or may not (permission)
//! do what (operation) to which resources (type, name, literal or prefixed pattern).
//!
//! ACLs are metadata: created and deleted through the controller, kept in every node's
//! image, so every broker decides alike. [`authorize`] is the one decision, as Kafka's
//! StandardAuthorizer makes it:
//!
//! **Authorization rule:**
//! 1. A super user (`super.users`) may do anything.
//! 2. The ACLs that apply are those of the resource's type whose pattern matches its name
//!    (LITERAL: equal, or `*`; PREFIXED: the name starts with it), for the principal (or
//!    `User:*`) and host (or `*`).
//! 3. A DENY for the operation (or ALL) wins over any ALLOW.
//! 4. An ALLOW for the operation (or ALL) allows; DESCRIBE is also allowed by READ, WRITE,
//!    DELETE or ALTER, and DESCRIBE_CONFIGS by ALTER_CONFIGS.
//! 5. When no ACL at all matches the resource (for anyone), `allow.everyone.if.no.acl.found`
//!    decides (default false); otherwise the answer is no.

use serde::{Deserialize, Serialize};

/// Kafka's resource type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }

    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            6 => ResourceType::DelegationToken,
            7 => ResourceType::User,
            _ => return None,
        })
    }
}

/// How a binding's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn from_code(c: i8) -> Option<Self> {
        match c {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

/// Kafka's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

const OPERATIONS: &[(Operation, i8, &str)] = &[
    (Operation::All, 2, "All"),
    (Operation::Read, 3, "Read"),
    (Operation::Write, 4, "Write"),
    (Operation::Create, 5, "Create"),
    (Operation::Delete, 6, "Delete"),
    (Operation::Alter, 7, "Alter"),
    (Operation::Describe, 8, "Describe"),
    (Operation::ClusterAction, 9, "ClusterAction"),
    (Operation::DescribeConfigs, 10, "DescribeConfigs"),
    (Operation::AlterConfigs, 11, "AlterConfigs"),
    (Operation::IdempotentWrite, 12, "IdempotentWrite"),
    (Operation::CreateTokens, 13, "CreateTokens"),
    (Operation::DescribeTokens, 14, "DescribeTokens"),
];

impl Operation {
    pub fn code(self) -> i8 {
        OPERATIONS.iter().find(|(o, _, _)| *o == self).map_or(0, |(_, c, _)| *c)
    }

    pub fn from_code(c: i8) -> Option<Self> {
        OPERATIONS.iter().find(|(_, x, _)| *x == c).map(|(o, _, _)| *o)
    }

    /// Kafka's name as its tools print and take it (`Read`, `DescribeConfigs`, …).
    pub fn name(self) -> &'static str {
        OPERATIONS.iter().find(|(o, _, _)| *o == self).map_or("Unknown", |(_, _, n)| n)
    }

    pub fn from_name(n: &str) -> Option<Self> {
        OPERATIONS.iter().find(|(_, _, x)| x.eq_ignore_ascii_case(n)).map(|(o, _, _)| *o)
    }

    /// Whether an ACL for `self` also grants `wanted` (rule 4).
    fn allows(self, wanted: Operation) -> bool {
        self == Operation::All
            || self == wanted
            || (wanted == Operation::Describe
                && matches!(self, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter))
            || (wanted == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_code(c: i8) -> Option<Self> {
        match c {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// A client address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Why a binding cannot be created (Kafka answers INVALID_REQUEST with this message).
pub fn validate(b: &AclBinding) -> Result<(), String> {
    if b.resource_name.is_empty() {
        return Err("the resource name must not be empty".into());
    }
    if b.resource_type == ResourceType::Cluster && b.resource_name != "kafka-cluster" {
        return Err("the cluster resource is named kafka-cluster".into());
    }
    if !b.principal.contains(':') || b.principal.ends_with(':') {
        return Err(format!("principal {} must be of the form Type:name (User:alice)", b.principal));
    }
    if b.host.is_empty() {
        return Err("the host must be an address or *".into());
    }
    if b.pattern_type == PatternType::Prefixed && b.resource_name == "*" {
        return Err("a PREFIXED pattern cannot be *".into());
    }
    Ok(())
}

impl AclBinding {
    fn pattern_matches(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == name || self.resource_name == "*",
                PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
            }
    }
}

/// Kafka's name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// Who is asking: the authenticated principal (`User:alice`, `User:ANONYMOUS`) and the
/// client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester<'a> {
    pub principal: &'a str,
    pub host: &'a str,
}

/// The authorizer's settings (`super.users`, `allow.everyone.if.no.acl.found`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerSettings {
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
}

/// The decision (the rule at the top of this module).
pub fn authorize<'a>(
    acls: impl IntoIterator<Item = &'a AclBinding>,
    settings: &AuthorizerSettings,
    who: &Requester<'_>,
    operation: Operation,
    resource_type: ResourceType,
    name: &str,
) -> bool {
    if settings.super_users.iter().any(|s| s == who.principal) {
        return true;
    }
    let mut any_for_resource = false;
    let mut allowed = false;
    for acl in acls.into_iter().filter(|a| a.pattern_matches(resource_type, name)) {
        any_for_resource = true;
        let for_me =
            (acl.principal == who.principal || acl.principal == "User:*") && (acl.host == who.host || acl.host == "*");
        if !for_me {
            continue;
        }
        match acl.permission {
            Permission::Deny if acl.operation == Operation::All || acl.operation == operation => return false,
            Permission::Allow if acl.operation.allows(operation) => allowed = true,
            _ => {}
        }
    }
    allowed || (!any_for_resource && settings.allow_if_no_acl)
}

/// A DescribeAcls / DeleteAcls filter; `None` matches anything (Kafka's ANY); a pattern type
/// of MATCH ([`PatternFilter::Match`]) matches every binding that would apply to the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    Any,
    Match,
    Exactly(PatternType),
}

impl AclFilter {
    /// From Kafka's wire codes; `Err` names the field that holds no valid filter value.
    #[allow(clippy::too_many_arguments)]
    pub fn from_codes(
        resource_type: i8,
        resource_name: Option<String>,
        pattern_type: i8,
        principal: Option<String>,
        host: Option<String>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, String> {
        const ANY: i8 = 1;
        let any_or = |c: i8, parse: &dyn Fn(i8) -> bool, what: &str| -> Result<bool, String> {
            if c == ANY {
                Ok(false)
            } else if parse(c) {
                Ok(true)
            } else {
                Err(format!("invalid {what} filter {c}"))
            }
        };
        any_or(resource_type, &|c| ResourceType::from_code(c).is_some(), "resource type")?;
        any_or(operation, &|c| Operation::from_code(c).is_some(), "operation")?;
        any_or(permission, &|c| Permission::from_code(c).is_some(), "permission")?;
        let pattern = match pattern_type {
            1 => PatternFilter::Any,
            2 => PatternFilter::Match,
            c => PatternFilter::Exactly(PatternType::from_code(c).ok_or(format!("invalid pattern type filter {c}"))?),
        };
        Ok(AclFilter {
            resource_type: ResourceType::from_code(resource_type),
            resource_name,
            pattern,
            principal,
            host,
            operation: Operation::from_code(operation),
            permission: Permission::from_code(permission),
        })
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        let name_ok = match (&self.pattern, &self.resource_name) {
            (PatternFilter::Match, Some(name)) => b.pattern_matches(b.resource_type, name),
            (PatternFilter::Exactly(p), name) => {
                b.pattern_type == *p && name.as_ref().is_none_or(|n| *n == b.resource_name)
            }
            (_, name) => name.as_ref().is_none_or(|n| *n == b.resource_name),
        };
        name_ok
            && self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: ResourceType, name: &str, pt: PatternType, who: &str, op: Operation, perm: Permission) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn may(acls: &[AclBinding], who: &str, op: Operation, rt: ResourceType, name: &str) -> bool {
        let settings = AuthorizerSettings { super_users: vec!["User:admin".into()], allow_if_no_acl: false };
        authorize(acls, &settings, &Requester { principal: who, host: "10.0.0.1" }, op, rt, name)
    }

    #[test]
    fn the_authorization_rule() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let acls = vec![
            acl(Topic, "orders", Literal, "User:alice", Read, Allow),
            acl(Topic, "payments-", Prefixed, "User:alice", Write, Allow),
            acl(Topic, "payments-secret", Literal, "User:alice", All, Deny),
            acl(Topic, "*", Literal, "User:*", Describe, Allow),
            acl(Group, "g", Literal, "User:bob", All, Allow),
            acl(Topic, "configs", Literal, "User:bob", AlterConfigs, Allow),
        ];
        assert!(may(&acls, "User:alice", Read, Topic, "orders"));
        assert!(!may(&acls, "User:alice", Write, Topic, "orders"));
        assert!(!may(&acls, "User:bob", Read, Topic, "orders"));
        assert!(may(&acls, "User:alice", Write, Topic, "payments-eu"), "prefixed");
        assert!(may(&acls, "User:alice", Describe, Topic, "payments-eu"), "Write implies Describe");
        assert!(!may(&acls, "User:alice", Write, Topic, "payments-secret"), "deny wins");
        assert!(!may(&acls, "User:alice", Describe, Topic, "payments-secret"), "deny ALL wins over User:* describe");
        assert!(may(&acls, "User:carol", Describe, Topic, "anything"), "User:* on *");
        assert!(may(&acls, "User:bob", Read, Group, "g"), "ALL");
        assert!(may(&acls, "User:bob", DescribeConfigs, Topic, "configs"), "AlterConfigs implies DescribeConfigs");
        assert!(!may(&acls, "User:bob", Read, Group, "h"), "no ACL for the resource: denied by default");
        assert!(may(&acls, "User:admin", Delete, Cluster, "kafka-cluster"), "super user");
        let open = AuthorizerSettings { super_users: vec![], allow_if_no_acl: true };
        let who = Requester { principal: "User:x", host: "h" };
        assert!(authorize(&acls, &open, &who, Read, Group, "h"), "allow.everyone.if.no.acl.found");
        assert!(!authorize(&acls, &open, &who, Read, Topic, "orders"), "…but not where ACLs exist");
        // Host.
        let host = vec![AclBinding { host: "10.0.0.2".into(), ..acl(Topic, "t", Literal, "User:h", Read, Allow) }];
        assert!(!may(&host, "User:h", Read, Topic, "t"));
    }

    #[test]
    fn filters() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let a = acl(Topic, "pay-", Prefixed, "User:alice", Write, Allow);
        let any = AclFilter::from_codes(1, None, 1, None, None, 1, 1).unwrap();
        assert!(any.matches(&a));
        let matching = AclFilter::from_codes(2, Some("pay-eu".into()), 2, None, None, 1, 1).unwrap();
        assert!(matching.matches(&a));
        let literal = AclFilter::from_codes(2, Some("pay-".into()), 3, None, None, 1, 1).unwrap();
        assert!(!literal.matches(&a));
        let prefixed = AclFilter::from_codes(2, Some("pay-".into()), 4, Some("User:alice".into()), None, 4, 3).unwrap();
        assert!(prefixed.matches(&a));
        let deny = AclFilter::from_codes(1, None, 1, None, None, 1, 2).unwrap();
        assert!(!deny.matches(&a));
        assert!(AclFilter::from_codes(99, None, 1, None, None, 1, 1).is_err());
        let _ = (Read, Literal, Deny, Group);
    }
}
