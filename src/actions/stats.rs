//! `vmwarden_action_total{action,result}` and `vmwarden_action_duration_seconds{action}`, kept for
//! the agent's lifetime and added to every scrape.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn buckets() -> Histogram {
    // Start ≈ 1 s, stop up to the shutdown timeout, migrations seconds to minutes.
    Histogram::new([0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0])
}

pub struct ActionStats {
    total: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
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
    }
}
