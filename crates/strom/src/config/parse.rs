//! Typed readers for single values. Each error names its key and quotes the bad value.

use std::collections::BTreeMap;

use super::{ConfigError, RawConfig, Roles};

/// `NAME://host:port` from `listeners` / `advertised.listeners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    /// Empty means all interfaces (as in Kafka).
    pub host: String,
    pub port: u16,
    pub security_protocol: String,
}

impl Listener {
    /// `host:port` suitable for binding (an empty host binds every interface).
    pub fn bind_addr(&self) -> String {
        let host = if self.host.is_empty() { "0.0.0.0" } else { &self.host };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// One controller quorum voter, `id@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

pub(super) fn bad(r: &RawConfig, key: &str, reason: &str) -> ConfigError {
    ConfigError::BadValue {
        key: key.to_string(),
        value: r.get(key).unwrap_or("").to_string(),
        reason: reason.to_string(),
    }
}

fn required<'a>(r: &'a RawConfig, key: &str) -> Result<&'a str, ConfigError> {
    r.get(key).map(str::trim).ok_or_else(|| bad(r, key, "must be set"))
}

pub(super) fn int<T: std::str::FromStr>(r: &RawConfig, key: &str) -> Result<T, ConfigError> {
    required(r, key)?.parse::<T>().map_err(|_| bad(r, key, "expected an integer"))
}

/// `log.cleanup.policy`: (compact, delete).
pub(super) fn cleanup_policy(r: &RawConfig) -> Result<(bool, bool), ConfigError> {
    let policies = list(r, "log.cleanup.policy");
    if policies.is_empty() || policies.iter().any(|p| p != "compact" && p != "delete") {
        return Err(bad(r, "log.cleanup.policy", "expected delete, compact, or compact,delete"));
    }
    Ok((policies.iter().any(|p| p == "compact"), policies.iter().any(|p| p == "delete")))
}

/// A number (Kafka's doubles) within `[min, max]`.
pub(super) fn double_in(r: &RawConfig, key: &str, min: f64, max: f64) -> Result<f64, ConfigError> {
    let v: f64 = required(r, key)?.trim().parse().map_err(|_| bad(r, key, "expected a number"))?;
    if !(min..=max).contains(&v) {
        return Err(bad(r, key, &format!("must be between {min} and {max}")));
    }
    Ok(v)
}

pub(super) fn int_in(r: &RawConfig, key: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let v: i64 = int(r, key)?;
    if v < min || v > max {
        return Err(bad(r, key, &format!("must be between {min} and {max}")));
    }
    Ok(v)
}

pub(super) fn int_at_least(r: &RawConfig, key: &str, min: u64) -> Result<u64, ConfigError> {
    let v: i64 = int(r, key)?;
    if v < 0 || (v as u64) < min {
        return Err(bad(r, key, &format!("must be at least {min}")));
    }
    Ok(v as u64)
}

/// A timestamp bound in ms; Kafka's default, Long.MAX_VALUE, is no bound.
pub(super) fn timestamp_bound(r: &RawConfig, key: &str) -> Result<Option<u64>, ConfigError> {
    let v = int_at_least(r, key, 0)?;
    Ok((v < i64::MAX as u64).then_some(v))
}

/// A limit where -1 means "none".
pub(super) fn optional_limit(r: &RawConfig, key: &str) -> Result<Option<u64>, ConfigError> {
    let v: i64 = int(r, key)?;
    match v {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v as u64)),
        _ => Err(bad(r, key, "must be -1 (no limit) or 0 or greater")),
    }
}

/// Kafka's ms / minutes / hours triplets: the most precise key that is set wins; -1 means
/// "no limit" (`None`).
pub(super) fn ms_with_fallback(
    r: &RawConfig,
    ms_key: &str,
    minutes_key: Option<&str>,
    hours_key: &str,
) -> Result<Option<u64>, ConfigError> {
    let (key, factor) = if r.get(ms_key).is_some() {
        (ms_key, 1)
    } else if let Some(m) = minutes_key.filter(|m| r.get(m).is_some()) {
        (m, 60_000)
    } else {
        (hours_key, 3_600_000)
    };
    let v: i64 = int(r, key)?;
    match v {
        -1 => Ok(None),
        v if v >= 0 => (v as u64).checked_mul(factor).map(Some).ok_or_else(|| bad(r, key, "too large")),
        _ => Err(bad(r, key, "must be -1 (no limit) or 0 or greater")),
    }
}

