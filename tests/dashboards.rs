//! The Grafana dashboards in `dashboards/`, checked without Grafana (none can be installed here):
//! each is importable JSON with a fixed uid, a `$datasource` variable and the node/VM variables;
//! every panel has a title, a description, a unit and a query against `$datasource`; and every
//! query is checked against the metric contract (docs/metrics.md, which tests/metrics_contract.rs
//! keeps identical to what the code emits):
//!
//! - each metric it names is a documented family (or a histogram's `_bucket`/`_sum`/`_count`, or
//!   one of Prometheus' own per-target series);
//! - each label it matches, groups by or shows in a legend is a label of those families;
//! - each literal value it matches a label on is a value the contract documents for that family
//!   (drbd-reactor's example dashboard filters the connection state on a disk-state value, so its
//!   StandAlone panel always shows 0: that mistake fails here);
//! - counters and histogram samples appear only inside `rate()`/`increase()` over
//!   `$__rate_interval` (or `$__range`), gauges never do, and no window is hard-coded;
//! - every selector is scoped by `$job` (and `$instance` where the dashboard has that variable,
//!   `$vm` for the families with a `domain` label on the VM dashboard).
//!
//! tests/lab_dashboards.rs then runs every query against a real Prometheus scraping the lab.

#[path = "support/contract.rs"]
mod contract;
#[path = "support/dashboards.rs"]
mod dash;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The three dashboards, their fixed uids and titles (runbooks link to them by title).
const EXPECTED: &[(&str, &str, &str)] = &[
    (
        "vmwarden-cluster.json",
        "vmwarden-cluster",
        "vmwarden cluster overview",
    ),
    (
        "vmwarden-node.json",
        "vmwarden-node",
        "vmwarden node detail",
    ),
    ("vmwarden-vm.json", "vmwarden-vm", "vmwarden VM detail"),
];

/// Prometheus' own series for each target (not vmwarden's), with the labels they carry.
const PROMETHEUS_SERIES: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];

/// Labels Prometheus adds to every series of a target.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Grafana unit ids the dashboards use (a typo would show raw numbers).
const UNITS: &[&str] = &[
    "short",
    "none",
    "s",
    "bytes",
    "Bps",
    "percentunit",
    "ops",
    "reqps",
    "iops",
    "pps",
];

const PANEL_TYPES: &[&str] = &["stat", "timeseries", "table", "state-timeline"];

