//! The controller's Raft log file, whatever its bytes: the log store opens it (a torn tail cut)
//! or refuses it as corrupt; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    if std::fs::write(dir.path().join("raft-log"), data).is_err() {
        return;
    }
    let _ = strom_controller::raft::log_store::LogStore::open(dir.path());
});
