//! Record batches as a producer sends them: the validator a leader runs before it appends,
//! and the stored-batch view a reader uses. Either gives a typed error or a view whose
//! accessors stay within the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_protocol::batch::{claimed_size, BatchView};

fuzz_target!(|data: &[u8]| {
    let _ = claimed_size(data);
    if let Ok(v) = BatchView::parse_validated(data) {
        let _ = (v.base_offset(), v.last_offset(), v.records_count(), v.max_timestamp(), v.producer_id());
        let _ = v.bytes().len().min(v.size());
    }
    let mut rest = data;
    while let Ok(v) = BatchView::parse_stored(rest) {
        if v.size() == 0 || v.size() > rest.len() {
            break;
        }
        rest = &rest[v.size()..];
    }
});
