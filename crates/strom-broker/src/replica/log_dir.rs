//! The log directory's health.
//!
//! **Rule (Kafka's log-directory failure, and why):** once a write or an fsync to the log
//! directory failed, nothing it holds can be trusted to be durable: a failed fsync may have
//! dropped dirty pages, and a retry may then "succeed" over the hole. So the first I/O error
//! takes the directory offline for good (until the process restarts and recovery checks every
//! segment): every later append is refused with KAFKA_STORAGE_ERROR, no shutdown marker is
//! written (the next start recovers instead of trusting the files), and the node is told
//! through [`LogDirHealth::failed`], which stops the broker (Kafka halts a broker whose last
//! log directory failed) so the controller moves its leaderships to the other replicas. The
//! write that failed was never acknowledged.

use std::sync::OnceLock;

use strom_storage::LogError;
use tokio_util::sync::CancellationToken;

/// Whether the log directory still takes writes; shared by the manager and every partition.
#[derive(Debug, Default)]
pub struct LogDirHealth {
    failure: OnceLock<String>,
    offline: CancellationToken,
}

impl LogDirHealth {
    /// Takes the directory offline if `e` is an I/O failure (other errors are about the
    /// request, not the disk). Returns `e` for the caller to pass on.
    pub fn check<E: AsLogError>(&self, node_id: i32, what: &str, e: E) -> E {
        if let Some(LogError::Io { .. }) = e.as_log_error() {
            let message = format!("{what}: {}", e.as_log_error().map(|l| l.to_string()).unwrap_or_default());
            if self.failure.set(message.clone()).is_ok() {
                tracing::error!(node = node_id, error = %message, "log directory failed: it is offline, the broker stops");
                self.offline.cancel();
            }
        }
        e
    }

    /// True once a write or fsync failed.
    pub fn is_offline(&self) -> bool {
        self.offline.is_cancelled()
    }

    /// Waits for the directory to fail; the first failure's description.
    pub async fn failed(&self) -> String {
        self.offline.cancelled().await;
        self.failure.get().cloned().unwrap_or_default()
    }
}

/// Errors that may carry a storage failure.
pub trait AsLogError {
    fn as_log_error(&self) -> Option<&LogError>;
}

impl AsLogError for LogError {
    fn as_log_error(&self) -> Option<&LogError> {
        Some(self)
    }
}

impl AsLogError for super::ReplicaError {
    fn as_log_error(&self) -> Option<&LogError> {
        match self {
            super::ReplicaError::Log(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_io_errors_take_the_directory_offline() {
        let h = LogDirHealth::default();
        let _ = h.check(1, "append", LogError::Empty);
        assert!(!h.is_offline());
        let io = LogError::Io { path: "/d/0.log".into(), source: std::io::Error::other("EIO") };
        let _ = h.check(1, "append", io);
        assert!(h.is_offline());
        let failure = futures_lite_block_on(h.failed());
        assert!(failure.contains("append") && failure.contains("EIO"), "{failure}");
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }
}
