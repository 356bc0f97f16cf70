//! Invariant metrics: one series per violation (value 1; none when all hold) and, per invariant,
//! whether it could be checked at all on this scrape.

use super::Registry;

use super::gauge;
use crate::invariants::{Report, ALL};

pub fn encode(reg: &mut Registry, report: &Report) {
    let checked = gauge(
        reg,
        "vmwarden_invariant_checked",
        "1 if the invariant was fully checked on this scrape, 0 if a collector it needs failed or is disabled (then its violations are unknown)",
    );
    let violation = gauge(
        reg,
        "vmwarden_invariant_violation",
        "One series with value 1 per violated invariant: domain and subject (vg/lv, DRBD resource/volume, or the nodes a VM runs on) in labels; no series when it holds",
    );
    for inv in ALL {
        checked.set(
            &[("invariant", inv)],
            if report.checked(inv) { 1.0 } else { 0.0 },
        );
    }
    for v in &report.violations {
        violation.set(
            &[
                ("invariant", v.invariant),
                ("domain", &v.domain),
                ("subject", &v.subject),
            ],
            1.0,
        );
    }
}
