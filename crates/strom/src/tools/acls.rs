//! `strom acls`: the flags and output of Kafka's `kafka-acls.sh`.
//!
//! ```text
//! strom acls --bootstrap-server HOST:PORT --add --allow-principal User:alice --operation Read \
//!     --topic orders --group billing [--resource-pattern-type prefixed]
//! strom acls --bootstrap-server HOST:PORT --add --producer --allow-principal User:app --topic orders
//! strom acls --bootstrap-server HOST:PORT --add --consumer --allow-principal User:app --topic orders --group g
//! strom acls --bootstrap-server HOST:PORT --list [--topic orders] [--principal User:alice]
//! strom acls --bootstrap-server HOST:PORT --remove --allow-principal User:alice --operation Read --topic orders
//! ```

use anyhow::{bail, Context};
use strom_metadata::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use strom_protocol::kafka_protocol::messages::create_acls_request::AclCreation;
use strom_protocol::kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use strom_protocol::kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use strom_protocol::values::str_bytes;

use super::cluster::{error_name, Cluster};

/// Kafka's name for `code`, with the server's message when it gave one.
fn message(code: i16, text: Option<&str>) -> String {
    match text.filter(|t| !t.is_empty()) {
        Some(t) => format!("{}: {t}", error_name(code)),
        None => error_name(code).to_string(),
    }
}

const ACLS_VERSION: i16 = 2;
const ANY: i8 = 1;

#[derive(clap::Args, Debug)]
pub struct AclsArgs {
    /// The Kafka server(s) to connect to: host:port,…
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    /// Client properties (Kafka's): security.protocol, ssl.truststore.location, sasl.mechanism,
    /// sasl.jaas.config.
    #[arg(long, value_name = "FILE")]
    command_config: Option<std::path::PathBuf>,
    /// Add ACLs.
    #[arg(long)]
    add: bool,
    /// Remove ACLs.
    #[arg(long)]
    remove: bool,
    /// List ACLs (of the resources given, or all).
    #[arg(long)]
    list: bool,
    /// Principals to allow (User:alice). Repeatable.
    #[arg(long)]
    allow_principal: Vec<String>,
    /// Principals to deny. Repeatable.
    #[arg(long)]
    deny_principal: Vec<String>,
    /// Hosts the allow ACLs apply to (default *).
    #[arg(long)]
    allow_host: Vec<String>,
    /// Hosts the deny ACLs apply to (default *).
    #[arg(long)]
    deny_host: Vec<String>,
    /// Operations: Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs,
    /// AlterConfigs, IdempotentWrite, All. Repeatable.
    #[arg(long)]
    operation: Vec<String>,
    /// Topics (`*`: all). Repeatable.
    #[arg(long)]
    topic: Vec<String>,
    /// Consumer groups (`*`: all). Repeatable.
    #[arg(long)]
    group: Vec<String>,
    /// The cluster resource.
    #[arg(long)]
    cluster: bool,
    /// Transactional ids. Repeatable.
    #[arg(long)]
    transactional_id: Vec<String>,
    /// literal (default) or prefixed; with --list/--remove also any or match.
    #[arg(long, default_value = "literal")]
    resource_pattern_type: String,
    /// With --list: only this principal's ACLs.
    #[arg(long)]
    principal: Option<String>,
    /// Convenience: what a producer needs (Write, Describe, Create on the topics).
    #[arg(long)]
    producer: bool,
    /// With --producer: IdempotentWrite on the cluster too.
    #[arg(long)]
    idempotent: bool,
    /// Convenience: what a consumer needs (Read, Describe on the topics; Read on the groups).
    #[arg(long)]
    consumer: bool,
    /// Remove without asking (this tool never asks).
    #[arg(long)]
    force: bool,
}

fn resources(args: &AclsArgs) -> Vec<(ResourceType, String)> {
    let mut out: Vec<(ResourceType, String)> = Vec::new();
    out.extend(args.topic.iter().map(|t| (ResourceType::Topic, t.clone())));
    out.extend(args.group.iter().map(|g| (ResourceType::Group, g.clone())));
    out.extend(args.transactional_id.iter().map(|t| (ResourceType::TransactionalId, t.clone())));
    if args.cluster {
        out.push((ResourceType::Cluster, "kafka-cluster".into()));
    }
    out
}

