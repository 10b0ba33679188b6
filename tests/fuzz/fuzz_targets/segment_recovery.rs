//! A partition's segment file after an unclean shutdown, whatever its bytes: opening the log
//! recovers it (cutting what is not whole batches) or reports it corrupt; it never panics,
//! and what it keeps reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_storage::{Log, LogConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let part = dir.path().join("t-0");
    if std::fs::create_dir_all(&part).is_err() || std::fs::write(part.join("00000000000000000000.log"), data).is_err() {
        return;
    }
    if let Ok((log, _)) = Log::open(&part, LogConfig::default()) {
        let start = log.log_start_offset();
        let _ = log.read(start, 1 << 20, None);
    }
});
