//! `sanlock direct dump PATH:OFFSET` (who holds a lease) and the `VERB done RV` line of every
//! `sanlock client` verb.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::lock::sanlock::{parse_direct_dump, parse_done};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(o) = parse_direct_dump(&text) {
        // Host ids start at 1: an owner 0 means "free", never an exclusive holder.
        assert_ne!(o.exclusive, Some(0), "a lease held by host 0");
    }
    let _ = parse_done(&text);
});