pub(super) fn boolean(r: &RawConfig, key: &str) -> Result<bool, ConfigError> {
    match required(r, key)?.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(r, key, "expected true or false")),
    }
}

pub(super) fn list(r: &RawConfig, key: &str) -> Vec<String> {
    r.get(key).unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

pub(super) fn roles(r: &RawConfig) -> Result<Roles, ConfigError> {
    let mut roles = Roles { broker: false, controller: false };
    for role in list(r, "process.roles") {
        match role.as_str() {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            _ => return Err(bad(r, "process.roles", "expected broker, controller, or broker,controller")),
        }
    }
    if !roles.broker && !roles.controller {
        return Err(bad(r, "process.roles", "expected broker, controller, or broker,controller"));
    }
    Ok(roles)
}

fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some((host.to_string(), port.parse().ok()?))
}

pub(super) fn voters(r: &RawConfig, v: &str) -> Result<Vec<Voter>, ConfigError> {
    let key = "controller.quorum.voters";
    let mut out: Vec<Voter> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once('@').and_then(|(id, hp)| {
            let id: i32 = id.trim().parse().ok().filter(|id| *id >= 0)?;
            let (host, port) = host_port(hp.trim())?;
            (!host.is_empty() && port != 0).then_some(Voter { id, host, port })
        });
        let voter = parsed.ok_or_else(|| bad(r, key, &format!("{item:?} is not id@host:port")))?;
        if out.iter().any(|o| o.id == voter.id) {
            return Err(bad(r, key, &format!("voter id {} appears twice", voter.id)));
        }
        out.push(voter);
    }
    Ok(out)
}

pub(super) fn protocol_map(r: &RawConfig) -> Result<BTreeMap<String, String>, ConfigError> {
    let key = "listener.security.protocol.map";
    let mut map = BTreeMap::new();
    for item in list(r, key) {
        let (name, proto) =
            item.split_once(':').ok_or_else(|| bad(r, key, &format!("{item:?} is not NAME:PROTOCOL")))?;
        let proto = proto.trim().to_ascii_uppercase();
        if !["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&proto.as_str()) {
            return Err(bad(r, key, &format!("unknown security protocol {proto}")));
        }
        map.insert(name.trim().to_ascii_uppercase(), proto);
    }
    Ok(map)
}

pub(super) fn listeners(
    r: &RawConfig,
    key: &str,
    protocols: &BTreeMap<String, String>,
) -> Result<Vec<Listener>, ConfigError> {
    let v = required(r, key)?;
    listeners_from(r, key, v, protocols)
}

pub(super) fn listeners_from(
    r: &RawConfig,
    key: &str,
    v: &str,
    protocols: &BTreeMap<String, String>,
) -> Result<Vec<Listener>, ConfigError> {
    let mut out: Vec<Listener> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, hp) =
            item.split_once("://").ok_or_else(|| bad(r, key, &format!("{item:?} is not NAME://host:port")))?;
        let name = name.trim().to_ascii_uppercase();
        let (host, port) = host_port(hp).ok_or_else(|| bad(r, key, &format!("{item:?} is not NAME://host:port")))?;
        let security_protocol = protocols
            .get(&name)
            .cloned()
            .ok_or_else(|| bad(r, key, &format!("listener {name} is not in listener.security.protocol.map")))?;
        if out.iter().any(|l| l.name == name) {
            return Err(bad(r, key, &format!("listener {name} appears twice")));
        }
        if port != 0 && out.iter().any(|l| l.port == port && l.host == host) {
            return Err(bad(r, key, &format!("port {port} is used twice")));
        }
        out.push(Listener { name, host, port, security_protocol });
    }
    if out.is_empty() {
        return Err(bad(r, key, "must name at least one listener"));
    }
    Ok(out)
}
