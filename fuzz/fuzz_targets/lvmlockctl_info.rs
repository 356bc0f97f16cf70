//! `lvmlockctl --info`: the probe's parser (metrics) and the lock backend's (one LV's mode).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmwarden::lock::lvmlockd::{parse_lvmlockctl_info, parse_lvs_uuid_lock_args};
use vmwarden::metrics::Registry;
use vmwarden::probe::lvm::{
    parse_fullreport, parse_lockctl_info, LockdStatus, LvmReport, LvmSnapshot,
};
use vmwarden_fuzz::assert_valid_metrics;

const REPORT: &str = include_str!("../../tests/fixtures/lvm/h1-fullreport.json");

/// The fixture report, parsed once: re-parsing the same JSON for every input spent the fuzzer's
/// time on work that tests nothing new (the report is not the input here).
fn report() -> &'static LvmReport {
    static R: OnceLock<LvmReport> = OnceLock::new();
    R.get_or_init(|| match parse_fullreport(REPORT) {
        Ok(r) => r.value,
        Err(e) => panic!("the fixture report parses: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let info = parse_lockctl_info(&text);
    let rep = report();
    // The lock backend asks about one LV uuid: a fixture's and one taken from the input itself.
    let _ = parse_lvmlockctl_info(&text, "tKk1Ic-mzJ3-4Dth-Lh1G-0ccY-d7Ih-DL2Pwx");
    if let Some(word) = text.split_whitespace().nth(1) {
        let _ = parse_lvmlockctl_info(&text, word);
    }
    // The same text as `lvs -o uuid,lock_args` output.
    let _ = parse_lvs_uuid_lock_args(&text);
    let snap = LvmSnapshot {
        vgs: rep.vgs.clone(),
        lvs: rep.lvs.clone(),
        lockd: LockdStatus::Up(info.value),
    };
    for lv in &snap.lvs {
        let _ = snap.lv_lock(lv).as_str();
        let _ = snap.lv_state(lv).as_str();
    }
    let mut reg = Registry::default();
    vmwarden::metrics::lvm::encode(&mut reg, &snap);
    assert_valid_metrics(&reg);
});
