//! Certificates replaced without a restart.
//!
//! A listener's TLS in use is a [`ListenerTls`]: its settings and the rustls configurations
//! built from them, each held in a [`Shared`] cell that connections read when they start.
//! [`ListenerTls::reload_if_changed`] reads the keystore and truststore files again and, when
//! their bytes changed, builds new configurations and swaps them in: connections made after
//! that use the new certificates, connections already open keep theirs (as Kafka's dynamic
//! keystore update). A change that does not make a working configuration (a key written
//! before its certificate, a bad password) is refused and the old configuration stays; the
//! next check tries again.
//!
//! A listener's keystore and truststore keys ([`crate::tls::RECONFIGURABLE_KEYS`]) may also
//! be changed while it runs, as Kafka's dynamic broker configs
//! (`listener.name.<listener>.ssl.keystore.location` set with IncrementalAlterConfigs):
//! [`ListenerTls::reconfigure`] lays them over the keys the node started with, builds the
//! configurations (refusing what does not work, the old ones staying) and from then on
//! watches the new files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use rustls::{ClientConfig, ServerConfig};

use crate::tls::{CertificateIdentity, TlsError, TlsSettings};

/// A value replaced in place while readers hold on to the one they took (a rustls config).
pub struct Shared<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(..)")
    }
}

impl<T> Shared<T> {
    pub fn new(value: Arc<T>) -> Self {
        Shared(Arc::new(RwLock::new(value)))
    }

    /// The value now.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

/// The server side of a TLS listener, as connections find it when they start.
pub type ServerTls = Shared<ServerConfig>;
/// The client side (this node reaching a TLS listener of another node).
pub type ClientTls = Shared<ClientConfig>;

/// One listener's TLS: the settings, the server configuration (when this node serves the
/// listener) and the client configuration (when it connects to the listener on other nodes).
///
/// **Rule (Kafka's, for a keystore replaced while the listener runs, by a file change or a
/// dynamic config):** the new certificate keeps the subject and subject alternative names of
/// the one in use unless `ssl.allow.dn.changes` / `ssl.allow.san.changes`; stores that are
/// given must read; otherwise the change is refused and the configuration in use stays.
pub struct ListenerTls {
    /// The settings the listener started with; what is not reconfigurable (client auth,
    /// protocols, principal mapping rules) stays as here.
    pub settings: TlsSettings,
    pub server: Option<ServerTls>,
    pub client: Option<ClientTls>,
    /// The listener's `ssl.*` keys from the node configuration (dynamic keys are laid over
    /// them); `None`: not reconfigurable.
    static_keys: Option<BTreeMap<String, String>>,
    current: Mutex<Current>,
}

/// What the configurations in use were built from.
struct Current {
    settings: TlsSettings,
    /// The bytes of each file of `settings`, as last read.
    loaded: Vec<Option<Vec<u8>>>,
    /// The dynamic keys laid over the static ones.
    overrides: BTreeMap<String, String>,
    /// The certificate in use's subject and alternative names.
    identity: CertificateIdentity,
}

// Key values (passwords, inline keys) never reach a log line: names only.
impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("settings", &self.settings)
            .field("server", &self.server.is_some())
            .field("client", &self.client.is_some())
            .field("static_keys", &self.static_keys.as_ref().map(|k| k.keys().collect::<Vec<_>>()))
            .field("overrides", &self.lock().overrides.keys().cloned().collect::<Vec<_>>())
            .finish()
    }
}

impl ListenerTls {
    /// Reads the files and builds the server side (`serve`) and the client side (`connect`).
    pub fn new(settings: TlsSettings, serve: bool, connect: bool) -> Result<ListenerTls, TlsError> {
        let loaded = read_all(&settings.files());
        let server = if serve { Some(Shared::new(settings.server_config()?)) } else { None };
        let client = if connect { Some(Shared::new(settings.client_config()?)) } else { None };
        let identity = settings.identity()?;
        let current = Mutex::new(Current { settings: settings.clone(), loaded, overrides: BTreeMap::new(), identity });
        Ok(ListenerTls { settings, server, client, static_keys: None, current })
    }

