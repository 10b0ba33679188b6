//! Dynamic broker configs: what a BROKER resource of IncrementalAlterConfigs / AlterConfigs
//! may change while a node runs, the check a change passes before it is forwarded to the
//! controller, and how a broker applies what was committed.
//!
//! **Rules (Kafka's dynamic SSL update, and nothing else):**
//! - The keys are per broker (`resource_name` = the broker's node id, the request sent to that
//!   broker, as Kafka's admin client does): `listener.name.<listener>.<key>` for one of this
//!   broker's TLS listeners (its name in lower case), `<key>` one of its keystore or truststore keys
//!   ([`strom_security::tls::RECONFIGURABLE_KEYS`]). Operations SET and DELETE. (The
//!   controller refuses any other key of a BROKER resource too, whoever forwards it.)
//! - Anything else is refused with INVALID_REQUEST naming the keys, never stored and
//!   ignored: the cluster-wide default (an empty `resource_name`), another broker's id, any
//!   other key (Strom applies the rest of its settings at start only). A key already stored
//!   (by an older Strom) may always be deleted.
//! - Every listener whose keys the change alters must still make a working TLS configuration
//!   here, by `ListenerTls`'s rule (files read, key matching its certificate, the same
//!   subject and alternative names unless `ssl.allow.dn.changes` / `ssl.allow.san.changes`);
//!   otherwise INVALID_REQUEST and nothing is stored.
//! - Once committed to the metadata log, each broker lays its own keys over its configuration
//!   ([`overrides`], applied by the node's certificate watcher within 2 s, and again after a
//!   restart): new connections get the new certificates, open ones keep theirs.

use std::collections::BTreeMap;

use strom_metadata::image::MetadataImage;

/// Kafka's code for a refused dynamic config.
pub const INVALID_REQUEST: i16 = 42;
/// Kafka's code for APPEND / SUBTRACT on a key that is not a list.
pub const INVALID_CONFIG: i16 = 40;

pub use strom_security::tls::reconfigurable;

/// The dynamic keys of `listener` for `node_id` in `image` (without the listener prefix).
pub fn overrides(image: &MetadataImage, node_id: i32, listener: &str) -> BTreeMap<String, String> {
    image.broker_configs.get(&node_id).map(|keys| prefixed(keys, listener)).unwrap_or_default()
}

/// The reconfigurable keys of `listener` among `keys` (without the listener prefix).
fn prefixed(keys: &BTreeMap<String, String>, listener: &str) -> BTreeMap<String, String> {
    let lower = listener.to_ascii_lowercase();
    keys.iter()
        .filter_map(|(k, v)| match reconfigurable(k) {
            Some((l, key)) if l == lower => Some((key.to_string(), v.clone())),
            _ => None,
        })
        .collect()
}

/// Whether `key`, stored for this broker, is in effect (shown by DescribeConfigs).
pub fn in_effect(listeners: &BTreeMap<String, std::sync::Arc<strom_security::reload::ListenerTls>>, key: &str) -> bool {
    reconfigurable(key).is_some_and(|(l, _)| listeners.keys().any(|n| n.to_ascii_lowercase() == l))
}

/// Checks a change of BROKER resource `resource_name` on broker `node_id`: `changes` are
/// (key, `Some(value)` to set, `None` to delete); with `replace` (AlterConfigs) the keys not
/// named are removed. `Err`: the message of the INVALID_REQUEST answer.
pub fn check(
    node_id: i32,
    listeners: &BTreeMap<String, std::sync::Arc<strom_security::reload::ListenerTls>>,
    image: &MetadataImage,
    resource_name: &str,
    changes: &[(String, Option<String>)],
    replace: bool,
) -> Result<(), String> {
    if resource_name.is_empty() {
        return Err("cluster-wide dynamic broker configs are not served: Strom changes only a broker's own \
                    listeners' keystores and truststores while it runs (per broker id); set other keys in \
                    each node's configuration"
            .into());
    }
    if resource_name != node_id.to_string() {
        return Err(format!("Unexpected broker id, expected {node_id} or empty string, but received {resource_name}"));
    }
    let stored = image.broker_configs.get(&node_id);
    let not_dynamic: Vec<&str> = changes
        .iter()
        .filter(|(k, v)| !(v.is_none() && stored.is_some_and(|s| s.contains_key(k))))
        .map(|(k, _)| k.as_str())
        .filter(|k| !in_effect(listeners, k))
        .collect();
    if !not_dynamic.is_empty() {
        let listeners: Vec<String> = listeners.keys().map(|l| l.to_ascii_lowercase()).collect();
        return Err(format!(
            "Invalid config value for resource ConfigResource(type=BROKER, name='{resource_name}'): Cannot update \
             these configs dynamically: {not_dynamic:?} (Strom changes only listener.name.<listener>.ssl.keystore.* \
             and ssl.truststore.* of this broker's TLS listeners {listeners:?} while it runs)"
        ));
    }
    // The broker's dynamic keys before and after the change; each listener whose keys differ
    // must still build.
    let before: BTreeMap<String, String> = stored.cloned().unwrap_or_default();
    let mut after = if replace { BTreeMap::new() } else { before.clone() };
    for (k, v) in changes {
        match v {
            Some(v) => after.insert(k.clone(), v.clone()),
            None => after.remove(k),
        };
    }
    for (name, tls) in listeners {
        let of = |keys: &BTreeMap<String, String>| prefixed(keys, name);
        let overrides = of(&after);
        if overrides == of(&before) {
            continue;
        }
        tls.validate(&overrides).map_err(|e| {
            format!("Validation of dynamic config update of the SSL configuration of listener {name} failed: {e}")
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listener_keystore_and_truststore_keys_are_reconfigurable() {
        assert_eq!(
            reconfigurable("listener.name.external.ssl.keystore.location"),
            Some(("external", "ssl.keystore.location"))
        );
        assert_eq!(
            reconfigurable("listener.name.external.ssl.truststore.password").map(|x| x.1),
            Some("ssl.truststore.password")
        );
        assert_eq!(reconfigurable("listener.name.external.ssl.client.auth"), None);
        assert_eq!(reconfigurable("ssl.keystore.location"), None);
        assert_eq!(reconfigurable("log.retention.ms"), None);
        assert_eq!(reconfigurable("listener.name..ssl.keystore.location"), None);
        // Kafka's prefix holds the listener name in lower case.
        assert_eq!(reconfigurable("listener.name.SSL.ssl.keystore.location"), None);
    }

    #[test]
    fn other_brokers_the_cluster_default_and_other_keys_are_refused() {
        let image = MetadataImage::default();
        let none = BTreeMap::new();
        let set = |k: &str| vec![(k.to_string(), Some("1000".to_string()))];
        let e = check(1, &none, &image, "", &set("log.retention.ms"), false).unwrap_err();
        assert!(e.contains("cluster-wide"), "{e}");
        let e = check(1, &none, &image, "2", &set("log.retention.ms"), false).unwrap_err();
        assert!(e.contains("expected 1"), "{e}");
        let e = check(1, &none, &image, "1", &set("log.retention.ms"), false).unwrap_err();
        assert!(e.contains("Cannot update these configs dynamically") && e.contains("log.retention.ms"), "{e}");
        // A reconfigurable key of a listener this broker has no TLS on.
        let e = check(1, &none, &image, "1", &set("listener.name.plaintext.ssl.keystore.location"), false).unwrap_err();
        assert!(e.contains("listener.name.plaintext.ssl.keystore.location"), "{e}");
    }
}
