//! Simulated power loss, for tests (the `failpoints` feature; without it every function here
//! only runs the operation it wraps).
//!
//! A power cut loses whatever a file gained since its last fsync: the page cache is gone.
//! Killing a process does not show that (the kernel keeps its page cache), so a node started
//! with `SIMULATE_POWER_LOSS=1` ([`arm`]) keeps, for every file it writes, the length
//! that its last fsync or fdatasync made durable, and [`cut`] (SIGUSR1 on such a node) cuts
//! every file back to that length and ends the process at once, as the machine would stop.
//!
//! **Rule:** every write, sync and truncation of a file that recovery reads (segments,
//! indexes, the Raft log, files replaced through [`crate::durable`]) goes through [`write`],
//! [`sync`] and [`truncate`]. A cut waits for writes in flight and lets none start, so it
//! never splits one.
//!
//! What it does not model: a write that reaches the disk partly (a torn sector; recovery's
//! tests cover torn tails with crafted files), metadata operations (a rename or an unlink is
//! treated as durable once it returns; every such one that matters is followed by a directory
//! fsync anyway), and a truncation undone by the cut (a truncation counts as durable).

use std::fs::File;
use std::io;

/// The exit code of a process that [`cut`] ended.
pub const EXIT_POWER_CUT: i32 = 86;

#[cfg(feature = "failpoints")]
mod tracking {
    use std::collections::HashMap;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, RwLock};

    pub static ARMED: AtomicBool = AtomicBool::new(false);
    /// Writes hold it shared; a cut holds it exclusively, until the process ends.
    pub static GATE: RwLock<()> = RwLock::new(());
    /// (device, inode) → a handle of the file and its durable length.
    static FILES: Mutex<Option<HashMap<(u64, u64), Tracked>>> = Mutex::new(None);

    struct Tracked {
        handle: OwnedFd,
        durable: u64,
    }

    fn key(m: &std::fs::Metadata) -> (u64, u64) {
        (m.dev(), m.ino())
    }

    /// Records `file` (at its current length as durable, if new) and applies `update` to its
    /// durable length. A new file also drops the deleted ones: their handles would keep them
    /// (and every atomic replacement makes a new file), so what is held stays bounded by the
    /// files that exist.
    pub fn track(file: &File, update: impl FnOnce(u64) -> u64) -> io::Result<()> {
        let m = file.metadata()?;
        let mut files = FILES.lock().unwrap_or_else(|p| p.into_inner());
        let files = files.get_or_insert_with(HashMap::new);
        if !files.contains_key(&key(&m)) {
            files.retain(|_, t| {
                t.handle.try_clone().map(File::from).and_then(|f| f.metadata()).is_ok_and(|m| m.nlink() > 0)
            });
            files.insert(key(&m), Tracked { handle: file.as_fd().try_clone_to_owned()?, durable: m.len() });
        }
        if let Some(entry) = files.get_mut(&key(&m)) {
            entry.durable = update(entry.durable);
        }
        Ok(())
    }

    /// Cuts every tracked file to its durable length; returns (files cut, bytes dropped).
    pub fn cut_all() -> (usize, u64) {
        let files = FILES.lock().unwrap_or_else(|p| p.into_inner());
        let (mut cut, mut dropped) = (0, 0);
        for t in files.iter().flat_map(|f| f.values()) {
            let Ok(handle) = t.handle.try_clone() else { continue };
            let f = File::from(handle);
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > t.durable && f.set_len(t.durable).is_ok() {
                cut += 1;
                dropped += len - t.durable;
            }
        }
        (cut, dropped)
    }

    #[cfg(test)]
    pub fn durable_len(file: &File) -> Option<u64> {
        let m = file.metadata().ok()?;
        FILES.lock().ok()?.as_ref()?.get(&key(&m)).map(|t| t.durable)
    }

    pub fn armed() -> bool {
        ARMED.load(Ordering::Relaxed)
    }
}

/// Starts tracking durable lengths (a node started with `SIMULATE_POWER_LOSS=1`).
/// Returns false in a build without the `failpoints` feature, which cannot simulate it.
pub fn arm() -> bool {
    #[cfg(feature = "failpoints")]
    {
        tracking::ARMED.store(true, std::sync::atomic::Ordering::Relaxed);
        true
    }
    #[cfg(not(feature = "failpoints"))]
    false
}

/// Runs a write to `file`. Armed, the file is tracked from its length before the write.
pub fn write<T>(file: &File, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    #[cfg(feature = "failpoints")]
    if tracking::armed() {
        let _shared = tracking::GATE.read().unwrap_or_else(|p| p.into_inner());
        tracking::track(file, |durable| durable)?;
        return op();
    }
    let _ = file;
    op()
}

/// Runs an fsync or fdatasync of `file`: what the file held before it is durable after it.
pub fn sync(file: &File, op: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    if tracking::armed() {
        let len = file.metadata()?.len();
        op()?;
        let _shared = tracking::GATE.read().unwrap_or_else(|p| p.into_inner());
        return tracking::track(file, |durable| durable.max(len));
    }
    let _ = file;
    op()
}

/// Runs a truncation of `file` to `len` (counted as durable: the module's caveat).
pub fn truncate(file: &File, len: u64, op: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    if tracking::armed() {
        let _shared = tracking::GATE.read().unwrap_or_else(|p| p.into_inner());
        op()?;
        return tracking::track(file, |durable| durable.min(len));
    }
    let _ = (file, len);
    op()
}

/// The power cut: every tracked file loses what it gained since its last sync, and the
/// process ends with [`EXIT_POWER_CUT`]. Does nothing unless armed.
pub fn cut() {
    #[cfg(feature = "failpoints")]
    if tracking::armed() {
        // Held until the process ends: no write starts after the cut.
        let _exclusive = tracking::GATE.write().unwrap_or_else(|p| p.into_inner());
        let (files, bytes) = tracking::cut_all();
        // No tracing: its writer may be mid-line on another thread, and nothing may run after.
        eprintln!("simulated power cut: {bytes} unsynced bytes dropped from {files} files");
        // SAFETY: _exit ends the process without running anything else, as a power cut would.
        unsafe { libc::_exit(EXIT_POWER_CUT) }
    }
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_synced_bytes_survive_a_cut() {
        arm();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        write(&f, || (&f).write_all(b"durable")).unwrap();
        sync(&f, || f.sync_data()).unwrap();
        write(&f, || (&f).write_all(b" lost")).unwrap();
        let g = File::options().write(true).open(dir.path().join("f")).unwrap();
        truncate(&g, 3, || g.set_len(3)).unwrap();
        write(&f, || (&f).write_all(b"...")).unwrap();
        // cut() would end the test process (and cut other tests' files): check what it keeps.
        assert_eq!(tracking::durable_len(&f), Some(3), "the truncation is kept, the later write not");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 15);
    }
}
