//! `POST /v1/action` (`vmwarden ctl`): the body as the server parses it (strict JSON) and the VM
//! name check that follows; an accepted request re-encodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::actions::ActionRequest;
use vmwarden::lock::{validate_name, NameKind};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = serde_json::from_slice::<ActionRequest>(data) else {
        return;
    };
    if validate_name(NameKind::Vm, &r.vm).is_ok() {
        assert!(!r.vm.contains(['/', ' ', '\0', '\n']) && !r.vm.starts_with('-'));
    }
    if let Some(to) = &r.to {
        let _ = validate_name(NameKind::Vm, to);
    }
    let once = serde_json::to_string(&r).expect("a request serialises");
    let back: ActionRequest = serde_json::from_str(&once).expect("re-encoded request parses");
    assert_eq!(serde_json::to_string(&back).expect("serialises"), once);
});
