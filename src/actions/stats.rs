//! `vmwarden_action_total{action,result}` and `vmwarden_action_duration_seconds{action}`, kept for
//! the agent's lifetime and added to every scrape; and
//! `vmwarden_action_unfinished_start_time_seconds{action,domain}`: one series per action whose
//! journal is not finished on this node (running now, or left incomplete and being recovered), so
//! an action that hangs is seen while it hangs — the counters only count actions that ended.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::metrics::{counter, gauge, histogram, Registry};

/// Start ≈ 1 s, stop up to the shutdown timeout, migrations seconds to minutes.
const BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// One action's durations: observations per bucket of `BUCKETS` (the last above them all).
#[derive(Debug, Default, Clone)]
struct Durations {
    per_bucket: [u64; BUCKETS.len() + 1],
    sum: f64,
}

#[derive(Debug, Default)]
struct Counts {
    /// (action, result) -> actions that ended so.
    total: BTreeMap<(String, String), u64>,
    /// action -> its durations.
    duration: BTreeMap<String, Durations>,
}

pub struct ActionStats {
    counts: Mutex<Counts>,
    /// VM -> (action, unix start time from its journal header). One action per VM at a time.
    unfinished: Mutex<BTreeMap<String, (String, u64)>>,
}

impl std::fmt::Debug for ActionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActionStats")
    }
}

impl Default for ActionStats {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-update; the counts are still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ActionStats {
    pub fn new() -> ActionStats {
        let mut counts = Counts::default();
        // The everyday actions' counters exist at 0 from the start: a counter whose series is
        // born at 1 hides its first event from `increase()`/`rate()` (the first migration after
        // an agent start would never show on a dashboard or fire an alert). Rarer actions and
        // results appear at their first use.
        for action in ["start", "stop", "restart", "migrate"] {
            for result in [
                "completed",
                "refused",
                "failed",
                "rolled_back",
                "incomplete",
            ] {
                counts.total.insert((action.into(), result.into()), 0);
            }
        }
        ActionStats {
            counts: Mutex::new(counts),
            unfinished: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, action: &str, result: &str, seconds: f64) {
        let mut c = lock(&self.counts);
        *c.total
            .entry((action.to_string(), result.to_string()))
            .or_insert(0) += 1;
        let d = c.duration.entry(action.to_string()).or_default();
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        d.per_bucket[i] += 1;
        if seconds.is_finite() {
            d.sum += seconds;
        }
    }

    /// `vm` has an unfinished journal for `action`, begun at `started_unix` (its header's time:
    /// after an agent restart the age goes on from the original start). Kept if already known.
    pub fn unfinished_begin(&self, vm: &str, action: &str, started_unix: u64) {
        let mut m = lock(&self.unfinished);
        m.entry(vm.to_string())
            .or_insert_with(|| (action.to_string(), started_unix));
    }

    /// `vm`'s journal is finished (moved to done/).
    pub fn unfinished_end(&self, vm: &str) {
        let mut m = lock(&self.unfinished);
        m.remove(vm);
    }

    /// (vm, action, started_unix) of every unfinished action.
    pub fn unfinished(&self) -> Vec<(String, String, u64)> {
        let m = lock(&self.unfinished);
        m.iter()
            .map(|(vm, (a, t))| (vm.clone(), a.clone(), *t))
            .collect()
    }

    pub fn register(&self, reg: &mut Registry) {
        let total = counter(
            reg,
            "vmwarden_action_total",
            "Actions (start, stop, restart, migrate) by result: completed, refused, rolled_back, failed, incomplete",
        );
        let duration = histogram(
            reg,
            "vmwarden_action_duration_seconds",
            "Wall time of actions that ran (dry runs excluded)",
            BUCKETS,
        );
        {
            let c = lock(&self.counts);
            for ((action, result), n) in &c.total {
                total.set(&[("action", action), ("result", result)], *n as f64);
            }
            for (action, d) in &c.duration {
                duration.set(&[("action", action)], &d.per_bucket, d.sum);
            }
        }
        let since = gauge(
            reg,
            "vmwarden_action_unfinished_start_time_seconds",
            "Unix time an action whose journal is not finished on this node began (running now, or left incomplete and being recovered); one series per such action",
        );
        for (vm, action, t) in self.unfinished() {
            since.set(&[("action", &action), ("domain", &vm)], t as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &ActionStats) -> String {
        let mut reg = Registry::default();
        s.register(&mut reg);
        reg.to_openmetrics()
    }

    #[test]
    fn unfinished_actions_are_a_series_while_unfinished() {
        let s = ActionStats::new();
        assert!(!text(&s).contains("vmwarden_action_unfinished_start_time_seconds{"));
        s.unfinished_begin("vm1", "migrate", 1_796_000_000);
        // Recovery seeing the same journal later keeps the original action and time.
        s.unfinished_begin("vm1", "start", 1_796_000_999);
        let t = text(&s);
        assert!(
            t.contains(
                "vmwarden_action_unfinished_start_time_seconds{action=\"migrate\",domain=\"vm1\"} 1796000000"
            ),
            "{t}"
        );
        assert_eq!(
            t.matches("vmwarden_action_unfinished_start_time_seconds{")
                .count(),
            1
        );
        s.unfinished_end("vm1");
        assert!(!text(&s).contains("vmwarden_action_unfinished_start_time_seconds{"));
    }

    #[test]
    fn counts_and_durations() {
        let s = ActionStats::new();
        let t = text(&s);
        // The everyday counters exist at 0; no duration before an action ran.
        assert!(t.contains("vmwarden_action_total{action=\"migrate\",result=\"completed\"} 0\n"));
        assert!(!t.contains("vmwarden_action_duration_seconds_count"), "{t}");
        s.observe("start", "completed", 0.7);
        s.observe("start", "completed", 700.0);
        s.observe("grow", "refused", 0.0);
        let t = text(&s);
        for line in [
            "vmwarden_action_total{action=\"start\",result=\"completed\"} 2\n",
            "vmwarden_action_total{action=\"grow\",result=\"refused\"} 1\n",
            "vmwarden_action_duration_seconds_sum{action=\"start\"} 700.7\n",
            "vmwarden_action_duration_seconds_count{action=\"start\"} 2\n",
            "vmwarden_action_duration_seconds_bucket{action=\"start\",le=\"0.5\"} 0\n",
            "vmwarden_action_duration_seconds_bucket{action=\"start\",le=\"1.0\"} 1\n",
            "vmwarden_action_duration_seconds_bucket{action=\"start\",le=\"600.0\"} 1\n",
            "vmwarden_action_duration_seconds_bucket{action=\"start\",le=\"+Inf\"} 2\n",
            "vmwarden_action_duration_seconds_bucket{action=\"grow\",le=\"0.5\"} 1\n",
        ] {
            assert!(t.contains(line), "{line}in\n{t}");
        }
    }
}
