//! docs/metrics.md is the contract: every family the code emits is documented with the same type
//! and label names, and every documented family is emitted. The code's output is taken from the
//! agent's own rendering plus the golden renderings of each collector (which their golden tests
//! keep identical to the code), so a new family fails here until it is documented.
//! Also lints the full exposition with promtool.

#[path = "support/contract.rs"]
mod contract;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use vmwarden::collect::{CollectorReport, Outcome, Snapshot};
use vmwarden::metrics::{render, AgentCounters, Registry};

use contract::{documented, Families};

const GOLDENS: &[&str] = &[
    "drbd/proc84_syncsource.metrics",
    "drbd/json9_two_peers_syncing.metrics",
    "lvm/activated-h1.metrics",
    "sanlock/h1.metrics",
    "libvirt/snapshot.metrics",
    "invariants/h1.metrics",
];

fn report<T>(outcome: Outcome<T>) -> CollectorReport<T> {
    CollectorReport {
        outcome,
        duration: Duration::from_millis(3),
    }
}

/// The agent's own families, from a real render of a snapshot with every kind of outcome.
fn agent_rendering() -> String {
    agent_registry().to_openmetrics()
}

fn agent_registry() -> Registry {
    let snap = Snapshot {
        drbd: report(Outcome::Absent("no DRBD".into())),
        lvm: report(Outcome::Failed("timeout".into())),
        sanlock: report(Outcome::Disabled),
        libvirt: report(Outcome::Ok(vmwarden::probe::libvirt::LibvirtSnapshot {
            libvirt_version: Some("9.0.0".into()),
            hypervisor_version: Some("7.2.22".into()),
            ..Default::default()
        })),
    };
    let actions = std::sync::Arc::new(vmwarden::actions::stats::ActionStats::new());
    actions.observe("migrate", "completed", 3.2);
    actions.unfinished_begin("vm2", "start", 1_796_000_000);
    let counters = AgentCounters {
        parse_errors: vec![("drbd", 2), ("lvm", 0)],
        actions: Some(actions),
        watchdog: None,
    };
    let obs = vmwarden::collect::Observation::judge(snap, None, &Default::default()).with_peers(
        "n1",
        vec![vmwarden::invariants::PeerVms {
            node: "n2".into(),
            active: Ok(vec![]),
        }],
    );
    let mut reg = render(&obs, &counters);
    // The watchdog's families, from views of the kinds it reports.
    let views = [vmwarden::watchdog::VmView {
        vm: "vm1".into(),
        status: vmwarden::watchdog::Status::ErrorDown,
        status_word: "ERROR_down",
        intent: Some(vmwarden::watchdog::intent::Want::Run),
        decision: "restart attempt 1: started".into(),
        attempts: 1,
        gave_up: false,
        restarts: 1,
        elsewhere: None,
        resume_stuck: false,
    }];
    vmwarden::watchdog::metrics::encode_views(
        &mut reg,
        &views,
        &[("vm1".into(), "started", 1)],
        &[("vm1".into(), "resumed", 1)],
        &Default::default(),
    );
    // The API's request counter, added by the HTTP server.
    let api = vmwarden::api::stats::ApiStats::default();
    api.observe("/v1/vms/{vm}", 200);
    api.register(&mut reg);
    reg
}

/// Classic text from OpenMetrics by the format's rule (for the golden files, which hold
/// OpenMetrics): `# EOF` dropped, a counter's HELP and TYPE named with `_total`. The agent writes
/// classic text itself; its own classic rendering is checked as written.
fn classic(om: &str) -> String {
    let counters: BTreeSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in om.lines().filter(|l| *l != "# EOF") {
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|k| line.strip_prefix(k).map(|r| (k, r)));
        match meta {
            Some((k, rest)) if counters.contains(rest.split(' ').next().unwrap_or("")) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(&format!("{k}{name}_total {tail}\n"));
            }
            _ => out.push_str(&format!("{line}\n")),
        }
    }
    out
}

/// name -> (type, label names) from OpenMetrics text. Counter samples carry `_total`.
fn emitted(text: &str, into: &mut Families) {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), ty.to_string());
        }
    }
    for (name, ty) in &types {
        let exposed = if ty == "counter" {
            format!("{name}_total")
        } else {
            name.clone()
        };
        let e = into
            .entry(exposed)
            .or_insert_with(|| (ty.clone(), BTreeSet::new()));
        assert_eq!(&e.0, ty, "{name} emitted with two types");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = match line.split_once('{') {
            Some((n, rest)) => (n, rest.rsplit_once('}').unwrap().0),
            None => (line.split_once(' ').unwrap().0, ""),
        };
        // A histogram's samples are NAME_bucket (with `le`), NAME_sum and NAME_count.
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                let b = name.strip_suffix(suf)?;
                (types.get(b).map(String::as_str) == Some("histogram")).then_some(b)
            })
            .unwrap_or(name);
        let fam = into
            .get_mut(base)
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE line"));
        for pair in split_labels(labels) {
            if !(base != name && pair == "le") {
                fam.1.insert(pair);
            }
        }
    }
}

/// Label names of `a="x",b="y, \"z\""` (values may hold commas and escaped quotes).
fn split_labels(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').to_string());
        let mut escaped = false;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = i;
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = &after[(end + 1).min(after.len())..];
    }
    names
}

fn code_families() -> Families {
    let mut fams = Families::new();
    emitted(&agent_rendering(), &mut fams);
    for g in GOLDENS {
        emitted(&support::fixture(g), &mut fams);
    }
    fams
}

