//! `sanlock client gets -h 1`: parsed and merged into a real status capture, then rendered; the
//! lock backend's host-state look-up on the same text.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmwarden::lock::sanlock::parse_gets_state;
use vmwarden::metrics::Registry;
use vmwarden::probe::sanlock::{merge_gets, parse_gets, parse_status, SanlockSnapshot};
use vmwarden::probe::Parsed;
use vmwarden_fuzz::{assert_valid_metrics, some_of};

const STATUS: &str = include_str!("../../tests/fixtures/sanlock/h1-status-D.txt");

/// The fixture status, parsed once and cloned per input (it is the same every time).
fn status() -> &'static Parsed<SanlockSnapshot> {
    static S: OnceLock<Parsed<SanlockSnapshot>> = OnceLock::new();
    S.get_or_init(|| parse_status(STATUS))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let gets = parse_gets(&text);
    for ls in some_of(&gets.value) {
        let _ = parse_gets_state(&text, &ls.name, ls.host_id);
    }
    let _ = parse_gets_state(&text, "lvm_vg1", 2);
    let mut snap = status().clone();
    merge_gets(&mut snap.value, gets.value, &mut snap.errors);
    let mut reg = Registry::default();
    vmwarden::metrics::sanlock::encode(&mut reg, &snap.value);
    assert_valid_metrics(&reg);
});
