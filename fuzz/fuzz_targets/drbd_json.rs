//! `drbdsetup status --json` (DRBD 9): parse, then render the metrics as the agent does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::metrics::Registry;
use vmwarden::probe::drbd::parse_status_json;
use vmwarden_fuzz::{assert_ratio, assert_valid_metrics};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = parse_status_json(&text) else {
        return;
    };
    for v in &parsed.value.volumes {
        for p in &v.peers {
            if let Some(r) = &p.resync {
                assert_ratio("done_ratio", r.done_ratio);
            }
        }
    }
    let mut reg = Registry::default();
    vmwarden::metrics::drbd::encode(&mut reg, &parsed.value);
    assert_valid_metrics(&reg);
});
