//! `POST /v2/vms/{vm}/{verb}` bodies (start/stop/restart/reset, migrate), `/v1/status` and
//! `/v1/watchdog`: each strict JSON body type the server accepts, and the name checks after it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmwarden::api::rest::{MigrateBody, PlainBody};
use vmwarden::api::server::{StatusRequest, WatchdogRequest};
use vmwarden::lock::{validate_name, NameKind};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<PlainBody>(data);
    if let Ok(m) = serde_json::from_slice::<MigrateBody>(data) {
        let _ = validate_name(NameKind::Vm, &m.to);
    }
    if let Ok(s) = serde_json::from_slice::<StatusRequest>(data) {
        let _ = validate_name(NameKind::Vm, &s.vm);
    }
    if let Ok(w) = serde_json::from_slice::<WatchdogRequest>(data) {
        if let Some(vm) = &w.vm {
            let _ = validate_name(NameKind::Vm, vm);
        }
    }
});
