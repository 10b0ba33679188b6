//! Small checkpoint files, written atomically ([`crate::durable`]), in
//! Kafka's text format: a version line, a count line, then one entry per line.

use std::fs;
use std::path::Path;

use crate::LogError;

pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
pub const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";

/// Writes `lines` under Kafka's `0\n<count>\n` preamble, atomically.
pub fn write(dir: &Path, name: &str, lines: &[String]) -> Result<(), LogError> {
    let path = dir.join(name);
    let mut text = format!("0\n{}\n", lines.len());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    crate::durable::write_atomically(&path, text.as_bytes()).map_err(|e| LogError::io(&path, e))
}

/// Reads the entry lines of a checkpoint; `None` when the file is absent or malformed (the
/// caller then recovers from the log itself).
pub fn read(dir: &Path, name: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string(dir.join(name)).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let entries: Vec<String> = lines.map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    (entries.len() == count).then_some(entries)
}

/// `epoch start_offset` pairs, ascending.
pub fn read_leader_epochs(dir: &Path) -> Option<Vec<(i32, i64)>> {
    read(dir, LEADER_EPOCH_FILE)?
        .iter()
        .map(|l| {
            let (e, o) = l.split_once(' ')?;
            Some((e.parse().ok()?, o.parse().ok()?))
        })
        .collect()
}

pub fn write_leader_epochs(dir: &Path, epochs: &[(i32, i64)]) -> Result<(), LogError> {
    let lines: Vec<String> = epochs.iter().map(|(e, o)| format!("{e} {o}")).collect();
    write(dir, LEADER_EPOCH_FILE, &lines)
}

/// Strom's own: offsets below this one may have holes (cleaned, or replicated from a cleaned
/// leader); at and above it a log is dense, which recovery checks.
pub const SPARSE_BELOW_FILE: &str = "sparse-below-offset-checkpoint";

pub fn read_sparse_below(dir: &Path) -> Option<i64> {
    read(dir, SPARSE_BELOW_FILE)?.first()?.parse().ok()
}

pub fn write_sparse_below(dir: &Path, offset: i64) -> Result<(), LogError> {
    write(dir, SPARSE_BELOW_FILE, &[offset.to_string()])
}

/// Kafka's cleaner checkpoint, per partition here: the offset below which the log is clean.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

pub fn read_cleaned_below(dir: &Path) -> Option<i64> {
    read(dir, CLEANER_CHECKPOINT_FILE)?.first()?.parse().ok()
}

pub fn write_cleaned_below(dir: &Path, offset: i64) -> Result<(), LogError> {
    write(dir, CLEANER_CHECKPOINT_FILE, &[offset.to_string()])
}

pub fn read_recovery_point(dir: &Path) -> Option<i64> {
    read(dir, RECOVERY_POINT_FILE)?.first()?.parse().ok()
}

pub fn write_recovery_point(dir: &Path, offset: i64) -> Result<(), LogError> {
    write(dir, RECOVERY_POINT_FILE, &[offset.to_string()])
}
