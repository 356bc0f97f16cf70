//! The Grafana dashboards against real data: a real Prometheus (Debian's `prometheus`) runs inside
//! lab node n1's namespaces and scrapes both lab agents every second while a real guest runs, is
//! live-migrated n1 → n2 and has its qemu killed twice on n2 (the watchdog restarts it). Then
//! every query of every panel, its variables expanded as Grafana would (`$job`, `$instance`,
//! `$vm` set to the lab's values, `$__rate_interval` = 1m, `$__range` = the time since
//! Prometheus started), must return `success` and a non-empty result from `/api/v1/query`, except
//! the panels of the allow-list below, each with the reason it is empty on a healthy lab; those
//! must still succeed (valid PromQL), and an allow-listed panel that has data fails the test (the
//! list stays true).
//!
//! DRBD: this kernel has no drbd module (docs/lab.md), so each node's DRBD collector reads a real
//! `/proc/drbd` captured in the storage lab (tests/fixtures/real/: n1 the SyncSource, n2 the
//! SyncTarget side of a running resync) as its `proc_path` instead of the kernel's: the real
//! collector and exposition, a frozen source. LVM has no such stand-in (no device-mapper here),
//! so its panels are allow-listed.
//!
//! With `VMWARDEN_DASHBOARDS_PREVIEW=DIR` (`make dashboards-preview`) it also renders each
//! dashboard's panels to `DIR/<dashboard>.png` from the same Prometheus
//! (scripts/dashboards-preview.py, matplotlib).
//!
//! Needs root, the lab's tools (docs/lab.md), prometheus and curl. Without them: a loud SKIPPED
//! line, or a failure under VMWARDEN_REQUIRE_REAL=1. Hold /work/lab.lock (or run alone).

#[allow(dead_code)] // each test uses a part of the support modules
#[path = "support/dashboards.rs"]
mod dash;
#[path = "support/lab.rs"]
mod lab_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::LazyLock;

use lab_support::{lab_dir, text, Down, Lab};
use support::{lab_ready, repo, skip_or_fail, wait_for};

const TEST: &str = "lab_dashboards::every_panel_query_has_data_in_the_lab";
const VM: &str = "vmw-a";
const UUID: &str = "8d3c1f0e-2a4b-4c6d-9e8f-1a2b3c4d5e6f";
/// Prometheus' port on n1's own loopback (inside the lab's network namespace only).
const PROM: &str = "127.0.0.1:19090";
const N1: &str = "10.77.0.1:10177";
const N2: &str = "10.77.0.2:10177";
const WATCHDOG_TOML: &str = "[watchdog]\nreconcile_seconds = 1\nmax_attempts = 5\nbackoff_initial_seconds = 0.5\nbackoff_max_seconds = 2\n";

/// (dashboard uid, panel title, why it is empty on a healthy lab).
const EMPTY_ON_A_HEALTHY_LAB: &[(&str, &str, &str)] = &[
    ("vmwarden-cluster", "Agents down", "both agents are up"),
    (
        "vmwarden-cluster",
        "VMs running on two nodes",
        "the locks keep the guest on one node",
    ),
    (
        "vmwarden-cluster",
        "Invariant violations",
        "no invariant is violated",
    ),
    (
        "vmwarden-cluster",
        "Invariant violations (list)",
        "no invariant is violated",
    ),
    (
        "vmwarden-cluster",
        "Failing collectors",
        "every enabled collector succeeds",
    ),
    (
        "vmwarden-cluster",
        "VMs down against their intent",
        "the watchdog brought the guest back",
    ),
    (
        "vmwarden-cluster",
        "VMs given up",
        "two crashes stay under max_attempts",
    ),
    (
        "vmwarden-cluster",
        "DRBD peers not connected",
        "the captured resync is Connected",
    ),
    (
        "vmwarden-cluster",
        "DRBD split brain",
        "no split brain was reported",
    ),
    (
        "vmwarden-cluster",
        "sanlock hosts FAIL or DEAD",
        "both sanlock hosts are LIVE",
    ),
    (
        "vmwarden-node",
        "Collector absent",
        "every enabled collector's source exists (lvm is disabled, not absent)",
    ),
    (
        "vmwarden-node",
        "DRBD I/O suspended",
        "I/O is not suspended in the captured state",
    ),
    (
        "vmwarden-node",
        "LV locks by mode",
        "no LVM in the lab (no device-mapper): the lvm collector is disabled",
    ),
    (
        "vmwarden-node",
        "LV activation",
        "no LVM in the lab: the lvm collector is disabled",
    ),
    (
        "vmwarden-node",
        "lvmlockd and VG lockspaces",
        "no LVM in the lab: the lvm collector is disabled",
    ),
    (
        "vmwarden-node",
        "VG free space",
        "no LVM in the lab: the lvm collector is disabled",
    ),
    (
        "vmwarden-vm",
        "Invariant violations",
        "no invariant is violated",
    ),
];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

