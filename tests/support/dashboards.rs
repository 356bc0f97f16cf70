//! The Grafana dashboards of `dashboards/` as the tests read them: every dashboard, its panels and
//! their queries, and the expansion of a query's variables into plain PromQL (what Grafana sends
//! to Prometheus). Included with `#[path]` by tests/dashboards.rs and tests/lab_dashboards.rs.

use std::path::PathBuf;

use serde_json::Value;

pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

impl Dashboard {
    pub fn uid(&self) -> &str {
        self.json["uid"].as_str().unwrap_or("")
    }

    pub fn title(&self) -> &str {
        self.json["title"].as_str().unwrap_or("")
    }

    /// Every panel that shows data (rows are only headings), nested rows' panels included.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in self.json["panels"].as_array().into_iter().flatten() {
            if p["type"] == "row" {
                out.extend(p["panels"].as_array().into_iter().flatten());
            } else {
                out.push(p);
            }
        }
        out
    }

    /// The template variables' names.
    pub fn variables(&self) -> Vec<&str> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect()
    }
}

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

/// Every `dashboards/*.json`, sorted by file name.
pub fn load() -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("dashboards/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            Dashboard {
                file: p.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect()
}

/// (refId, expr, legendFormat) of each target of a panel.
pub fn targets(panel: &Value) -> Vec<(String, String, String)> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["refId"].as_str().unwrap_or("").to_string(),
                t["expr"].as_str().unwrap_or("").to_string(),
                t["legendFormat"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("")
}

/// Grafana's own variables a query may use.
pub const BUILTIN_VARS: &[&str] = &["__rate_interval", "__range", "__interval"];

/// `$name` and `${name}` replaced by `values` (name, value); the longest names first, so
/// `$__rate_interval` is never read as `$__range` plus text. Panics on a variable not given.
pub fn expand(expr: &str, values: &[(&str, &str)]) -> String {
    let mut names: Vec<&(&str, &str)> = values.iter().collect();
    names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let (braced, body) = match tail.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, tail),
        };
        let found = names.iter().find(|(n, _)| {
            body.starts_with(n)
                && (if braced {
                    body[n.len()..].starts_with('}')
                } else {
                    !body[n.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                })
        });
        let Some((name, value)) = found else {
            panic!("{expr}: variable at {:?} has no value", &rest[at..]);
        };
        out.push_str(value);
        rest = &body[name.len() + usize::from(braced)..];
    }
    out.push_str(rest);
    out
}
