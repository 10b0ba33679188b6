//! Durable file replacement: the one way Strom replaces a small file that must survive a
//! crash whole (checkpoints, the Raft vote and compacted Raft log, `meta.properties`).
//!
//! **Rule:** the new contents go to `<name>.tmp` beside the file, are fsync'd, renamed over
//! the file, and the directory is fsync'd, so after a crash at any point the file holds
//! either the old contents or the new, never a mix, and a completed replacement is not lost
//! with the directory entry. A leftover `.tmp` is garbage: the next replacement truncates it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces `path` with `contents`, atomically and durably (the module's rule).
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path)?;
    let f = File::create(&tmp)?;
    crate::power_loss::write(&f, || (&f).write_all(contents))?;
    fsync(&f)?;
    drop(f);
    rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsync of a directory: makes its entries (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fsync(&File::open(dir)?)
}

/// `fsync(2)`: the file's data and metadata reach the disk. Failpoint `fsync`.
pub fn fsync(f: &File) -> io::Result<()> {
    fail::fail_point!("fsync", |_| Err(io::Error::other("failpoint fsync")));
    crate::power_loss::sync(f, || f.sync_all())
}

/// `fdatasync(2)`: the file's data (and the size needed to read it) reach the disk.
/// Failpoint `fsync`.
pub fn fdatasync(f: &File) -> io::Result<()> {
    fail::fail_point!("fsync", |_| Err(io::Error::other("failpoint fsync")));
    crate::power_loss::sync(f, || f.sync_data())
}

/// `rename(2)` of a file that must survive (the caller syncs the directory). Failpoint `rename`.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fail::fail_point!("rename", |_| Err(io::Error::other("failpoint rename")));
    fs::rename(from, to)
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))?;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_leaves_the_new_contents_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.properties");
        write_atomically(&path, b"old").unwrap();
        // A crash mid-write leaves a partial temporary file: the next write replaces it.
        fs::write(dir.path().join("meta.properties.tmp"), b"torn").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(!dir.path().join("meta.properties.tmp").exists());
        assert!(write_atomically(Path::new("/"), b"x").is_err(), "a path without a file name is refused");
    }
}
