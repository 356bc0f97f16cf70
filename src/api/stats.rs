//! `vmwarden_api_requests_total{route, code}`: requests by route template (never the raw path,
//! so a scanner cannot create series) and HTTP status code.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::metrics::{counter, Registry};

#[derive(Default)]
pub struct ApiStats {
    /// (route template, status code) -> requests.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl ApiStats {
    pub fn observe(&self, route: &str, code: u16) {
        // A poisoned lock only means a panic elsewhere mid-update; the counts are still usable.
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((route.to_string(), code)).or_insert(0) += 1;
    }

    /// Add the family to a scrape's registry.
    pub fn register(&self, reg: &mut Registry) {
        let fam = counter(
            reg,
            "vmwarden_api_requests_total",
            "HTTP requests to the agent by route template and status code",
        );
        let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut code = itoa::Buffer::new();
        for ((route, c), n) in m.iter() {
            fam.set(&[("route", route), ("code", code.format(*c))], *n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_by_route_and_code() {
        let s = ApiStats::default();
        s.observe("/v1/vms", 200);
        s.observe("/v1/vms", 200);
        s.observe("/v1/vms", 401);
        let mut reg = Registry::default();
        s.register(&mut reg);
        let out = reg.to_openmetrics();
        assert!(
            out.contains("vmwarden_api_requests_total{route=\"/v1/vms\",code=\"200\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("vmwarden_api_requests_total{route=\"/v1/vms\",code=\"401\"} 1\n"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n") && out.matches("# EOF").count() == 1);
    }
}
