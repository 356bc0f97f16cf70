//! A libvirt domain XML: the probe's disks/interfaces/intent, the migration check's guest
//! (compat), and the intent written back (`Intent::to_xml`) reads back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::actions::compat::parse_guest;
use vmwarden::probe::libvirt::parse_domain_xml;
use vmwarden::watchdog::intent::{Intent, NS};

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        // libvirt hands XML over as a C string of UTF-8; the bindings refuse anything else.
        return;
    };
    let parsed = parse_domain_xml(xml);
    for d in &parsed.value.disks {
        assert!(
            !d.target.is_empty(),
            "a disk without a target was kept: {d:?}"
        );
    }
    let _ = parse_guest(xml);
    let intent = Intent::from_domain_xml(xml);
    assert_eq!(
        parsed.value.intent, intent,
        "probe and watchdog read different intents"
    );
    if let Some(i) = intent {
        let back = format!(
            "<domain><metadata>{}</metadata></domain>",
            i.to_xml()
                .replacen("<vmwarden>", &format!("<vmwarden xmlns=\"{NS}\">"), 1)
        );
        let again = Intent::from_domain_xml(&back).expect("the intent written reads back");
        assert_eq!(again.want, i.want);
        assert_eq!(again.since, i.since);
        assert_eq!(again.managed, i.managed);
        let by: String =
            i.by.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
        assert_eq!(again.by, by);
    }
});
