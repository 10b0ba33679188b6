//! Producer state snapshots: Kafka's `<offset>.snapshot` files in a partition's directory, so
//! a log opens by reading only its tail rather than every batch it holds.
//!
//! **Rules:**
//! - `<offset>.snapshot` (20 digits) holds the idempotent producer state of the log below
//!   `offset`: loading it and reading the log from `offset` to the end gives the state a
//!   scan of the whole log gives. The format is [`ProducerStates::encode_snapshot`]'s.
//! - One is taken after the active segment rolled (by housekeeping, off the append path; the
//!   state is copied under the log lock, so it matches its offset exactly) and at a clean
//!   close; it is written atomically (`strom_storage::durable`). The two newest are kept.
//! - A snapshot past the log's end describes batches the log no longer has (it was truncated,
//!   or lost an unsynced tail in a crash): it is deleted, never loaded. A truncation deletes
//!   those past its new end in the same critical section, before anything is appended.
//! - A snapshot that does not decode is deleted and the next older one is tried; with none,
//!   the whole log is read, as before snapshots existed.
//! - A follower whose log restarts empty at its leader's log start deletes every snapshot
//!   (they describe the log it discarded).
//! - A snapshot below the log start offset is still loaded (it only knows more producers than
//!   the log now shows, as Kafka's state does until they expire), and the log is read from
//!   the log start.

use std::path::{Path, PathBuf};

use crate::producer_state::ProducerStates;

const SUFFIX: &str = ".snapshot";
/// Snapshots kept per partition (the newest).
const KEPT: usize = 2;

fn path_of(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SUFFIX}"))
}

/// The snapshot offsets in `dir`, ascending.
pub fn offsets(dir: &Path) -> Vec<i64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<i64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(SUFFIX)?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// Writes the snapshot at `offset` and removes all but the newest [`KEPT`].
pub fn write(dir: &Path, offset: i64, bytes: &[u8]) -> std::io::Result<()> {
    strom_storage::durable::write_atomically(&path_of(dir, offset), bytes)?;
    let all = offsets(dir);
    for old in &all[..all.len().saturating_sub(KEPT)] {
        remove(dir, *old);
    }
    Ok(())
}

/// Deletes every snapshot past `end` (the log was truncated to `end`; -1: all), and syncs
/// the directory so the deletions survive a crash.
pub fn delete_after(dir: &Path, end: i64) {
    let doomed: Vec<i64> = offsets(dir).into_iter().filter(|o| *o > end).collect();
    for o in &doomed {
        remove(dir, *o);
    }
    if !doomed.is_empty() {
        if let Err(e) = strom_storage::durable::sync_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot sync a partition directory after deleting snapshots");
        }
    }
}

/// The newest usable snapshot at or below `end`: its offset and state (the module's rules;
/// those past `end` and those that do not decode are deleted on the way).
pub fn load_latest(dir: &Path, end: i64, node_id: i32) -> Option<(i64, ProducerStates)> {
    delete_after(dir, end);
    for offset in offsets(dir).into_iter().rev() {
        let path = path_of(dir, offset);
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| ProducerStates::decode_snapshot(&b).map_err(|e| e.to_string()))
        {
            Ok(states) => return Some((offset, states)),
            Err(e) => {
                tracing::warn!(node = node_id, path = %path.display(), error = %e, "producer state snapshot unreadable; deleted");
                remove(dir, offset);
            }
        }
    }
    None
}

fn remove(dir: &Path, offset: i64) {
    let path = path_of(dir, offset);
    if let Err(e) = std::fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a producer state snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_usable_snapshot_is_loaded_and_the_rest_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let state = ProducerStates::default().encode_snapshot();
        for o in [100, 200, 300] {
            write(d, o, &state).unwrap();
        }
        assert_eq!(offsets(d), vec![200, 300], "only the two newest are kept");
        // The log was truncated to 250: the snapshot at 300 is of batches it no longer has.
        assert_eq!(load_latest(d, 250, 1).map(|(o, _)| o), Some(200));
        assert_eq!(offsets(d), vec![200]);
        // A damaged snapshot is skipped (and removed) for an older one, or for none.
        write(d, 240, b"SPS1garbage").unwrap();
        assert_eq!(load_latest(d, 250, 1).map(|(o, _)| o), Some(200));
        assert_eq!(offsets(d), vec![200]);
        std::fs::write(path_of(d, 200), b"short").unwrap();
        assert!(load_latest(d, 250, 1).is_none());
        assert!(offsets(d).is_empty());
    }
}
