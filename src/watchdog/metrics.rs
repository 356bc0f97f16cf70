//! The watchdog's metric families. One status series per VM (its current status as a label at
//! value 1): a dashboard or an alert selects `vmwarden_vm_status{status="ERROR_down"}` and the
//! series count stays one per VM, not one per status word.

use crate::metrics::Registry;

use crate::metrics::{counter, gauge};

use super::{VmView, Watchdog};

pub fn encode(reg: &mut Registry, wd: &Watchdog) {
    encode_views(
        reg,
        &wd.views(),
        &wd.results(),
        &wd.resume_results(),
        &wd.notify_stats().snapshot(),
    );
}

/// The families from a list of views and restart results (pure; the contract test renders it).
pub fn encode_views(
    reg: &mut Registry,
    views: &[VmView],
    results: &[(String, &'static str, u64)],
    resumes: &[(String, &'static str, u64)],
    mail: &crate::notify::StatsSnapshot,
) {
    let notes = counter(
        reg,
        "vmwarden_watchdog_notifications_total",
        "Email notifications since the agent started, by result: sent, failed (an attempt), suppressed (rate limit), dropped (queue full or retries exhausted)",
    );
    for (r, n) in [
        ("sent", mail.sent),
        ("failed", mail.failed),
        ("suppressed", mail.suppressed),
        ("dropped", mail.dropped),
    ] {
        notes.set(&[("result", r)], n as f64);
    }
    let status = gauge(
        reg,
        "vmwarden_vm_status",
        "The watchdog's status of each VM defined on this node, value 1 with the status as a label: running, paused, paused_io_error, ERROR_up, ADMIN_down, USER_down, ERROR_down, migrated, unmanaged",
    );
    let attempts = gauge(
        reg,
        "vmwarden_watchdog_attempts",
        "Restart attempts of a managed VM within the current window",
    );
    let gave_up = gauge(
        reg,
        "vmwarden_watchdog_gave_up",
        "1 if the watchdog gave up restarting the VM (until `vmwarden ctl reset VM` or the window passes)",
    );
    let restarts = counter(
        reg,
        "vmwarden_watchdog_restarts_total",
        "Restarts the watchdog attempted since the agent started, by result: started, failed, elsewhere (the VM runs on another node)",
    );
    for v in views {
        status.set(&[("domain", &v.vm), ("status", v.status_word)], 1.0);
        if v.status != super::Status::Unmanaged {
            attempts.set(&[("domain", &v.vm)], v.attempts as f64);
            gave_up.set(&[("domain", &v.vm)], if v.gave_up { 1.0 } else { 0.0 });
        }
    }
    // Every managed VM's restart counters exist at 0 before its first restart: a series born
    // at 1 hides that restart from `increase()` (dashboards, VmwardenVmRestartsLooping).
    let mut counts: std::collections::BTreeMap<(&str, &str), u64> =
        std::collections::BTreeMap::new();
    for v in views {
        if v.status != super::Status::Unmanaged {
            for result in ["started", "failed", "elsewhere"] {
                counts.insert((v.vm.as_str(), result), 0);
            }
        }
    }
    for (vm, result, n) in results {
        counts.insert((vm.as_str(), result), *n);
    }
    for ((vm, result), n) in counts {
        restarts.set(&[("domain", vm), ("result", result)], n as f64);
    }
    let resumed = counter(
        reg,
        "vmwarden_watchdog_resumes_total",
        "Resumes of a VM paused on an I/O error the watchdog attempted since the agent started ([watchdog] resume_after_io_error), by result: resumed, failed",
    );
    // Born at 0 with the VM's first pause on an I/O error, or its first resume.
    let mut counts: std::collections::BTreeMap<(&str, &str), u64> =
        std::collections::BTreeMap::new();
    for v in views
        .iter()
        .filter(|v| v.status == super::Status::PausedIoError)
    {
        for result in ["resumed", "failed"] {
            counts.insert((v.vm.as_str(), result), 0);
        }
    }
    for (vm, _, _) in resumes {
        for r in ["resumed", "failed"] {
            counts.entry((vm.as_str(), r)).or_insert(0);
        }
    }
    for (vm, result, n) in resumes {
        counts.insert((vm.as_str(), result), *n);
    }
    for ((vm, result), n) in counts {
        resumed.set(&[("domain", vm), ("result", result)], n as f64);
    }
}
