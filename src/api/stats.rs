//! `vmwarden_api_requests_total{route, code}`: requests by route template (never the raw path,
//! so a scanner cannot create series) and HTTP status code.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

#[derive(Default)]
pub struct ApiStats {
    requests: Family<Labels, Counter>,
}

impl ApiStats {
    pub fn observe(&self, route: &str, code: u16) {
        self.requests
            .get_or_create(&vec![
                ("route".into(), route.into()),
                ("code".into(), code.to_string()),
            ])
            .inc();
    }

    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "vmwarden_api_requests",
            "HTTP requests to the agent by route template and status code",
            self.requests.clone(),
        );
    }

    /// `om` (an OpenMetrics exposition ending in `# EOF`) with these families added.
    pub fn splice_into(&self, om: &str) -> String {
        let mut reg = Registry::default();
        self.register(&mut reg);
        let mut mine = String::new();
        if prometheus_client::encoding::text::encode(&mut mine, &reg).is_err() {
            return om.to_string();
        }
        let body = om.strip_suffix("# EOF\n").unwrap_or(om);
        let mut out = String::with_capacity(om.len() + mine.len());
        out.push_str(body);
        out.push_str(&mine);
        if !out.ends_with("# EOF\n") {
            out.push_str("# EOF\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_before_eof() {
        let s = ApiStats::default();
        s.observe("/v1/vms", 200);
        let out = s.splice_into("# TYPE g gauge\ng 1\n# EOF\n");
        assert!(out.starts_with("# TYPE g gauge\ng 1\n"), "{out}");
        assert!(
            out.contains("vmwarden_api_requests_total{route=\"/v1/vms\",code=\"200\"} 1"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n") && out.matches("# EOF").count() == 1);
    }
}