    /// As [`ListenerTls::new`], from the listener's `ssl.*` keys (already resolved from the
    /// per-listener overrides), which [`ListenerTls::reconfigure`] then builds on.
    pub fn from_keys(keys: BTreeMap<String, String>, serve: bool, connect: bool) -> Result<ListenerTls, TlsError> {
        let settings = TlsSettings::from_keys(|k| keys.get(k).cloned())?;
        let mut tls = ListenerTls::new(settings, serve, connect)?;
        tls.static_keys = Some(keys);
        Ok(tls)
    }

    /// The files watched.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().settings.files()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings with `overrides` (reconfigurable `ssl.*` keys) laid over the static keys.
    fn settings_with(&self, overrides: &BTreeMap<String, String>) -> Result<TlsSettings, TlsError> {
        let Some(keys) = &self.static_keys else {
            return Err(TlsError::Setting {
                key: "ssl.keystore.location".into(),
                reason: "this listener's TLS cannot be changed while it runs".into(),
            });
        };
        if let Some(k) = overrides.keys().find(|k| !crate::tls::RECONFIGURABLE_KEYS.contains(&k.as_str())) {
            return Err(TlsError::Setting { key: k.clone(), reason: "cannot be changed while the node runs".into() });
        }
        TlsSettings::from_keys(|k| overrides.get(k).or_else(|| keys.get(k)).cloned())
    }

    /// The configurations `settings` make, for the sides this listener has.
    #[allow(clippy::type_complexity)]
    fn build(
        &self,
        settings: &TlsSettings,
    ) -> Result<(Option<Arc<ServerConfig>>, Option<Arc<ClientConfig>>), TlsError> {
        let server = match &self.server {
            Some(_) => Some(settings.server_config()?),
            None => None,
        };
        let client = match &self.client {
            Some(_) => Some(settings.client_config()?),
            None => None,
        };
        Ok((server, client))
    }

    fn install(&self, server: Option<Arc<ServerConfig>>, client: Option<Arc<ClientConfig>>) {
        if let (Some(cell), Some(config)) = (&self.server, server) {
            cell.replace(config);
        }
        if let (Some(cell), Some(config)) = (&self.client, client) {
            cell.replace(config);
        }
    }

    /// Checks that `overrides` would make a working configuration (the rule above), changing
    /// nothing.
    pub fn validate(&self, overrides: &BTreeMap<String, String>) -> Result<(), TlsError> {
        let settings = self.settings_with(overrides)?;
        let identity = self.lock().identity.clone();
        self.checked(&settings, &identity).map(|_| ())
    }

    /// The configurations `settings` make, and their certificate's identity, if they pass the
    /// rule above against `current`.
    #[allow(clippy::type_complexity)]
    fn checked(
        &self,
        settings: &TlsSettings,
        current: &CertificateIdentity,
    ) -> Result<(Option<Arc<ServerConfig>>, Option<Arc<ClientConfig>>, CertificateIdentity), TlsError> {
        settings.load_all()?;
        let identity = settings.check_identity(current)?;
        let (server, client) = self.build(settings)?;
        Ok((server, client, identity))
    }

    /// Lays `overrides` (dynamic `ssl.*` keys, without the listener prefix) over the static
    /// keys and uses the result for new connections. `Ok(false)`: the same overrides are
    /// already in use; `Err`: they do not make a working configuration, the old one stays
    /// (and the same overrides are tried again at the next call).
    pub fn reconfigure(&self, overrides: &BTreeMap<String, String>) -> Result<bool, TlsError> {
        let mut current = self.lock();
        if current.overrides == *overrides {
            return Ok(false);
        }
        let settings = self.settings_with(overrides)?;
        let loaded = read_all(&settings.files());
        let (server, client, identity) = self.checked(&settings, &current.identity)?;
        self.install(server, client);
        *current = Current { settings, loaded, overrides: overrides.clone(), identity };
        Ok(true)
    }

    /// Rebuilds the configurations if a file changed since they were built. `Ok(true)`: new
    /// configurations are in use; `Ok(false)`: nothing changed; `Err`: the files changed but
    /// do not make a working configuration, and the old one stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let mut current = self.lock();
        let now = read_all(&current.settings.files());
        if current.loaded == now {
            return Ok(false);
        }
        let (server, client, identity) = self.checked(&current.settings, &current.identity)?;
        self.install(server, client);
        current.loaded = now;
        current.identity = identity;
        Ok(true)
    }
}

/// Each file's bytes (`None`: unreadable now, as while it is being replaced).
fn read_all(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(f).ok()).collect()
}
