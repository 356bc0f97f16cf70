//! The alert rules (alerts/vmwarden.rules.yml) linted the way the monitoring mixins lint theirs,
//! their promtool cases counted, and their runbooks (docs/runbooks/) checked:
//!
//! - every rule: a CamelCase `Vmwarden…` name, a `for:` of at least a minute (no alert on one bad
//!   scrape), `severity` from a fixed set, a `summary` without templates (notifications group and
//!   dedupe on it), a `description`, and `runbook_url: docs/runbooks/<AlertName>.md` that exists;
//! - every alert has a promtool case where it fires and one where it stays quiet;
//! - every runbook page has its sections, names a dashboard, a `vmwarden check`/`ctl` command and
//!   PromQL, belongs to an alert; and every `vmwarden …` command in the pages and the rules'
//!   descriptions names subcommands, options and values the built binary really has (read from
//!   its clap `--help`, not from a list kept here).
//!
//! `promtool test rules` itself runs in tests/metrics_contract.rs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The severities operators route on (docs/runbooks/README.md).
const SEVERITIES: &[&str] = &["critical", "warning"];
/// Shortest `for:`: one failed scrape or one odd sample never pages anyone.
const MIN_FOR_SECONDS: u64 = 60;
/// The dashboards a runbook may send the reader to (dashboards/, by their titles).
const DASHBOARDS: &[&str] = &[
    "vmwarden cluster overview",
    "vmwarden node detail",
    "vmwarden VM detail",
];
const SECTIONS: &[&str] = &[
    "## Meaning",
    "## Impact",
    "## Diagnosis",
    "## Mitigation",
    "## What never to do",
];

fn rules() -> Vec<(String, Rule)> {
    let text = std::fs::read_to_string(support::repo().join("alerts/vmwarden.rules.yml"))
        .expect("alerts/vmwarden.rules.yml");
    let f: RuleFile = serde_yaml::from_str(&text).expect("alerts/vmwarden.rules.yml parses");
    f.groups
        .into_iter()
        .flat_map(|g| {
            let name = g.name;
            g.rules.into_iter().map(move |r| (name.clone(), r))
        })
        .collect()
}

fn alerts() -> Vec<(String, Rule)> {
    rules()
        .into_iter()
        .filter_map(|(_, r)| Some((r.alert.clone()?, r)))
        .collect()
}

fn runbook_dir() -> PathBuf {
    support::repo().join("docs/runbooks")
}

/// Prometheus durations: `90s`, `5m`, `1h30m`, `6h`, `1d`, `1w`, `500ms`.
fn duration_seconds(s: &str) -> Option<u64> {
    let mut total_ms: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total_ms += n * ms;
        rest = &rest[unit_len..];
    }
    Some(total_ms / 1000)
}

