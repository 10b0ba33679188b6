//! Dynamic broker configs: what a BROKER resource of IncrementalAlterConfigs / AlterConfigs
//! may change while a node runs, the check a change passes before it is forwarded to the
//! controller, and how a broker applies what was committed.
//!
//! **Rules (Kafka's dynamic SSL update, and nothing else):**
//! - The keys are per broker (`resource_name` = the broker's node id, the request sent to that
//!   broker, as Kafka's admin client does): `listener.name.<listener>.<key>` for one of this
//!   broker's TLS listeners, `<key>` one of its keystore or truststore keys
//!   ([`strom_security::tls::RECONFIGURABLE_KEYS`]). Operations SET and DELETE. (The
//!   controller refuses any other key of a BROKER resource too, whoever forwards it.)
//! - Anything else is refused with INVALID_REQUEST naming the keys, never stored and
//!   ignored: the cluster-wide default (an empty `resource_name`), another broker's id, any
//!   other key (Strom applies the rest of its settings at start only).
//! - The listener's keys after the change must make a working TLS configuration here (files
//!   read, key matching its certificate); otherwise INVALID_REQUEST and nothing is stored.
//! - Once committed to the metadata log, each broker lays its own keys over its configuration
//!   ([`overrides`], applied by the node's certificate watcher within 2 s, and again after a
//!   restart): new connections get the new certificates, open ones keep theirs.

use std::collections::BTreeMap;

use strom_metadata::image::MetadataImage;

/// Kafka's code for a refused dynamic config.
pub const INVALID_REQUEST: i16 = 42;

pub use strom_security::tls::reconfigurable;

/// The dynamic keys of `listener` for `node_id` in `image` (without the listener prefix).
pub fn overrides(image: &MetadataImage, node_id: i32, listener: &str) -> BTreeMap<String, String> {
    let prefix = format!("listener.name.{}.", listener.to_ascii_lowercase());
    image
        .broker_configs
        .get(&node_id)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|key| (key.to_string(), v.clone())))
        .collect()
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
    let not_dynamic: Vec<&str> = changes
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| reconfigurable(k).is_none_or(|(l, _)| !listeners.keys().any(|n| n.eq_ignore_ascii_case(l))))
        .collect();
    if !not_dynamic.is_empty() {
        let listeners: Vec<String> = listeners.keys().map(|l| l.to_ascii_lowercase()).collect();
        return Err(format!(
            "Invalid config value for resource ConfigResource(type=BROKER, name='{resource_name}'): Cannot update \
             these configs dynamically: {not_dynamic:?} (Strom changes only listener.name.<listener>.ssl.keystore.* \
             and ssl.truststore.* of this broker's TLS listeners {listeners:?} while it runs)"
        ));
    }
    // The broker's dynamic keys after the change, then each touched listener's TLS built.
    let mut after: BTreeMap<String, String> =
        if replace { BTreeMap::new() } else { image.broker_configs.get(&node_id).cloned().unwrap_or_default() };
    for (k, v) in changes {
        match v {
            Some(v) => after.insert(k.clone(), v.clone()),
            None => after.remove(k),
        };
    }
    for (name, tls) in listeners {
        let prefix = format!("listener.name.{}.", name.to_ascii_lowercase());
        if !changes.iter().any(|(k, _)| k.to_ascii_lowercase().starts_with(&prefix)) {
            continue;
        }
        let overrides: BTreeMap<String, String> =
            after.iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|key| (key.to_string(), v.clone()))).collect();
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
