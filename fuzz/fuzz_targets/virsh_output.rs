//! Text the actions read from virsh and /proc: `virsh domstate --reason`, `virsh domblklist
//! --details`, `virsh version`, `/proc/PID/stat`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::actions::compat::parse_virsh_version;
use vmwarden::actions::virsh::{parse_domblklist, DomState};
use vmwarden::lock::follow::parse_stat;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = DomState::parse(&text);
    for src in parse_domblklist(&text) {
        assert!(!src.is_empty(), "an empty disk source");
    }
    let _ = parse_virsh_version(&text);
    let _ = parse_stat(&text);
});
