//! `POST /v1/peer` (node-to-node calls): the body as the server parses it and the VM name
//! check; an accepted request re-encodes to itself (what the calling agent sends).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::api::peer::PeerRequest;
use vmwarden::lock::{validate_name, NameKind};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = serde_json::from_slice::<PeerRequest>(data) else {
        return;
    };
    let _ = validate_name(NameKind::Vm, &r.vm);
    let once = serde_json::to_string(&r).expect("a request serialises");
    let back: PeerRequest = serde_json::from_str(&once).expect("re-encoded request parses");
    assert_eq!(serde_json::to_string(&back).expect("serialises"), once);
});
