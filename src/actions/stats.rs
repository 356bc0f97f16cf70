//! `vmwarden_action_total{action,result}` and `vmwarden_action_duration_seconds{action}`, kept for
//! the agent's lifetime and added to every scrape; and
//! `vmwarden_action_unfinished_start_time_seconds{action,domain}`: one series per action whose
//! journal is not finished on this node (running now, or left incomplete and being recovered), so
//! an action that hangs is seen while it hangs — the counters only count actions that ended.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::gauge;

type Labels = Vec<(String, String)>;

fn buckets() -> Histogram {
    // Start ≈ 1 s, stop up to the shutdown timeout, migrations seconds to minutes.
    Histogram::new([0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0])
}

pub struct ActionStats {
    total: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
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

impl ActionStats {
    pub fn new() -> ActionStats {
        ActionStats {
            total: Family::default(),
            duration: Family::new_with_constructor(buckets),
            unfinished: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, action: &str, result: &str, seconds: f64) {
        self.total
            .get_or_create(&vec![
                ("action".into(), action.into()),
                ("result".into(), result.into()),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![("action".into(), action.into())])
            .observe(seconds);
    }

    /// `vm` has an unfinished journal for `action`, begun at `started_unix` (its header's time:
    /// after an agent restart the age goes on from the original start). Kept if already known.
    pub fn unfinished_begin(&self, vm: &str, action: &str, started_unix: u64) {
        let mut m = self.unfinished.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(vm.to_string())
            .or_insert_with(|| (action.to_string(), started_unix));
    }

    /// `vm`'s journal is finished (moved to done/).
    pub fn unfinished_end(&self, vm: &str) {
        let mut m = self.unfinished.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(vm);
    }

    /// (vm, action, started_unix) of every unfinished action.
    pub fn unfinished(&self) -> Vec<(String, String, u64)> {
        let m = self.unfinished.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|(vm, (a, t))| (vm.clone(), a.clone(), *t))
            .collect()
    }

    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "vmwarden_action",
            "Actions (start, stop, restart, migrate) by result: completed, refused, rolled_back, failed, incomplete",
            self.total.clone(),
        );
        reg.register(
            "vmwarden_action_duration_seconds",
            "Wall time of actions that ran (dry runs excluded)",
            self.duration.clone(),
        );
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
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
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
}
