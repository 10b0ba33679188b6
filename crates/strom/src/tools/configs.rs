//! `strom configs`: the SCRAM-credential part of Kafka's `kafka-configs.sh` (KIP-554), and
//! the dynamic broker configs Strom serves (a TLS listener's keystore and truststore,
//! `strom_broker::dynamic_config`).
//!
//! ```text
//! strom configs --bootstrap-server HOST:PORT --alter --entity-type users --entity-name alice \
//!     --add-config 'SCRAM-SHA-256=[iterations=8192,password=alice-secret],SCRAM-SHA-512=[password=alice-secret]'
//! strom configs --bootstrap-server HOST:PORT --alter --entity-type users --entity-name alice \
//!     --delete-config 'SCRAM-SHA-512'
//! strom configs --bootstrap-server HOST:PORT --describe --entity-type users [--entity-name alice]
//! strom configs --bootstrap-server HOST:PORT --alter --entity-type brokers --entity-name 1 \
//!     --add-config listener.name.external.ssl.keystore.location=/etc/strom/new.pem
//! strom configs --bootstrap-server HOST:PORT --alter --entity-type brokers --entity-name 1 \
//!     --delete-config listener.name.external.ssl.keystore.location
//! strom configs --bootstrap-server HOST:PORT --describe --entity-type brokers --entity-name 1
//! ```
//!
//! The password never leaves this process: as Kafka's tool, it sends a random salt and the
//! salted password (PBKDF2), from which the cluster derives what it keeps.

use anyhow::{bail, Context};
use strom_protocol::kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use strom_protocol::kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use strom_protocol::kafka_protocol::messages::{AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest};
use strom_protocol::values::str_bytes;
use strom_security::sasl::scram::{random_bytes, ScramMechanism};

use super::cluster::{error_name, Cluster};

/// Kafka's name for `code`, with the server's message when it gave one.
fn message(code: i16, text: Option<&str>) -> String {
    match text.filter(|t| !t.is_empty()) {
        Some(t) => format!("{}: {t}", error_name(code)),
        None => error_name(code).to_string(),
    }
}

/// Kafka's default iterations when `iterations=` is not given.
const DEFAULT_ITERATIONS: i32 = 4096;

#[derive(clap::Args, Debug)]
pub struct ConfigsArgs {
    /// The Kafka server(s) to connect to: host:port,…
    #[arg(long, value_name = "SERVERS")]
    bootstrap_server: String,
    /// Client properties (Kafka's): security.protocol, ssl.truststore.location, sasl.mechanism,
    /// sasl.jaas.config.
    #[arg(long, value_name = "FILE")]
    command_config: Option<std::path::PathBuf>,
    /// Change the entity's configs.
    #[arg(long)]
    alter: bool,
    /// Show the entity's configs.
    #[arg(long)]
    describe: bool,
    /// The kind of entity: users (SCRAM credentials) or brokers (dynamic broker configs).
    #[arg(long)]
    entity_type: String,
    /// The entity (a user name, a broker id); with --describe of users, all when left out.
    #[arg(long)]
    entity_name: Option<String>,
    /// Users: `SCRAM-SHA-256=[iterations=N,password=P],SCRAM-SHA-512=[password=P]`;
    /// brokers: `key=value,key=[a,b],…`.
    #[arg(long)]
    add_config: Option<String>,
    /// Users: `SCRAM-SHA-256,SCRAM-SHA-512` (the credentials to remove); brokers: keys.
    #[arg(long)]
    delete_config: Option<String>,
}

