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

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use rustls::{ClientConfig, ServerConfig};

use crate::tls::{TlsError, TlsSettings};

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
#[derive(Debug)]
pub struct ListenerTls {
    pub settings: TlsSettings,
    pub server: Option<ServerTls>,
    pub client: Option<ClientTls>,
    /// The bytes of each file the configurations were last built from.
    loaded: Mutex<Vec<Option<Vec<u8>>>>,
}

impl ListenerTls {
    /// Reads the files and builds the server side (`serve`) and the client side (`connect`).
    pub fn new(settings: TlsSettings, serve: bool, connect: bool) -> Result<ListenerTls, TlsError> {
        let loaded = read_all(&settings.files());
        let server = if serve { Some(Shared::new(settings.server_config()?)) } else { None };
        let client = if connect { Some(Shared::new(settings.client_config()?)) } else { None };
        Ok(ListenerTls { settings, server, client, loaded: Mutex::new(loaded) })
    }

    /// The files watched.
    pub fn files(&self) -> Vec<PathBuf> {
        self.settings.files()
    }

    /// Rebuilds the configurations if a file changed since they were built. `Ok(true)`: new
    /// configurations are in use; `Ok(false)`: nothing changed; `Err`: the files changed but
    /// do not make a working configuration, and the old one stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = read_all(&self.settings.files());
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == now {
            return Ok(false);
        }
        let server = match &self.server {
            Some(_) => Some(self.settings.server_config()?),
            None => None,
        };
        let client = match &self.client {
            Some(_) => Some(self.settings.client_config()?),
            None => None,
        };
        if let (Some(cell), Some(config)) = (&self.server, server) {
            cell.replace(config);
        }
        if let (Some(cell), Some(config)) = (&self.client, client) {
            cell.replace(config);
        }
        *loaded = now;
        Ok(true)
    }
}

/// Each file's bytes (`None`: unreadable now, as while it is being replaced).
fn read_all(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(f).ok()).collect()
}
