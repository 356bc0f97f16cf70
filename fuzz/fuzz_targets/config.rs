//! The config file: TOML over the embedded defaults, validated. A config that validates must
//! not make the agent panic later: every duration it turns into a `Duration` must be one.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vmwarden::config::Config;

fn secs(what: &str, s: f64) {
    assert!(
        Duration::try_from_secs_f64(s).is_ok(),
        "{what} = {s} was accepted but is no duration"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::from_toml_str(text, "fuzz.toml") else {
        return;
    };
    // The same conversions the agent makes (config.rs, lock/, actions/, api/, watchdog/).
    let _ = cfg.collector_timeout();
    let _ = vmwarden::lock::Tuning::from_config(&cfg);
    let _ = vmwarden::actions::virsh::Virsh::from_config(&cfg);
    let _ = vmwarden::watchdog::policy::PolicyConfig::from_config(&cfg.watchdog);
    let a = &cfg.actions;
    secs("actions.peer_timeout_seconds", a.peer_timeout_seconds);
    secs(
        "actions.shutdown_timeout_seconds",
        a.shutdown_timeout_seconds,
    );
    secs("actions.migrate_timeout_seconds", a.migrate_timeout_seconds);
    secs(
        "migrate_timeout + 60",
        a.migrate_timeout_seconds.max(0.0) + 60.0,
    );
    secs("peer_timeout * 2 + 10", a.peer_timeout_seconds * 2.0 + 10.0);
    secs("api.read_timeout_seconds", cfg.api.read_timeout_seconds);
    secs("watchdog.reconcile_seconds", cfg.watchdog.reconcile_seconds);
    secs("watchdog.window_seconds", cfg.watchdog.window_seconds);
    for r in &cfg.alertmanager.rules {
        secs("alertmanager.rules.cooldown_seconds", r.cooldown_seconds);
    }
    let _ = cfg.lease_lockspace();
});