/// One `MECHANISM=[key=value,…]` of --add-config: (mechanism, iterations, password).
fn parse_add_config(text: &str) -> anyhow::Result<Vec<(ScramMechanism, i32, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (name, after) =
            rest.split_once('=').with_context(|| format!("--add-config: expected MECHANISM=[...] at {rest:?}"))?;
        let m = ScramMechanism::from_name(name.trim())
            .with_context(|| format!("--add-config: {name} is not SCRAM-SHA-256 or SCRAM-SHA-512"))?;
        let body = after.strip_prefix('[').context("--add-config: expected [ after the mechanism")?;
        let (inner, tail) = body.split_once(']').context("--add-config: missing ]")?;
        let (mut iterations, mut password) = (DEFAULT_ITERATIONS, None);
        for kv in inner.split(',') {
            match kv.split_once('=') {
                Some(("iterations", v)) => iterations = v.trim().parse().context("--add-config: iterations")?,
                Some(("password", v)) => password = Some(v.to_string()),
                _ => bail!("--add-config: unknown entry {kv:?} (iterations=, password=)"),
            }
        }
        out.push((m, iterations, password.context("--add-config: password= is required")?));
        rest = tail.trim_start_matches(',').trim();
    }
    Ok(out)
}

/// `key=value,key=[a,b],…` of --add-config for brokers (Kafka's syntax: a value holding
/// commas goes in brackets).
fn parse_key_values(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) =
            rest.split_once('=').with_context(|| format!("--add-config: expected key=value at {rest:?}"))?;
        let (value, tail) = match after.strip_prefix('[') {
            Some(body) => body.split_once(']').context("--add-config: missing ]")?,
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.push((key.trim().to_string(), value.to_string()));
        rest = tail.trim_start_matches(',').trim();
    }
    Ok(out)
}

pub async fn run(args: ConfigsArgs) -> anyhow::Result<()> {
    if args.entity_type != "users" && args.entity_type != "brokers" {
        bail!(
            "--entity-type {}: users (SCRAM credentials) and brokers are served; topic configs: strom topics --alter --config",
            args.entity_type
        );
    }
    if args.alter == args.describe {
        bail!("exactly one of --alter, --describe is required");
    }
    let security = super::cluster::command_config(args.command_config.as_deref())?;
    let mut cluster = Cluster::connect_with(&args.bootstrap_server, security).await?;
    if args.entity_type == "brokers" {
        return brokers(&args, &mut cluster).await;
    }
    if args.describe {
        let mut req = DescribeUserScramCredentialsRequest::default();
        req.users = args.entity_name.as_ref().map(|n| {
            let mut u = UserName::default();
            u.name = str_bytes(n);
            vec![u]
        });
        let resp = cluster.send(0, &req).await?;
        if resp.error_code != 0 {
            bail!("{}", error_name(resp.error_code));
        }
        for r in resp.results {
            if r.error_code != 0 {
                bail!("user {}: {}", r.user.as_str(), message(r.error_code, r.error_message.as_deref()));
            }
            let creds: Vec<String> = r
                .credential_infos
                .iter()
                .map(|c| {
                    let name = ScramMechanism::from_kafka_type(c.mechanism).map_or("UNKNOWN", |m| m.name());
                    format!("{name}=iterations={}", c.iterations)
                })
                .collect();
            println!("SCRAM credential configs for user-principal '{}' are {}", r.user.as_str(), creds.join(", "));
        }
        return Ok(());
    }
    let user = args.entity_name.clone().context("--alter needs --entity-name")?;
    let mut req = AlterUserScramCredentialsRequest::default();
    for (m, iterations, password) in parse_add_config(args.add_config.as_deref().unwrap_or(""))? {
        let salt = random_bytes(32);
        let mut u = ScramCredentialUpsertion::default();
        u.name = str_bytes(&user);
        u.mechanism = m.kafka_type();
        u.iterations = iterations;
        u.salted_password = m.salted_password(password.as_bytes(), &salt, iterations.max(1) as u32).into();
        u.salt = salt.into();
        req.upsertions.push(u);
    }
    for name in args.delete_config.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let m = ScramMechanism::from_name(name)
            .with_context(|| format!("--delete-config: {name} is not SCRAM-SHA-256 or SCRAM-SHA-512"))?;
        let mut d = ScramCredentialDeletion::default();
        d.name = str_bytes(&user);
        d.mechanism = m.kafka_type();
        req.deletions.push(d);
    }
    if req.upsertions.is_empty() && req.deletions.is_empty() {
        bail!("--alter needs --add-config or --delete-config");
    }
    let resp = cluster.send(0, &req).await?;
    for r in resp.results {
        if r.error_code != 0 {
            bail!("user {}: {}", r.user.as_str(), message(r.error_code, r.error_message.as_deref()));
        }
    }
    println!("Completed updating config for user {user}.");
    Ok(())
}

