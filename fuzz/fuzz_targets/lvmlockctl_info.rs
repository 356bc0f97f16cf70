//! `lvmlockctl --info`: the probe's parser (metrics) and the lock backend's (one LV's mode).
#![no_main]
use libfuzzer_sys::fuzz_target;
use prometheus_client::registry::Registry;
use vmwarden::lock::lvmlockd::{parse_lvmlockctl_info, parse_lvs_uuid_lock_args};
use vmwarden::probe::lvm::{parse_fullreport, parse_lockctl_info, LockdStatus, LvmSnapshot};
use vmwarden_fuzz::assert_valid_metrics;

const REPORT: &str = include_str!("../../tests/fixtures/lvm/h1-fullreport.json");

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let info = parse_lockctl_info(&text);
    let Ok(rep) = parse_fullreport(REPORT) else {
        panic!("the fixture report parses");
    };
    // The lock backend asks about one LV uuid: a fixture's and one taken from the input itself.
    let _ = parse_lvmlockctl_info(&text, "tKk1Ic-mzJ3-4Dth-Lh1G-0ccY-d7Ih-DL2Pwx");
    if let Some(word) = text.split_whitespace().nth(1) {
        let _ = parse_lvmlockctl_info(&text, word);
    }
    // The same text as `lvs -o uuid,lock_args` output.
    let _ = parse_lvs_uuid_lock_args(&text);
    let snap = LvmSnapshot {
        vgs: rep.value.vgs,
        lvs: rep.value.lvs,
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
