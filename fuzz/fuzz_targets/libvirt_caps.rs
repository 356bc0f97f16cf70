//! `virsh domcapabilities` and `virsh capabilities` XML (the migration preflight's host side).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::actions::compat::{parse_domcaps, parse_machines};

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_domcaps(xml);
    if let Ok(m) = parse_machines(xml, "x86_64") {
        assert!(m.iter().all(|t| !t.is_empty()), "an empty machine type");
        assert!(
            m.windows(2).all(|w| w[0] < w[1]),
            "machine types not sorted and unique"
        );
    }
});