fn camel_case(name: &str) -> bool {
    name.starts_with("Vmwarden")
        && name.len() > "Vmwarden".len()
        && name["Vmwarden".len()..].starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

#[test]
fn every_rule_passes_the_lint() {
    let all = rules();
    assert!(all.len() >= 20, "only {} rules", all.len());
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (group, r) in &all {
        let Some(name) = &r.alert else {
            problems.push(format!(
                "{group}: recording rule {:?}: this file holds alerts only",
                r.record
            ));
            continue;
        };
        let p = |what: String| format!("{name} ({group}): {what}");
        if !seen.insert(name.clone()) {
            problems.push(p("defined twice".into()));
        }
        if !camel_case(name) {
            problems.push(p("not a CamelCase name starting with Vmwarden".into()));
        }
        if r.expr.trim().is_empty() {
            problems.push(p("empty expr".into()));
        }
        match r.for_.as_deref().map(|f| (f, duration_seconds(f))) {
            None => problems.push(p(format!(
                "no `for:` (at least {MIN_FOR_SECONDS} s, so one bad scrape does not page)"
            ))),
            Some((f, None)) => problems.push(p(format!("`for: {f}` is not a duration"))),
            Some((f, Some(s))) if s < MIN_FOR_SECONDS => {
                problems.push(p(format!("`for: {f}` is shorter than {MIN_FOR_SECONDS} s")))
            }
            Some(_) => {}
        }
        match r.labels.get("severity") {
            Some(s) if SEVERITIES.contains(&s.as_str()) => {}
            other => problems.push(p(format!(
                "severity {other:?} is not one of {SEVERITIES:?}"
            ))),
        }
        for key in r.labels.keys().filter(|k| k.as_str() != "severity") {
            problems.push(p(format!("extra label {key:?}")));
        }
        let keys: BTreeSet<&str> = r.annotations.keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = ["summary", "description", "runbook_url"].into();
        if keys != want {
            problems.push(p(format!("annotations {keys:?}, want exactly {want:?}")));
        }
        for (k, v) in &r.annotations {
            if v.trim().is_empty() {
                problems.push(p(format!("empty {k}")));
            }
        }
        if let Some(s) = r.annotations.get("summary") {
            if s.contains("{{") || s.contains('$') {
                problems.push(p(format!(
                    "summary {s:?} has a template (put the particulars in description)"
                )));
            }
            if !s.starts_with(|c: char| c.is_uppercase()) || s.ends_with('.') || s.len() > 100 {
                problems.push(p(format!(
                    "summary {s:?}: one sentence, capitalised, no final period, at most 100 characters"
                )));
            }
        }
        let want_url = format!("docs/runbooks/{name}.md");
        match r.annotations.get("runbook_url") {
            Some(u) if *u == want_url => {
                if !support::repo().join(u).is_file() {
                    problems.push(p(format!("runbook {u} does not exist")));
                }
            }
            other => problems.push(p(format!("runbook_url {other:?}, want {want_url:?}"))),
        }
    }
    assert!(
        problems.is_empty(),
        "alert rule lint:\n{}",
        problems.join("\n")
    );
}

/// The lint's own pieces can fail.
#[test]
fn the_lint_rejects_what_it_should() {
    assert_eq!(duration_seconds("1h30m"), Some(5400));
    assert_eq!(duration_seconds("90s"), Some(90));
    assert_eq!(duration_seconds("500ms"), Some(0));
    assert_eq!(duration_seconds("5 m"), None);
    assert_eq!(duration_seconds("m"), None);
    assert_eq!(duration_seconds(""), None);
    assert!(camel_case("VmwardenVmDown"));
    assert!(!camel_case("VmwardenvmDown"));
    assert!(!camel_case("vmwarden_vm_down"));
    assert!(!camel_case("VmDown"));
    assert!(!camel_case("Vmwarden"));
}

#[derive(Debug, Deserialize)]
struct TestFile {
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
struct TestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Debug, Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_yaml::Value>,
}

#[test]
fn every_alert_has_a_promtool_case_that_fires_and_one_that_stays_quiet() {
    let text =
        std::fs::read_to_string(support::repo().join("alerts/tests/vmwarden.rules.test.yml"))
            .expect("alerts/tests/vmwarden.rules.test.yml");
    let f: TestFile = serde_yaml::from_str(&text).expect("the promtool test file parses");
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in f.tests.iter().flat_map(|g| &g.alert_rule_test) {
        if t.exp_alerts.is_empty() {
            quiet.insert(t.alertname.clone());
        } else {
            fires.insert(t.alertname.clone());
        }
    }
    let names: BTreeSet<String> = alerts().into_iter().map(|(n, _)| n).collect();
    let mut problems = Vec::new();
    for n in &names {
        if !fires.contains(n) {
            problems.push(format!("{n}: no promtool case where it fires"));
        }
        if !quiet.contains(n) {
            problems.push(format!(
                "{n}: no promtool case where it stays quiet (exp_alerts: [])"
            ));
        }
    }
    for n in fires.union(&quiet) {
        if !names.contains(n) {
            problems.push(format!("the promtool tests name {n}, which is not a rule"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alert_has_a_runbook_page_and_every_page_an_alert() {
    let names: BTreeSet<String> = alerts().into_iter().map(|(n, _)| n).collect();
    let mut problems = Vec::new();
    for n in &names {
        let path = runbook_dir().join(format!("{n}.md"));
        let Ok(page) = std::fs::read_to_string(&path) else {
            problems.push(format!("{n}: no page {}", path.display()));
            continue;
        };
        if !page.starts_with(&format!("# {n}\n")) {
            problems.push(format!("{n}.md: the first line must be `# {n}`"));
        }
        let mut at = 0;
        for s in SECTIONS {
            match page[at..].find(&format!("\n{s}\n")) {
                Some(i) => at += i + s.len(),
                None => problems.push(format!("{n}.md: no section `{s}` (in this order)")),
            }
        }
        let diagnosis = section(&page, "## Diagnosis");
        if !DASHBOARDS.iter().any(|d| diagnosis.contains(d)) {
            problems.push(format!(
                "{n}.md: Diagnosis names none of the dashboards {DASHBOARDS:?}"
            ));
        }
        if !diagnosis.contains("```promql\n") {
            problems.push(format!("{n}.md: Diagnosis has no ```promql block"));
        }
        let cmds = vmwarden_commands(&diagnosis);
        if !cmds
            .iter()
            .any(|c| c.get(1).is_some_and(|s| s == "check" || s == "ctl"))
        {
            problems.push(format!(
                "{n}.md: Diagnosis names no `vmwarden check` or `vmwarden ctl …` command"
            ));
        }
        if section(&page, "## What never to do").trim().is_empty() {
            problems.push(format!("{n}.md: `What never to do` is empty"));
        }
    }
    for e in std::fs::read_dir(runbook_dir()).expect("docs/runbooks/") {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        if p.extension().is_some_and(|x| x == "md") && stem != "README" && !names.contains(&stem) {
            problems.push(format!(
                "docs/runbooks/{stem}.md belongs to no alert of alerts/vmwarden.rules.yml"
            ));
        }
    }
    let readme = std::fs::read_to_string(runbook_dir().join("README.md")).expect("README.md");
    for n in &names {
        if !readme.contains(&format!("[{n}]({n}.md)")) {
            problems.push(format!("docs/runbooks/README.md does not link {n}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The text of a `## ` section, up to the next one.
fn section(page: &str, heading: &str) -> String {
    let Some(start) = page.find(&format!("\n{heading}\n")) else {
        return String::new();
    };
    let body = &page[start + heading.len() + 2..];
    let end = body.find("\n## ").unwrap_or(body.len());
    body[..end].to_string()
}

// ---- the commands the pages name, against the binary's own command tree ----

#[derive(Debug, Default)]
struct Cli {
    subcommands: BTreeMap<String, Cli>,
    /// --long / -s -> takes a value
    options: BTreeMap<String, bool>,
    /// Possible values of each positional argument (empty: anything).
    positionals: Vec<Vec<String>>,
}

fn help(path: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vmwarden"))
        .args(path)
        .arg("--help")
        .output()
        .expect("run vmwarden --help");
    assert!(
        out.status.success(),
        "vmwarden {} --help: {}",
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The command tree as clap prints it: `Commands:`, `Arguments:` (with `Possible values:`) and
/// `Options:` of each (sub)command's `--help`, recursively.
fn cli(path: &[&str]) -> Cli {
    let text = help(path);
    let mut c = Cli::default();
    let mut sec = "";
    let mut sub_names = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            sec = line;
            continue;
        }
        let t = line.trim();
        match sec {
            "Commands:" => {
                if let Some(name) = t.split_whitespace().next() {
                    if name != "help" && line.starts_with("  ") && !line.starts_with("   ") {
                        sub_names.push(name.to_string());
                    }
                }
            }
            "Arguments:" => {
                if t.starts_with('<') || t.starts_with('[') {
                    c.positionals.push(Vec::new());
                } else if let Some(v) = t.strip_prefix("- ") {
                    if let (Some(last), Some(value)) =
                        (c.positionals.last_mut(), v.split(':').next())
                    {
                        last.push(value.trim().to_string());
                    }
                }
            }
            "Options:" if t.starts_with('-') => {
                let spec = t.split("  ").next().unwrap_or(t);
                let takes = spec.contains('<');
                for flag in spec.split([',', ' ']).filter(|f| f.starts_with('-')) {
                    c.options.insert(flag.to_string(), takes);
                }
            }
            _ => {}
        }
    }
    for s in sub_names {
        let mut p = path.to_vec();
        p.push(&s);
        let child = cli(&p);
        c.subcommands.insert(s.clone(), child);
    }
    c
}

/// Check one command line (`vmwarden` first) against the tree.
fn check_command(root: &Cli, words: &[String]) -> Result<(), String> {
    let mut node = root;
    let mut path = vec!["vmwarden".to_string()];
    let mut positional = 0;
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        if w.starts_with('-') && w.len() > 1 {
            let flag = w.split('=').next().unwrap_or(w);
            match node.options.get(flag) {
                None => {
                    return Err(format!(
                        "`{}` has no option {flag} (it has {:?})",
                        path.join(" "),
                        node.options.keys().collect::<Vec<_>>()
                    ))
                }
                Some(true) if !w.contains('=') => i += 1,
                Some(_) => {}
            }
            continue;
        }
        if !node.subcommands.is_empty() {
            match node.subcommands.get(w.as_str()) {
                Some(child) => {
                    node = child;
                    path.push(w.clone());
                    positional = 0;
                    continue;
                }
                None => {
                    return Err(format!(
                        "`{}` has no subcommand {w:?} (it has {:?})",
                        path.join(" "),
                        node.subcommands.keys().collect::<Vec<_>>()
                    ))
                }
            }
        }
        if let Some(values) = node.positionals.get(positional) {
            if !values.is_empty() && !values.contains(w) {
                return Err(format!(
                    "`{}`: {w:?} is not one of {values:?}",
                    path.join(" ")
                ));
            }
        }
        positional += 1;
    }
    if !node.subcommands.is_empty() {
        return Err(format!("`{}` needs a subcommand", path.join(" ")));
    }
    Ok(())
}

/// Every command line starting with `vmwarden` in the code of a Markdown text: inline code spans
/// and fenced blocks (not ```promql ones), split at `&&`, `||`, `;` and `|`, a `$ ` or `# `
/// prompt and `sudo` dropped, a trailing `# comment` cut. Words are split at whitespace.
fn vmwarden_commands(md: &str) -> Vec<Vec<String>> {
    let mut code: Vec<String> = Vec::new();
    let mut fence: Option<String> = None;
    for line in md.lines() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(lang.trim().to_string()),
            };
            continue;
        }
        match &fence {
            Some(lang) if lang == "promql" => {}
            Some(_) => code.push(line.to_string()),
            None => {}
        }
    }
    // Inline spans: text between single backticks, outside fences (a span may wrap a line).
    let mut prose = String::new();
    let mut in_fence = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    for (i, part) in prose.split('`').enumerate() {
        if i % 2 == 1 {
            code.push(part.replace('\n', " "));
        }
    }
    let mut out = Vec::new();
    for c in code {
        let c = match c.find(" # ") {
            Some(at) => c[..at].to_string(),
            None => c,
        };
        for seg in c.split(['|', ';', '&']) {
            let mut words: Vec<String> = seg.split_whitespace().map(str::to_string).collect();
            while words
                .first()
                .is_some_and(|w| w == "$" || w == "#" || w == "sudo")
            {
                words.remove(0);
            }
            // The program's name alone names the program, not a command.
            let is_vmwarden = words.len() > 1
                && words
                    .first()
                    .is_some_and(|w| w == "vmwarden" || w.ends_with("/vmwarden"));
            if is_vmwarden {
                out.push(words);
            }
        }
    }
    out
}

#[test]
fn the_command_check_rejects_what_does_not_exist() {
    let root = cli(&[]);
    let ok = |s: &str| check_command(&root, &vmwarden_commands(&format!("`{s}`"))[0]);
    assert_eq!(ok("vmwarden ctl status vm1"), Ok(()));
    assert_eq!(ok("vmwarden ctl --json status vm1"), Ok(()));
    assert_eq!(ok("vmwarden ctl migrate vm1 --to n2 --dry-run"), Ok(()));
    assert_eq!(ok("vmwarden lock status vm1"), Ok(()));
    assert_eq!(
        ok("vmwarden check --config /etc/vmwarden/vmwarden.toml"),
        Ok(())
    );
    for bad in [
        "vmwarden ctl frobnicate vm1",
        "vmwarden ctl start vm1 --forse",
        "vmwarden lock grab vm1",
        "vmwarden status vm1",
        "vmwarden ctl",
        "vmwarden ctl status vm1 --json",
    ] {
        assert!(ok(bad).is_err(), "{bad} passed the check");
    }
    // Found in spans, blocks and after `&&`; promql blocks and other tools are left alone.
    let md = "Run `sudo vmwarden check` then\n```sh\n$ vmwarden ctl vms   # the VMs\nvirsh list && vmwarden ctl watchdog\n```\n```promql\nvmwarden_vm_status\n```\n`journalctl -u vmwarden`";
    let found: Vec<String> = vmwarden_commands(md).iter().map(|w| w.join(" ")).collect();
    assert_eq!(
        found,
        [
            "vmwarden ctl vms",
            "vmwarden ctl watchdog",
            "vmwarden check"
        ]
    );
}

#[test]
fn runbooks_and_rules_name_only_commands_the_binary_has() {
    let root = cli(&[]);
    // The tree really came from the binary.
    for s in ["run", "check", "ctl", "lock", "collect"] {
        assert!(root.subcommands.contains_key(s), "no {s} in {root:?}");
    }
    for s in ["start", "stop", "status", "reset", "watchdog", "vms"] {
        assert!(
            root.subcommands["ctl"].subcommands.contains_key(s),
            "ctl {s}"
        );
    }
    let mut texts: Vec<(String, String)> = Vec::new();
    for e in std::fs::read_dir(runbook_dir()).expect("docs/runbooks/") {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            texts.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    for (n, r) in alerts() {
        for (k, v) in &r.annotations {
            texts.push((format!("{n} {k}"), v.clone()));
        }
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    for (what, text) in &texts {
        for words in vmwarden_commands(text) {
            checked += 1;
            if let Err(e) = check_command(&root, &words) {
                problems.push(format!("{what}: `{}`: {e}", words.join(" ")));
            }
        }
    }
    let pages = texts.iter().filter(|(w, _)| w.ends_with(".md")).count();
    assert!(
        checked >= 2 * pages,
        "only {checked} vmwarden commands found in {pages} pages and the rules"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