// ---------------------------------------------------------------- a small PromQL reader

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    /// The text between `[` and `]`.
    Range(String),
    Punct(String),
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    let b = expr.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let s = i;
            while i < b.len()
                && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
            {
                i += 1;
            }
            out.push(Tok::Ident(expr[s..i].to_string()));
        } else if c.is_ascii_digit() || c == '.' {
            let s = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            out.push(Tok::Num(expr[s..i].to_string()));
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = b.get(i) else {
                    return Err(format!("unterminated string in {expr}"));
                };
                i += 1;
                match ch as char {
                    '\\' => {
                        s.push(*b.get(i).ok_or("dangling escape")? as char);
                        i += 1;
                    }
                    q if q == c => break,
                    o => s.push(o),
                }
            }
            out.push(Tok::Str(s));
        } else if c == '[' {
            let end = expr[i..].find(']').ok_or(format!("unclosed [ in {expr}"))?;
            out.push(Tok::Range(expr[i + 1..i + end].to_string()));
            i += end + 1;
        } else if c == '$' {
            return Err(format!("unexpanded variable in {expr}"));
        } else {
            let two = expr.get(i..i + 2).unwrap_or("");
            if ["==", "!=", "=~", "!~", ">=", "<="].contains(&two) {
                out.push(Tok::Punct(two.to_string()));
                i += 2;
            } else {
                out.push(Tok::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
struct Selector {
    metric: String,
    /// (label, operator, value)
    matchers: Vec<(String, String, String)>,
    /// The function whose argument the selector is (innermost open parenthesis), if any.
    inside: Option<String>,
    range: Option<String>,
}

#[derive(Debug, Default)]
struct Query {
    selectors: Vec<Selector>,
    /// Labels named in by/without/on/ignoring/group_left/group_right clauses.
    grouping: Vec<String>,
    /// `AGG by (L) (...)` at the very start: the labels the result keeps.
    outer_by: Option<Vec<String>>,
    /// Every `[...]` window.
    ranges: Vec<String>,
}

const CLAUSES: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn parse(expr: &str) -> Result<Query, String> {
    let toks = lex(expr)?;
    let mut q = Query::default();
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(id) if CLAUSES.contains(&id.as_str()) => {
                if toks.get(i + 1) == Some(&Tok::Punct("(".into())) {
                    let mut j = i + 2;
                    let mut labels = Vec::new();
                    while let Some(t) = toks.get(j) {
                        match t {
                            Tok::Ident(l) => labels.push(l.clone()),
                            Tok::Punct(p) if p == ")" => break,
                            Tok::Punct(p) if p == "," => {}
                            other => return Err(format!("{other:?} in a {id} clause of {expr}")),
                        }
                        j += 1;
                    }
                    if id == "by" && i == 1 && q.outer_by.is_none() {
                        q.outer_by = Some(labels.clone());
                    }
                    q.grouping.extend(labels);
                    i = j + 1;
                    continue;
                }
                i += 1;
            }
            Tok::Ident(id) if toks.get(i + 1) == Some(&Tok::Punct("{".into())) => {
                let mut j = i + 2;
                let mut matchers = Vec::new();
                loop {
                    match (toks.get(j), toks.get(j + 1), toks.get(j + 2)) {
                        (Some(Tok::Punct(p)), _, _) if p == "}" => break,
                        (Some(Tok::Punct(p)), _, _) if p == "," => j += 1,
                        (Some(Tok::Ident(l)), Some(Tok::Punct(op)), Some(Tok::Str(v)))
                            if ["=", "!=", "=~", "!~"].contains(&op.as_str()) =>
                        {
                            matchers.push((l.clone(), op.clone(), v.clone()));
                            j += 3;
                        }
                        other => return Err(format!("bad label matcher {other:?} in {expr}")),
                    }
                }
                let range = match toks.get(j + 1) {
                    Some(Tok::Range(r)) => Some(r.clone()),
                    _ => None,
                };
                q.selectors.push(Selector {
                    metric: id.clone(),
                    matchers,
                    inside: stack.last().cloned().flatten(),
                    range,
                });
                i = j + 1;
            }
            Tok::Ident(id) if toks.get(i + 1) == Some(&Tok::Punct("(".into())) => {
                stack.push(Some(id.clone()));
                i += 2;
            }
            Tok::Punct(p) if p == "(" => {
                stack.push(None);
                i += 1;
            }
            Tok::Punct(p) if p == ")" => {
                stack.pop().ok_or(format!("unbalanced ) in {expr}"))?;
                i += 1;
            }
            Tok::Range(r) => {
                q.ranges.push(r.clone());
                i += 1;
            }
            Tok::Ident(id)
                if id.starts_with("vmwarden_") || PROMETHEUS_SERIES.contains(&id.as_str()) =>
            {
                return Err(format!(
                    "{id} without label matchers (scope it by $job) in {expr}"
                ));
            }
            _ => i += 1,
        }
    }
    if !stack.is_empty() {
        return Err(format!("unbalanced ( in {expr}"));
    }
    Ok(q)
}

// ---------------------------------------------------------------- the checks

/// Whether `word` occurs in `text` as a whole word (not as part of a longer name).
fn has_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        !text[..at].ends_with(is_word) && !text[at + word.len()..].starts_with(is_word)
    })
}

/// Whether `value` is documented for `label` of family `name`: in the parts of its meaning that
/// describe that label when there are some (so a disk-state word on the connection label fails),
/// else anywhere in its row or its section's prose.
fn documented_value(
    families: &BTreeMap<String, contract::Family>,
    name: &str,
    f: &contract::Family,
    label: &str,
    value: &str,
) -> bool {
    let parts = contract::label_values_text(families, name, label);
    if parts.is_empty() {
        has_word(&f.row, value) || has_word(&f.section, value)
    } else {
        parts.iter().any(|p| has_word(p, value))
    }
}

