//! Disk I/O off the async workers.
//!
//! **Rule:** a request handler or the replica fetcher whose log read or append may wait on
//! the disk does it through [`DiskIo::run`]: at most `num.io.threads` such operations at once
//! (Kafka's key: its request handler threads, which do the disk work), each on a thread that
//! is not, while it waits, one of the runtime's workers (`block_in_place` hands the worker's
//! other tasks to another thread first). So a slow disk delays the requests that touch it,
//! queued in order behind the bound, and never stalls the connections, timers and long-polls
//! the workers run. "May wait" is decided before the operation ([`DiskIo::run_if`]): a read
//! whose pages are not all in the page cache (`Log::is_cached`, by `cachestat(2)`), an append
//! that would flush, roll a segment or checkpoint a new epoch (`Log::append_may_block`), any
//! truncation. The rest (the common case: a consumer or follower reading what was just
//! written, an append to the page cache) runs in place, since handing a worker over costs a
//! thread switch per request, which cost replication half its throughput when every
//! operation paid it. The log lock itself stays a short `std` mutex held only on these threads and
//! by the background jobs that already run off the runtime (housekeeping, the cleaner).
//!
//! Synchronous callers that cannot wait for a permit use [`DiskIo::run_sync`] (off the
//! workers, outside the bound): applying a metadata image (opening and deleting logs), the
//! group coordinator's load of a partition when it becomes coordinator and its appends to
//! `__consumer_offsets` that may wait (both under its own locks). They are rare next to
//! client requests: a leadership change, a flush or a roll.

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

/// Kafka's default `num.io.threads`.
pub const DEFAULT_IO_THREADS: usize = 8;

pub struct DiskIo {
    permits: Semaphore,
}

impl Default for DiskIo {
    fn default() -> Self {
        DiskIo::new(DEFAULT_IO_THREADS)
    }
}

impl DiskIo {
    pub fn new(threads: usize) -> DiskIo {
        DiskIo { permits: Semaphore::new(threads.max(1)) }
    }

    /// [`Self::run`] when `may_block`, else the work in place (the module's rule).
    pub async fn run_if<T>(&self, may_block: bool, work: impl FnOnce() -> T) -> T {
        if may_block {
            self.run(work).await
        } else {
            work()
        }
    }

    /// Runs blocking disk work now, off the runtime's workers (on a multi-thread runtime;
    /// in place on another or outside one), without a permit: for synchronous callers (the
    /// module's rule).
    pub fn run_sync<T>(&self, work: impl FnOnce() -> T) -> T {
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
            _ => work(),
        }
    }

    /// [`Self::run_sync`] when `may_block`, else the work in place.
    pub fn run_sync_if<T>(&self, may_block: bool, work: impl FnOnce() -> T) -> T {
        if may_block {
            self.run_sync(work)
        } else {
            work()
        }
    }

    /// Runs blocking disk work once one of the `num.io.threads` permits is free, off the
    /// runtime's workers (the module's rule). On a current-thread runtime (unit tests) the
    /// work runs in place.
    pub async fn run<T>(&self, work: impl FnOnce() -> T) -> T {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.permits.acquire().await.ok();
        self.run_sync(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_bound_run_at_once_and_the_workers_stay_free() {
        let io = Arc::new(DiskIo::new(2));
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (io, running, peak) = (io.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                io.run(|| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(500)); // a slow disk
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // While the slow work holds both I/O permits, a timer on the runtime still fires on time.
        let started = std::time::Instant::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(started.elapsed() < std::time::Duration::from_millis(400), "a worker was blocked");
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