#[test]
fn every_emitted_family_is_documented_alike() {
    let docs = documented();
    let code = code_families();
    let mut problems = Vec::new();
    for (name, (ty, labels)) in &code {
        match docs.get(name) {
            None => problems.push(format!(
                "{name} ({ty}, labels {labels:?}) is emitted but not in docs/metrics.md"
            )),
            Some((dty, dlabels)) => {
                if dty != ty {
                    problems.push(format!("{name}: code says {ty}, docs say {dty}"));
                }
                if dlabels != labels {
                    problems.push(format!(
                        "{name}: code labels {labels:?}, docs labels {dlabels:?}"
                    ));
                }
            }
        }
    }
    for name in docs.keys() {
        if !code.contains_key(name) {
            problems.push(format!("{name} is documented but the code never emits it"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md and the code differ:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_families_the_issue_names_exist() {
    let code = code_families();
    for name in [
        "vmwarden_collector_success",
        "vmwarden_collector_duration_seconds",
        "vmwarden_build_info",
        "vmwarden_drbd_state",
        "vmwarden_drbd_peer_state",
        "vmwarden_drbd_out_of_sync_bytes",
        "vmwarden_drbd_resync_done_ratio",
        "vmwarden_drbd_network_sent_bytes_total",
        "vmwarden_drbd_network_received_bytes_total",
        "vmwarden_drbd_disk_read_bytes_total",
        "vmwarden_drbd_disk_written_bytes_total",
        "vmwarden_lvm_vg_info",
        "vmwarden_lvm_lv_active",
        "vmwarden_lvm_lv_size_bytes",
        "vmwarden_sanlock_lockspace_info",
        "vmwarden_sanlock_renewal_age_seconds",
        "vmwarden_sanlock_host_state",
        "vmwarden_sanlock_resource_held",
        "vmwarden_domain_state",
        "vmwarden_domain_cpu_seconds_total",
        "vmwarden_domain_memory_bytes",
        "vmwarden_domain_block_read_bytes_total",
        "vmwarden_domain_block_written_bytes_total",
        "vmwarden_domain_network_receive_bytes_total",
        "vmwarden_domain_network_transmit_bytes_total",
        "vmwarden_parse_errors_total",
    ] {
        assert!(code.contains_key(name), "{name} is not emitted");
    }
    assert!(code["vmwarden_lvm_lv_active"].1.contains("state"));
    assert!(code["vmwarden_domain_state"].1.contains("reason"));
    for l in ["connection", "replication", "peer_role", "peer_disk_state"] {
        assert!(code["vmwarden_drbd_peer_state"].1.contains(l), "{l}");
    }
    assert!(code["vmwarden_sanlock_resource_held"].1.contains("mode"));
}

/// Whether promtool runs here; without it the test is skipped loudly (failed under
/// VMWARDEN_REQUIRE_REAL=1).
fn have_promtool(test: &str) -> bool {
    if support::have("promtool") {
        return true;
    }
    assert!(
        !support::require_real(),
        "promtool is not installed (scripts/setup.sh installs it)"
    );
    eprintln!("*** SKIPPED {test}: promtool not installed");
    false
}

/// `promtool check metrics` (Prometheus' own linter) on every rendering, in classic text format.
#[test]
fn promtool_accepts_the_exposition() {
    if !have_promtool("promtool_accepts_the_exposition") {
        return;
    }
    let mut texts = vec![(
        "agent".to_string(),
        agent_registry().to_text(vmwarden::negotiate::Format::Classic),
    )];
    for g in GOLDENS {
        texts.push((g.to_string(), classic(&support::fixture(g))));
    }
    for (what, text) in texts {
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics rejects {what}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The alert rules shipped in alerts/vmwarden.rules.yml use only documented families, with
/// label names those families have (a renamed metric or label would silently never fire).
#[test]
fn alert_rules_use_documented_families_and_labels() {
    let rules = std::fs::read_to_string(support::repo().join("alerts/vmwarden.rules.yml"))
        .expect("alerts/vmwarden.rules.yml");
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules).expect("the rules parse");
    // Every expr, multi-line ones included.
    let exprs: Vec<String> = rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .map(|r| r["expr"].as_str().expect("an expr").to_string())
        .collect();
    assert!(exprs.len() >= 20, "only {} exprs", exprs.len());
    let docs = documented();
    let mut used = 0;
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("vmwarden_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let (_, labels) = docs.get(name).unwrap_or_else(|| {
                panic!("alert rule uses {name}, not in docs/metrics.md: {expr}")
            });
            // Label matchers right after the name: {a="x",b=~"y|z"}
            if let Some(sel) = tail[end..].strip_prefix('{') {
                let sel = &sel[..sel.find('}').expect("closing brace")];
                for m in sel.split(',') {
                    let key = m.split(['=', '!']).next().unwrap_or("").trim();
                    assert!(
                        labels.contains(key),
                        "alert rule matches {name} on label {key:?}, which it does not have ({labels:?}): {expr}"
                    );
                }
            }
            used += 1;
            rest = &tail[end..];
        }
    }
    assert!(
        used >= 25,
        "only {used} vmwarden metrics found in the rules"
    );
}

/// `promtool check rules` and the rules' unit tests (alerts/tests/, `promtool test rules`):
/// each alert fires on the series it is for and stays quiet on the look-alikes (a migration's
/// overlap, an absent collector, a node without shared VGs).
#[test]
fn promtool_checks_and_tests_the_alert_rules() {
    if !have_promtool("promtool_checks_and_tests_the_alert_rules") {
        return;
    }
    let repo = support::repo();
    for args in [
        ["check", "rules", "alerts/vmwarden.rules.yml"],
        ["test", "rules", "alerts/tests/vmwarden.rules.test.yml"],
    ] {
        let out = std::process::Command::new("timeout")
            .arg("60")
            .arg("promtool")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