/// Problems of one query (its variables expanded to placeholders): empty when it is sound.
fn check_query(
    dash: &dash::Dashboard,
    families: &BTreeMap<String, contract::Family>,
    expr: &str,
    legend: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let vars = dash.variables();
    // Variables used must exist; expand them to plain values to read the PromQL.
    let mut values: Vec<(&str, &str)> = vec![
        ("__rate_interval", "RATE_INTERVAL"),
        ("__range", "RANGE"),
        ("__interval", "INTERVAL"),
    ];
    for v in &vars {
        values.push((v, "VAR"));
    }
    for (at, _) in expr.match_indices('$') {
        let name: String = expr[at + 1..]
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !vars.contains(&name.as_str()) && !dash::BUILTIN_VARS.contains(&name.as_str()) {
            problems.push(format!(
                "uses ${name}, which is not a variable of the dashboard"
            ));
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    // Placeholders keep the variable visible in the matcher values checked below.
    let marked = expr
        .replace("$__rate_interval", "RATE_INTERVAL")
        .replace("$__range", "RANGE")
        .replace("$__interval", "INTERVAL")
        .replace('$', "VAR_");
    let q = match parse(&marked) {
        Ok(q) => q,
        Err(e) => return vec![e],
    };
    if q.selectors.is_empty() {
        problems.push("selects no series".into());
    }
    for r in &q.ranges {
        if r != "RATE_INTERVAL" && r != "RANGE" {
            problems.push(format!(
                "window [{r}] is hard-coded: use [$__rate_interval] (or [$__range])"
            ));
        }
    }
    let mut all_labels: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    all_labels.insert("le".into());
    for s in &q.selectors {
        let (labels, fam) = if PROMETHEUS_SERIES.contains(&s.metric.as_str()) {
            (BTreeSet::new(), None)
        } else if let Some(f) = families.get(&s.metric) {
            (f.labels.clone(), Some((s.metric.clone(), f)))
        } else if let Some((base, f)) = ["_bucket", "_sum", "_count"].iter().find_map(|suf| {
            let base = s.metric.strip_suffix(suf)?;
            let f = families.get(base).filter(|f| f.kind == "histogram")?;
            Some((base.to_string(), f))
        }) {
            (f.labels.clone(), Some((base, f)))
        } else {
            problems.push(format!(
                "{} is not a family of docs/metrics.md (nor a Prometheus per-target series)",
                s.metric
            ));
            continue;
        };
        all_labels.extend(labels.iter().cloned());
        let known = |l: &str| labels.contains(l) || TARGET_LABELS.contains(&l);
        // Counters and histograms are rated over Grafana's interval; gauges never are.
        let cumulative = fam
            .as_ref()
            .is_some_and(|(_, f)| f.kind == "counter" || f.kind == "histogram");
        let rated = matches!(s.inside.as_deref(), Some("rate" | "increase"));
        if cumulative && !rated {
            problems.push(format!(
                "counter {} must be inside rate() or increase()",
                s.metric
            ));
        }
        if cumulative && rated && !matches!(s.range.as_deref(), Some("RATE_INTERVAL" | "RANGE")) {
            problems.push(format!(
                "{} is rated over {:?}: use [$__rate_interval]",
                s.metric, s.range
            ));
        }
        if !cumulative && rated {
            problems.push(format!(
                "{} is a gauge: rate()/increase() of it is meaningless",
                s.metric
            ));
        }
        for (label, op, value) in &s.matchers {
            if !known(label) {
                problems.push(format!(
                    "{} is matched on label {label:?}, which it does not have ({labels:?})",
                    s.metric
                ));
                continue;
            }
            if value.contains("VAR_") {
                continue;
            }
            // A literal: every alternative must be a value the contract documents for this
            // family (in its row or its section's prose).
            let Some((name, f)) = &fam else { continue };
            let alternatives: Vec<&str> = if op.ends_with('~') {
                value.split('|').collect()
            } else {
                vec![value.as_str()]
            };
            for alt in alternatives {
                if alt.is_empty()
                    || !alt
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-/".contains(c))
                {
                    problems.push(format!(
                        "{name}{{{label}{op}{value:?}}}: only plain words can be checked against the contract"
                    ));
                } else if !documented_value(families, name, f, label, alt) {
                    problems.push(format!(
                        "{name} is matched on {label}{op}{alt:?}, a value docs/metrics.md never names for it: the series would never match"
                    ));
                }
            }
        }
        // Each selector is scoped by the dashboard's variables.
        let uses = |l: &str, var: &str| {
            s.matchers
                .iter()
                .any(|(ml, _, v)| ml == l && v == &format!("VAR_{var}"))
        };
        if !uses("job", "job") {
            problems.push(format!("{} is not scoped by job=~\"$job\"", s.metric));
        }
        if vars.contains(&"instance") && !uses("instance", "instance") {
            problems.push(format!(
                "{} is not scoped by instance=~\"$instance\"",
                s.metric
            ));
        }
        if vars.contains(&"vm") && labels.contains("domain") && !uses("domain", "vm") {
            problems.push(format!("{} is not scoped by domain=\"$vm\"", s.metric));
        }
    }
    for l in &q.grouping {
        if !all_labels.contains(l) {
            problems.push(format!("groups by {l:?}, a label none of its series has"));
        }
    }
    // Legend {{label}}s must survive the query's outer aggregation.
    let mut rest = legend;
    while let Some(at) = rest.find("{{") {
        let Some(end) = rest[at..].find("}}") else {
            problems.push(format!("unclosed {{{{ in legend {legend:?}"));
            break;
        };
        let l = rest[at + 2..at + end].trim();
        let kept = match &q.outer_by {
            Some(by) => by.iter().any(|b| b == l),
            None => all_labels.contains(l),
        };
        if !kept {
            problems.push(format!(
                "legend {legend:?} shows {{{{{l}}}}}, which the result does not have"
            ));
        }
        rest = &rest[at + end + 2..];
    }
    problems
}

fn is_datasource_var(ds: &Value) -> bool {
    ds["type"] == "prometheus"
        && matches!(ds["uid"].as_str(), Some("${datasource}" | "$datasource"))
}

/// Cells of the 24-column grid a panel covers.
fn cells(p: &Value) -> Vec<(u64, u64)> {
    let g = &p["gridPos"];
    let (x, y, w, h) = (
        g["x"].as_u64().unwrap_or(0),
        g["y"].as_u64().unwrap_or(0),
        g["w"].as_u64().unwrap_or(0),
        g["h"].as_u64().unwrap_or(0),
    );
    (x..x + w)
        .flat_map(|c| (y..y + h).map(move |r| (c, r)))
        .collect()
}

#[test]
fn the_three_dashboards_exist_with_fixed_uids_and_titles() {
    let dashboards = dash::load();
    let files: Vec<&str> = dashboards.iter().map(|d| d.file.as_str()).collect();
    let expected: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    assert_eq!(
        files, expected,
        "dashboards/ holds exactly these dashboards"
    );
    let mut uids = BTreeSet::new();
    for (d, (_, uid, title)) in dashboards.iter().zip(EXPECTED) {
        assert_eq!(d.uid(), *uid, "{}: uid", d.file);
        assert_eq!(d.title(), *title, "{}: title", d.file);
        assert!(uids.insert(d.uid().to_string()), "uid {} twice", d.uid());
        assert!(
            d.json["id"].is_null(),
            "{}: an instance id would clash on import",
            d.file
        );
        let schema = d.json["schemaVersion"].as_u64().unwrap_or(0);
        assert!(
            schema >= 36,
            "{}: schemaVersion {schema} (a current Grafana's is 39)",
            d.file
        );
        assert_eq!(
            d.json["tags"][0], "vmwarden",
            "{}: tagged for the dashboard links",
            d.file
        );
    }
}

#[test]
fn variables_use_the_datasource_variable() {
    let families = contract::families();
    for d in dash::load() {
        let vars = d.json["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names = d.variables();
        assert_eq!(
            names.first(),
            Some(&"datasource"),
            "{}: $datasource first",
            d.file
        );
        let ds = &vars[0];
        assert_eq!(ds["type"], "datasource", "{}", d.file);
        assert_eq!(ds["query"], "prometheus", "{}", d.file);
        assert!(names.contains(&"job"), "{}: a $job variable", d.file);
        let want = if d.uid() == "vmwarden-vm" {
            "vm"
        } else {
            "instance"
        };
        assert!(names.contains(&want), "{}: a ${want} variable", d.file);
        for v in vars.iter().skip(1) {
            let name = v["name"].as_str().unwrap_or("?");
            assert_eq!(v["type"], "query", "{}: ${name}", d.file);
            assert!(
                is_datasource_var(&v["datasource"]),
                "{}: ${name} must query $datasource",
                d.file
            );
            // label_values(METRIC{...}, LABEL): a documented family and one of its labels.
            let q = v["query"]["query"].as_str().unwrap_or("");
            assert_eq!(v["definition"].as_str(), Some(q), "{}: ${name}", d.file);
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{}: ${name} is not label_values(...): {q}", d.file));
            let (sel, label) = inner.rsplit_once(',').unwrap();
            let metric = sel.split('{').next().unwrap().trim();
            let f = families.get(metric).unwrap_or_else(|| {
                panic!("{}: ${name} reads {metric}, not in docs/metrics.md", d.file)
            });
            let label = label.trim();
            assert!(
                f.labels.contains(label) || TARGET_LABELS.contains(&label),
                "{}: ${name} reads label {label} that {metric} does not have",
                d.file
            );
            if v["multi"] == true {
                assert_eq!(
                    v["allValue"], ".+",
                    "{}: ${name} All must be a regex",
                    d.file
                );
            }
        }
    }
}

#[test]
fn every_panel_has_a_title_a_unit_and_queries_on_the_datasource() {
    let mut problems = Vec::new();
    for d in dash::load() {
        let mut titles = BTreeSet::new();
        let mut ids = BTreeSet::new();
        let mut grid: BTreeMap<(u64, u64), String> = BTreeMap::new();
        for p in d.json["panels"].as_array().unwrap() {
            let t = dash::title(p).to_string();
            if !ids.insert(p["id"].as_u64().unwrap_or(0)) {
                problems.push(format!("{}: panel id {} twice", d.file, p["id"]));
            }
            for c in cells(p) {
                if let Some(other) = grid.insert(c, t.clone()) {
                    problems.push(format!("{}: {t:?} overlaps {other:?}", d.file));
                    break;
                }
            }
        }
        for p in d.panels() {
            let t = dash::title(p);
            let at = format!("{} / {t:?}", d.file);
            if t.trim().is_empty() {
                problems.push(format!("{}: a panel without a title", d.file));
            }
            if !titles.insert(t.to_string()) {
                problems.push(format!("{at}: title used twice"));
            }
            let kind = p["type"].as_str().unwrap_or("");
            if !PANEL_TYPES.contains(&kind) {
                problems.push(format!("{at}: panel type {kind:?}"));
            }
            if p["description"].as_str().is_none_or_empty() {
                problems.push(format!("{at}: no description"));
            }
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
            if !UNITS.contains(&unit) {
                problems.push(format!("{at}: unit {unit:?} (fieldConfig.defaults.unit)"));
            }
            if !is_datasource_var(&p["datasource"]) {
                problems.push(format!(
                    "{at}: datasource {} is not $datasource",
                    p["datasource"]
                ));
            }
            let ts = p["targets"].as_array().cloned().unwrap_or_default();
            if ts.is_empty() {
                problems.push(format!("{at}: no query"));
            }
            for t in &ts {
                if !is_datasource_var(&t["datasource"]) {
                    problems.push(format!("{at}: a target's datasource is not $datasource"));
                }
                if t["expr"].as_str().is_none_or_empty() {
                    problems.push(format!("{at}: a target without expr"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_query_matches_the_metric_contract() {
    let families = contract::families();
    let mut problems = Vec::new();
    let mut checked = 0;
    for d in dash::load() {
        for p in d.panels() {
            for (ref_id, expr, legend) in dash::targets(p) {
                checked += 1;
                for e in check_query(&d, &families, &expr, &legend) {
                    problems.push(format!(
                        "{} / {:?} / {ref_id}: {e}\n    {expr}",
                        d.file,
                        dash::title(p)
                    ));
                }
            }
        }
    }
    assert!(checked >= 60, "only {checked} queries");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself: each rule rejects the mistake it is for (so a passing dashboard means
/// something), starting with drbd-reactor's StandAlone panel.
#[test]
fn the_query_checker_catches_the_classic_mistakes() {
    let families = contract::families();
    let d = dash::load()
        .into_iter()
        .find(|d| d.uid() == "vmwarden-node")
        .unwrap();
    let j = r#"job=~"$job", instance=~"$instance""#;
    let bad = [
        // A disk-state word matched on the connection label: never true.
        (
            format!(r#"count(vmwarden_drbd_peer_state{{{j}, connection="UpToDate"}})"#),
            "never names",
        ),
        (
            format!(r#"count(vmwarden_drbd_peer_state{{{j}, connection="Standalone"}})"#),
            "never names",
        ),
        (
            format!(r#"count(vmwarden_drbd_state{{{j}, connection="StandAlone"}})"#),
            "does not have",
        ),
        (
            format!(r#"vmwarden_domain_state{{{j}, state="up"}}"#),
            "never names",
        ),
        (
            format!(r#"vmwarden_drbd_connection_state{{{j}}}"#),
            "not a family",
        ),
        (format!(r#"vmwarden_action_total{{{j}}}"#), "inside rate"),
        (
            format!(r#"rate(vmwarden_action_total{{{j}}}[5m])"#),
            "hard-coded",
        ),
        (
            format!(r#"rate(vmwarden_collector_success{{{j}}}[$__rate_interval])"#),
            "gauge",
        ),
        (
            format!(r#"rate(vmwarden_action_duration_seconds_bucket{{{j}}}[$__rate_interval])"#),
            "",
        ),
        (
            format!(r#"vmwarden_action_duration_seconds_sum{{{j}}}"#),
            "inside rate",
        ),
        (
            r#"vmwarden_collector_success{instance=~"$instance"}"#.to_string(),
            "$job",
        ),
        (
            r#"vmwarden_collector_success{job=~"$job"}"#.to_string(),
            "$instance",
        ),
        (
            format!(r#"vmwarden_collector_success{{{j}}} + vmwarden_build_info"#),
            "without label matchers",
        ),
        (
            format!(r#"vmwarden_collector_success{{{j}, collector="x"}} * $nothing"#),
            "$nothing",
        ),
        (
            format!(r#"sum by (domain) (vmwarden_collector_success{{{j}}})"#),
            "groups by",
        ),
    ];
    for (expr, want) in bad {
        let problems = check_query(&d, &families, &expr, "");
        if want.is_empty() {
            assert!(problems.is_empty(), "{expr}: {problems:?}");
        } else {
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{expr} should be rejected ({want:?}), got {problems:?}"
            );
        }
    }
    // A legend label the aggregation dropped.
    let p = check_query(
        &d,
        &families,
        &format!(r#"sum by (collector) (vmwarden_collector_success{{{j}}})"#),
        "{{instance}} {{collector}}",
    );
    assert!(p.iter().any(|p| p.contains("{{instance}}")), "{p:?}");
    // The right value on the right label passes (also through a reference to another family's
    // label, and from the section's prose).
    for ok in [
        format!(r#"count(vmwarden_drbd_peer_state{{{j}, connection="StandAlone"}})"#),
        format!(r#"count(vmwarden_drbd_peer_state{{{j}, peer_disk_state!="UpToDate"}})"#),
        format!(r#"count(vmwarden_vm_status{{{j}, status=~"ERROR_up|USER_down"}})"#),
        format!(r#"count(vmwarden_sanlock_host_state{{{j}, state="FREE"}})"#),
    ] {
        let p = check_query(&d, &families, &ok, "");
        assert!(p.is_empty(), "{ok}: {p:?}");
    }
}

#[test]
fn expand_replaces_variables_longest_name_first() {
    let v = [
        ("__range", "5m"),
        ("__rate_interval", "1m"),
        ("job", "vmwarden"),
        ("instance", "10.77.0.1:10177"),
    ];
    assert_eq!(
        dash::expand(
            r#"rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval]) / $__range"#,
            &v
        ),
        r#"rate(x{job=~"vmwarden", instance=~"10.77.0.1:10177"}[1m]) / 5m"#
    );
}

/// docs/dashboards.md describes every panel (by its title) of every dashboard.
#[test]
fn every_panel_is_described_in_the_docs() {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboards.md"),
    )
    .expect("docs/dashboards.md");
    for d in dash::load() {
        assert!(
            docs.contains(d.title()),
            "docs/dashboards.md does not name {}",
            d.title()
        );
        assert!(
            docs.contains(d.uid()),
            "docs/dashboards.md does not give uid {}",
            d.uid()
        );
        for p in d.panels() {
            let t = dash::title(p);
            assert!(
                docs.contains(&format!("| {t} |")),
                "docs/dashboards.md has no row for panel {t:?} of {}",
                d.title()
            );
        }
    }
}

trait EmptyStr {
    fn is_none_or_empty(&self) -> bool;
}

impl EmptyStr for Option<&str> {
    fn is_none_or_empty(&self) -> bool {
        self.map_or(true, |s| s.trim().is_empty())
    }
}