fn operations(args: &AclsArgs) -> anyhow::Result<Vec<Operation>> {
    args.operation
        .iter()
        .map(|o| Operation::from_name(o).with_context(|| format!("--operation {o}: unknown operation")))
        .collect()
}

/// The bindings --add or --remove names.
fn bindings(args: &AclsArgs, pattern: PatternType) -> anyhow::Result<Vec<AclBinding>> {
    let mut wanted: Vec<(ResourceType, String, Operation)> = Vec::new();
    for (rt, name) in resources(args) {
        for op in operations(args)? {
            wanted.push((rt, name.clone(), op));
        }
    }
    if args.producer {
        for t in &args.topic {
            for op in [Operation::Write, Operation::Describe, Operation::Create] {
                wanted.push((ResourceType::Topic, t.clone(), op));
            }
        }
        if args.idempotent {
            wanted.push((ResourceType::Cluster, "kafka-cluster".into(), Operation::IdempotentWrite));
        }
    }
    if args.consumer {
        if args.group.is_empty() {
            bail!("--consumer needs --group");
        }
        for t in &args.topic {
            for op in [Operation::Read, Operation::Describe] {
                wanted.push((ResourceType::Topic, t.clone(), op));
            }
        }
        for g in &args.group {
            wanted.push((ResourceType::Group, g.clone(), Operation::Read));
        }
    }
    if wanted.is_empty() {
        bail!("name a resource (--topic, --group, --cluster, --transactional-id) and --operation, or use --producer / --consumer");
    }
    let hosts = |hs: &[String]| if hs.is_empty() { vec!["*".to_string()] } else { hs.to_vec() };
    let mut out = Vec::new();
    for (permission, principals, hosts) in [
        (Permission::Allow, &args.allow_principal, hosts(&args.allow_host)),
        (Permission::Deny, &args.deny_principal, hosts(&args.deny_host)),
    ] {
        for principal in principals {
            for host in &hosts {
                for (rt, name, op) in &wanted {
                    out.push(AclBinding {
                        resource_type: *rt,
                        resource_name: name.clone(),
                        pattern_type: pattern,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: *op,
                        permission,
                    });
                }
            }
        }
    }
    if out.is_empty() {
        bail!("--allow-principal or --deny-principal is required");
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn pattern_code(p: &str) -> anyhow::Result<i8> {
    Ok(match p.to_ascii_lowercase().as_str() {
        "any" => 1,
        "match" => 2,
        "literal" => 3,
        "prefixed" => 4,
        other => bail!("--resource-pattern-type {other}: literal, prefixed, any or match"),
    })
}

fn describe(b: &AclBinding) -> String {
    format!(
        "(principal={}, host={}, operation={}, permissionType={})",
        b.principal,
        b.host,
        b.operation.name().to_ascii_uppercase(),
        if b.permission == Permission::Allow { "ALLOW" } else { "DENY" }
    )
}

fn resource_line(rt: i8, name: &str, pt: i8) -> String {
    let rt = match ResourceType::from_code(rt) {
        Some(ResourceType::Topic) => "TOPIC",
        Some(ResourceType::Group) => "GROUP",
        Some(ResourceType::Cluster) => "CLUSTER",
        Some(ResourceType::TransactionalId) => "TRANSACTIONAL_ID",
        Some(ResourceType::DelegationToken) => "DELEGATION_TOKEN",
        Some(ResourceType::User) => "USER",
        None => "UNKNOWN",
    };
    let pt = if pt == 4 { "PREFIXED" } else { "LITERAL" };
    format!("Current ACLs for resource `ResourcePattern(resourceType={rt}, name={name}, patternType={pt})`: ")
}

pub async fn run(args: AclsArgs) -> anyhow::Result<()> {
    if [args.add, args.remove, args.list].iter().filter(|x| **x).count() != 1 {
        bail!("exactly one of --add, --remove, --list is required");
    }
    let pattern = pattern_code(&args.resource_pattern_type)?;
    let security = super::cluster::command_config(args.command_config.as_deref())?;
    let mut cluster = Cluster::connect_with(&args.bootstrap_server, security).await?;
    if args.add {
        let pattern =
            PatternType::from_code(pattern).context("--add takes --resource-pattern-type literal or prefixed")?;
        let bs = bindings(&args, pattern)?;
        let mut req = CreateAclsRequest::default();
        req.creations = bs
            .iter()
            .map(|b| {
                let mut c = AclCreation::default();
                c.resource_type = b.resource_type.code();
                c.resource_name = str_bytes(&b.resource_name);
                c.resource_pattern_type = b.pattern_type.code();
                c.principal = str_bytes(&b.principal);
                c.host = str_bytes(&b.host);
                c.operation = b.operation.code();
                c.permission_type = b.permission.code();
                c
            })
            .collect();
        let resp = cluster.send(ACLS_VERSION, &req).await?;
        for (b, r) in bs.iter().zip(&resp.results) {
            if r.error_code != 0 {
                bail!("{}: {}", describe(b), message(r.error_code, r.error_message.as_deref()));
            }
        }
        println!("Adding ACLs for resources:");
        for b in &bs {
            println!(" \t{}", describe(b));
        }
        return Ok(());
    }
    if args.remove {
        let pattern =
            PatternType::from_code(pattern).context("--remove takes --resource-pattern-type literal or prefixed")?;
        let mut req = DeleteAclsRequest::default();
        req.filters = bindings(&args, pattern)?
            .iter()
            .map(|b| {
                let mut f = DeleteAclsFilter::default();
                f.resource_type_filter = b.resource_type.code();
                f.resource_name_filter = Some(str_bytes(&b.resource_name));
                f.pattern_type_filter = b.pattern_type.code();
                f.principal_filter = Some(str_bytes(&b.principal));
                f.host_filter = Some(str_bytes(&b.host));
                f.operation = b.operation.code();
                f.permission_type = b.permission.code();
                f
            })
            .collect();
        let resp = cluster.send(ACLS_VERSION, &req).await?;
        let mut removed = 0;
        for r in &resp.filter_results {
            if r.error_code != 0 {
                bail!("{}", message(r.error_code, r.error_message.as_deref()));
            }
            removed += r.matching_acls.len();
        }
        println!("Removed {removed} ACLs.");
        return Ok(());
    }
    // --list: the named resources (or everything), optionally one principal's.
    let named = resources(&args);
    let filters: Vec<(i8, Option<String>)> = if named.is_empty() {
        vec![(ANY, None)]
    } else {
        named.into_iter().map(|(rt, n)| (rt.code(), Some(n))).collect()
    };
    for (rt, name) in filters {
        let mut req = DescribeAclsRequest::default();
        req.resource_type_filter = rt;
        req.resource_name_filter = name.as_deref().map(str_bytes);
        req.pattern_type_filter = if name.is_some() { pattern } else { ANY };
        req.principal_filter = args.principal.as_deref().map(str_bytes);
        req.host_filter = None; // null is "any host" (the codec's default is "", a host no ACL has)
        req.operation = ANY;
        req.permission_type = ANY;
        let resp = cluster.send(ACLS_VERSION, &req).await?;
        if resp.error_code != 0 {
            bail!("{}", message(resp.error_code, resp.error_message.as_deref()));
        }
        for r in resp.resources {
            println!("{}", resource_line(r.resource_type, r.resource_name.as_str(), r.pattern_type));
            for a in r.acls {
                let b = AclBinding {
                    resource_type: ResourceType::Topic,
                    resource_name: String::new(),
                    pattern_type: PatternType::Literal,
                    principal: a.principal.to_string(),
                    host: a.host.to_string(),
                    operation: Operation::from_code(a.operation).unwrap_or(Operation::All),
                    permission: Permission::from_code(a.permission_type).unwrap_or(Permission::Deny),
                };
                println!(" \t{}", describe(&b));
            }
            println!();
        }
    }
    Ok(())
}