/// `--entity-type brokers`: IncrementalAlterConfigs or DescribeConfigs of one broker, sent to
/// that broker (as Kafka's tool: a broker checks its own keystore before the change is stored).
async fn brokers(args: &ConfigsArgs, cluster: &mut Cluster) -> anyhow::Result<()> {
    use strom_protocol::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use strom_protocol::kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use strom_protocol::kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
    const RESOURCE_BROKER: i8 = 4;
    const DYNAMIC_BROKER_CONFIG: i8 = 2;
    let name = args.entity_name.clone().context("--entity-type brokers needs --entity-name (a broker id)")?;
    let id: i32 = name.parse().with_context(|| format!("--entity-name {name}: not a broker id"))?;
    let wait = std::time::Duration::ZERO;
    if args.describe {
        let mut r = DescribeConfigsResource::default();
        r.resource_type = RESOURCE_BROKER;
        r.resource_name = str_bytes(&name);
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![r];
        let resp = cluster.send_to(id, 1, &req, wait).await?;
        println!("Dynamic configs for broker {name} are:");
        for result in resp.results {
            if result.error_code != 0 {
                bail!("broker {name}: {}", message(result.error_code, result.error_message.as_deref()));
            }
            for c in result.configs.iter().filter(|c| c.config_source == DYNAMIC_BROKER_CONFIG) {
                let value =
                    if c.is_sensitive { "null".to_string() } else { c.value.as_deref().unwrap_or("").to_string() };
                println!("  {}={value} sensitive={}", c.name.as_str(), c.is_sensitive);
            }
        }
        return Ok(());
    }
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = RESOURCE_BROKER;
    resource.resource_name = str_bytes(&name);
    for (key, value) in parse_key_values(args.add_config.as_deref().unwrap_or(""))? {
        let mut c = AlterableConfig::default();
        c.name = str_bytes(&key);
        c.config_operation = 0; // SET
        c.value = Some(str_bytes(&value));
        resource.configs.push(c);
    }
    for key in args.delete_config.as_deref().unwrap_or("").split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let mut c = AlterableConfig::default();
        c.name = str_bytes(key);
        c.config_operation = 1; // DELETE
        resource.configs.push(c);
    }
    if resource.configs.is_empty() {
        bail!("--alter needs --add-config or --delete-config");
    }
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![resource];
    let resp = cluster.send_to(id, 0, &req, wait).await?;
    for r in resp.responses {
        if r.error_code != 0 {
            bail!("broker {name}: {}", message(r.error_code, r.error_message.as_deref()));
        }
    }
    println!("Completed updating config for broker {name}.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_add_config_as_kafka_configs_writes_it() {
        let got = parse_key_values("a.b=/x/y.pem,c=[1,2],d=").unwrap();
        assert_eq!(
            got,
            vec![("a.b".to_string(), "/x/y.pem".to_string()), ("c".into(), "1,2".into()), ("d".into(), "".into())]
        );
        assert!(parse_key_values("novalue").is_err());
        assert!(parse_key_values("k=[unclosed").is_err());
    }

    #[test]
    fn add_config_as_kafka_configs_writes_it() {
        let got = parse_add_config("SCRAM-SHA-256=[iterations=8192,password=a-b],SCRAM-SHA-512=[password=x]").unwrap();
        assert_eq!(
            got,
            vec![(ScramMechanism::Sha256, 8192, "a-b".to_string()), (ScramMechanism::Sha512, 4096, "x".to_string())]
        );
        assert!(parse_add_config("SCRAM-SHA-1=[password=x]").is_err());
        assert!(parse_add_config("SCRAM-SHA-256=[iterations=1]").is_err());
        assert!(parse_add_config("SCRAM-SHA-256=password=x").is_err());
    }
}
