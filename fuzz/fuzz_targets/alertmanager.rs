//! `POST /v1/alertmanager` (Alertmanager webhook, payload version 4): parse and decide with a
//! set of rules. One decision per alert; what is queued names a valid VM and a matching rule.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use vmwarden::api::webhook::{decide, Cooldowns, Payload};
use vmwarden::config::RemediationRule;
use vmwarden::lock::{validate_name, NameKind};

fn rule(name: &str, alertname: &str, action: &str, cooldown: f64) -> RemediationRule {
    RemediationRule {
        name: name.into(),
        alertname: alertname.into(),
        matchers: [("severity".to_string(), "critical".to_string())].into(),
        action: action.into(),
        vm_label: "vm".into(),
        to: String::new(),
        cooldown_seconds: cooldown,
        dry_run: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_json::from_slice::<Payload>(data) else {
        return;
    };
    let rules = [
        rule("restart-dead", "VmwardenVmDown", "restart", 600.0),
        rule("stop-twice", "VmwardenVmRunsTwice", "stop", 0.0),
        RemediationRule {
            dry_run: true,
            matchers: Default::default(),
            ..rule("reset", "VmwardenWatchdogGaveUp", "reset", 604800.0)
        },
    ];
    let cooldowns = Cooldowns::default();
    let (run, decisions) = decide(&rules, &cooldowns, &p, Instant::now());
    assert_eq!(decisions.len(), p.alerts.len(), "one decision per alert");
    let queued = decisions
        .iter()
        .filter(|d| d.decision == "queued" || d.decision == "dry_run_queued")
        .count();
    assert_eq!(run.len(), queued, "what runs is what was queued");
    for (r, vm) in &run {
        assert!(
            validate_name(NameKind::Vm, vm).is_ok(),
            "queued a bad VM name {vm:?}"
        );
        assert!(rules.contains(r));
    }
    // The reply is JSON.
    let _ = serde_json::to_string(&decisions).expect("decisions serialise");
});