/// The lab as this test runs it: its binary, VMs and extra config (`lab_support::Lab`).
static LAB: LazyLock<Lab> = LazyLock::new(|| Lab {
    repo: repo(),
    env: vec![
        ("VMWARDEN_BIN", bin().to_string()),
        ("VMWARDEN_LAB_VMS", VM.to_string()),
        ("VMWARDEN_LAB_SHUTDOWN_TIMEOUT", "3".to_string()),
        ("VMWARDEN_LAB_EXTRA_TOML", WATCHDOG_TOML.to_string()),
    ],
    bin: bin().to_string(),
});

fn running_on(node: &str) -> bool {
    LAB.virsh(node, &["domstate", VM])
        .is_ok_and(|s| s.trim() == "running")
}

/// The pid of the process holding `node`'s namespaces (what `lab.sh exec` enters).
fn host_pid(node: &str) -> String {
    let p = std::fs::read_to_string(lab_dir().join(format!("{node}.hostpid"))).unwrap();
    let p = p.trim().to_string();
    assert!(p.bytes().all(|b| b.is_ascii_digit()), "{p:?}");
    p
}

/// A command inside `node`'s mount and network namespaces (nsenter execs it: same pid).
fn in_node(node: &str, prog: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &host_pid(node), "-m", "-n", "--", prog]);
    c
}

