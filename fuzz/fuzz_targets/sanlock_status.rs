//! `sanlock client status -D`: the probe's parser (metrics) and the lock backend's look-ups.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::lock::sanlock::{parse_status_lockspace, parse_status_resource};
use vmwarden::metrics::Registry;
use vmwarden::probe::sanlock::parse_status;
use vmwarden_fuzz::{assert_valid_metrics, some_of};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_status(&text);
    for ls in &parsed.value.lockspaces {
        let _ = parsed.value.renewal_age_seconds(ls);
    }
    // The lock backend's look-ups by the names the probe found (each re-reads the input).
    for ls in some_of(&parsed.value.lockspaces) {
        let _ = parse_status_lockspace(&text, &ls.name);
    }
    for r in some_of(&parsed.value.resources) {
        let _ = parsed.value.client_name(r.pid);
    }
    let _ = parse_status_lockspace(&text, "lvm_vg1");
    let _ = parse_status_resource(&text, "vmwarden", "vm1");
    if let Some(r) = parsed.value.resources.first() {
        let _ = parse_status_resource(&text, &r.lockspace, &r.name);
    }
    let mut reg = Registry::default();
    vmwarden::metrics::sanlock::encode(&mut reg, &parsed.value);
    assert_valid_metrics(&reg);
});
