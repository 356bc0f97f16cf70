//! The action journal reader (crash recovery reads what a dying agent left): every non-blank
//! line is a record or counted bad, and what recovery asks of the journal never panics.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vmwarden::actions::journal::{parse, Incoming, Record};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // read_to_string refuses non-UTF-8 with an error (tested in the normal suite).
        return;
    };
    let j = parse(Path::new("/var/lib/vmwarden/journal/vm1.json"), text);
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        j.records.len() + j.bad_lines,
        lines,
        "lines lost or counted twice"
    );
    let _ = j.header();
    let _ = j.done_steps();
    let _ = j.failed_step();
    let _ = j.left_incomplete();
    let _ = j.progress();
    let _ = j.interrupted_step();
    let _ = j.ended();
    // A record written back reads back the same (the journal's own write path).
    for r in &j.records {
        let line = serde_json::to_string(r).expect("a record serialises");
        let back: Record = serde_json::from_str(&line).expect("a record written reads back");
        assert_eq!(&back, r);
    }
    // The incoming-migration marker is read the same way (a file of JSON).
    let _: Incoming = serde_json::from_str(text).unwrap_or_default();
});