/// The Prometheus server, killed by its own pid (our child; nsenter exec'd it) when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let pid = self.0.id();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "prometheus" || comm.trim() == "nsenter" {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `/api/v1/query` through curl inside n1: (status, number of results, the raw answer).
fn query(expr: &str) -> (String, usize, String) {
    let out = in_node("n1", "curl")
        .args(["-sS", "--max-time", "20", "-G", "--data-urlencode"])
        .arg(format!("query={expr}"))
        .arg(format!("http://{PROM}/api/v1/query"))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => {
            return (
                "no answer".into(),
                0,
                body + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let status = v["status"].as_str().unwrap_or("?").to_string();
    let n = v["data"]["result"].as_array().map_or(0, Vec::len);
    (status, n, body)
}

/// The DRBD collector of `node` reads `capture` (a real /proc/drbd) instead of the kernel's.
fn drbd_from_capture(node: &str, capture: &str) {
    let dir = lab_dir();
    let src = dir.join("shared").join(format!("drbd-{node}.txt"));
    std::fs::write(&src, support::fixture(&format!("real/{capture}"))).unwrap();
    let cfg = dir.join(node).join("vmwarden.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let sb = dir.join(node).join("split-brain");
    let new = text.replacen(
        "[drbd]\nenabled = false\n",
        &format!(
            "[drbd]\nproc_path = \"{}\"\ndrbdsetup = \"/nonexistent/drbdsetup\"\nsplit_brain_dir = \"{}\"\n",
            src.display(),
            sb.display()
        ),
        1,
    );
    assert_ne!(
        new, text,
        "the lab config no longer disables [drbd] as expected:\n{text}"
    );
    std::fs::write(&cfg, new).unwrap();
    LAB.ok(&["agent-stop", node]);
    LAB.ok(&["agent-start", node]);
}

/// Values of each dashboard's variables for the lab.
fn variables(uid: &str, range: &str) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("__rate_interval", "1m".to_string()),
        ("__interval", "15s".to_string()),
        ("__range", range.to_string()),
        ("job", "vmwarden".to_string()),
    ];
    match uid {
        // All nodes (the variable's allValue).
        "vmwarden-cluster" => v.push(("instance", ".+".to_string())),
        // n2: where the guest runs, was restarted and holds its lease.
        "vmwarden-node" => v.push(("instance", N2.to_string())),
        "vmwarden-vm" => v.push(("vm", VM.to_string())),
        other => panic!("no lab values for dashboard {other}"),
    }
    v
}

#[test]
fn every_panel_query_has_data_in_the_lab() {
    if !lab_ready(TEST, &["nsenter", "prometheus", "curl"]) {
        return;
    }
    let dashboards = dash::load();
    // The allow-list names real panels only.
    for (uid, title, _) in EMPTY_ON_A_HEALTHY_LAB {
        assert!(
            dashboards
                .iter()
                .any(|d| d.uid() == *uid && d.panels().iter().any(|p| dash::title(p) == *title)),
            "allow-list entry {uid} / {title:?} names no panel"
        );
    }
    let t0 = Instant::now();
    let _down = Down(LAB.clone());
    let up = LAB.sh(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let dir = lab_dir();
    drbd_from_capture("n1", "proc-drbd-syncsource.txt");
    drbd_from_capture("n2", "proc-drbd-synctarget.txt");

    // The guest, with a NIC for the network panels, defined alike on both nodes.
    let disk = lab_support::guest_disk(VM);
    LAB.define_on(
        &["n1", "n2"],
        VM,
        &lab_support::guest_xml_with_nic(LAB.domain_type(), VM, Some(UUID), &disk),
    );
    let (code, out) = LAB.ctl("n1", &["start", VM]);
    assert_eq!(code, 0, "start on n1: {out}");

    // Prometheus in n1's namespaces, scraping both agents every second.
    let prom_cfg = dir.join("shared/prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vmwarden\n    \
             static_configs:\n      - targets: ['{N1}', '{N2}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let prom = Prometheus(
        in_node("n1", "prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={PROM}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let both_up = wait_for(60, || {
        let (_, n, body) = query("up == 1");
        (n == 2 && body.contains(N1) && body.contains(N2)).then_some(())
    });
    assert!(
        both_up.is_some(),
        "Prometheus never scraped both agents: {:?}\n{}",
        query("up"),
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    let scraping_since = Instant::now();
    let prom_start = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_secs(5));

    // A live migration n1 -> n2 (the migrations panel, the state history's move).
    let (code, out) = LAB.ctl("n1", &["migrate", VM, "--to", "n2"]);
    assert_eq!(code, 0, "migrate n1 -> n2: {out}");
    assert!(running_on("n2") && !running_on("n1"), "after the migration");
    std::thread::sleep(Duration::from_secs(3));

    // Two crashes on n2, each brought back by the watchdog (the restarts panels: the first
    // restart creates the counter series, the second is what increase() sees).
    for i in 1..=2 {
        let old = LAB.qemu_pid("n2", VM).expect("the guest's qemu runs on n2");
        LAB.ok(&["exec", "n2", "kill", "-9", &old]);
        let back = wait_for(30, || {
            (running_on("n2") && LAB.qemu_pid("n2", VM).is_some_and(|p| p != old)).then_some(())
        });
        assert!(
            back.is_some(),
            "crash {i}: the watchdog did not restart {VM} on n2:\n{}",
            std::fs::read_to_string(dir.join("n2.vmwarden.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(4));
    }
    // Each [1m] window the panels use is filled with scrapes.
    let filled = Duration::from_secs(70);
    if let Some(rest) = filled.checked_sub(scraping_since.elapsed()) {
        std::thread::sleep(rest);
    }
    assert!(
        running_on("n2"),
        "the guest runs on n2 when the queries run"
    );

    // Every panel query, variables expanded.
    let range = format!("{}s", scraping_since.elapsed().as_secs());
    let mut problems = Vec::new();
    let mut seen = 0;
    let mut with_data = 0;
    for d in &dashboards {
        let vars = variables(d.uid(), &range);
        let values: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for p in d.panels() {
            let title = dash::title(p);
            let allowed = EMPTY_ON_A_HEALTHY_LAB
                .iter()
                .find(|(u, t, _)| *u == d.uid() && *t == title);
            let mut any = false;
            for (ref_id, expr, _) in dash::targets(p) {
                let q = dash::expand(&expr, &values);
                let (status, n, body) = query(&q);
                seen += 1;
                if status != "success" {
                    problems.push(format!(
                        "{} / {title:?} / {ref_id}: {status}: {body}\n    {q}",
                        d.uid()
                    ));
                    continue;
                }
                if n > 0 {
                    any = true;
                    with_data += 1;
                } else if allowed.is_none() {
                    problems.push(format!(
                        "{} / {title:?} / {ref_id}: empty result on the lab (fix the query, or allow-list it with a reason)\n    {q}",
                        d.uid()
                    ));
                }
            }
            if let (Some((_, _, why)), true) = (allowed, any) {
                problems.push(format!(
                    "{} / {title:?} is allow-listed as empty ({why}) but has data: a real problem in the lab, or a stale entry",
                    d.uid()
                ));
            }
        }
    }
    eprintln!(
        "lab_dashboards: {seen} queries, {with_data} with data, {} allow-listed panels; scraped for {range}",
        EMPTY_ON_A_HEALTHY_LAB.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    if let Some(out) = std::env::var_os("VMWARDEN_DASHBOARDS_PREVIEW") {
        preview(&PathBuf::from(out), prom_start, &range);
    }
    drop(prom);
    eprintln!("lab_dashboards: {:.1?} in all", t0.elapsed());
}

/// Renders every dashboard to `out/<file>.png` from the lab's Prometheus.
fn preview(out: &Path, start: std::time::SystemTime, range: &str) {
    std::fs::create_dir_all(out).unwrap();
    let out = out.canonicalize().unwrap();
    let since = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let mut plan = serde_json::json!({
        "prometheus": format!("http://{PROM}"),
        "start": since(start),
        "end": since(std::time::SystemTime::now()),
        "scrape_interval_seconds": 1,
        "out": out,
        "dashboards": [],
    });
    for d in dash::load() {
        let vars: serde_json::Map<String, serde_json::Value> = variables(d.uid(), range)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        plan["dashboards"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"file": dash::dir().join(&d.file), "vars": vars}));
    }
    let plan_file = lab_dir().join("shared/preview-plan.json");
    std::fs::write(&plan_file, plan.to_string()).unwrap();
    let t = Instant::now();
    let o = in_node("n1", "timeout")
        .args(["300", "/usr/bin/python3"])
        .arg(repo().join("scripts/dashboards-preview.py"))
        .arg(&plan_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "dashboards-preview.py: {}", text(&o));
    eprint!("{}", String::from_utf8_lossy(&o.stdout));
    for d in dash::load() {
        let png = out.join(d.file.replace(".json", ".png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            len > 10_000,
            "{} is missing or nearly empty ({len} bytes)",
            png.display()
        );
    }
    eprintln!(
        "lab_dashboards: previews in {} ({:.1?})",
        out.display(),
        t.elapsed()
    );
}
