//! `lvm fullreport --reportformat json`: parse, derive each LV's lock and state, render metrics.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmwarden::metrics::Registry;
use vmwarden::probe::lvm::{
    parse_fullreport, parse_lockctl_info, LockdInfo, LockdStatus, LvmSnapshot,
};
use vmwarden_fuzz::assert_valid_metrics;

const LOCKD: &str = include_str!("../../tests/fixtures/lvm/h1-lvmlockctl-info.txt");

/// The fixture's lvmlockctl info, parsed once (not per input: it is the same every time).
fn lockd() -> &'static LockdInfo {
    static L: OnceLock<LockdInfo> = OnceLock::new();
    L.get_or_init(|| parse_lockctl_info(LOCKD).value)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(rep) = parse_fullreport(&text) else {
        return;
    };
    for vg in &rep.value.vgs {
        if let (Some(size), Some(free)) = (vg.size_bytes, vg.free_bytes) {
            // Not asserted as free <= size: lvm's own numbers are passed through as printed.
            let _ = (size, free);
        }
    }
    let snap = LvmSnapshot {
        vgs: rep.value.vgs,
        lvs: rep.value.lvs,
        lockd: LockdStatus::Up(lockd().clone()),
    };
    for lv in &snap.lvs {
        let _ = snap.lv_lock(lv).as_str();
        let _ = snap.lv_state(lv).as_str();
    }
    let mut reg = Registry::default();
    vmwarden::metrics::lvm::encode(&mut reg, &snap);
    assert_valid_metrics(&reg);
});
