//! `sanlock client renewal -s LS`: parsed into a real status capture's lockspaces, rendered.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmwarden::metrics::Registry;
use vmwarden::probe::sanlock::{parse_renewal, parse_status, SanlockSnapshot};
use vmwarden::probe::Parsed;
use vmwarden_fuzz::assert_valid_metrics;

const STATUS: &str = include_str!("../../tests/fixtures/sanlock/h1-status-D.txt");

/// The fixture status, parsed once and cloned per input (it is the same every time).
fn status() -> &'static Parsed<SanlockSnapshot> {
    static S: OnceLock<Parsed<SanlockSnapshot>> = OnceLock::new();
    S.get_or_init(|| parse_status(STATUS))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let r = parse_renewal(&text);
    let mut snap = status().value.clone();
    for ls in &mut snap.lockspaces {
        ls.renewal = r.value.clone();
    }
    let mut reg = Registry::default();
    vmwarden::metrics::sanlock::encode(&mut reg, &snap);
    assert_valid_metrics(&reg);
});
