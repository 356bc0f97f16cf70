//! The shipped alert rules end to end, in the two-node lab (scripts/lab.sh with VMWARDEN_BIN), with
//! Debian's real Prometheus and Alertmanager running inside node n1's network namespace:
//!
//! - Prometheus scrapes both agents (10.77.0.1/2:10177) with `alerts/vmwarden.rules.yml` exactly
//!   as shipped (only the scrape and evaluation intervals are short: 3 s), and sends its alerts to
//!   Alertmanager, whose one receiver is n1's agent's webhook (`POST /v1/alertmanager`, a token
//!   of role `alertmanager` in `credentials_file`);
//! - the VM runs on n1 with the watchdog disabled for it (`[watchdog] exclude`), and n1's agent has
//!   the remediation rule `VmwardenVmDown` → `start` (vm_label `domain`);
//! - its qemu is killed (by the pid libvirt recorded, name checked): it stays down (no watchdog),
//!   VmwardenVmDown goes pending then firing in Prometheus after its `for: 1m`, and is active in
//!   Alertmanager (`/api/v2/alerts`) with the labels and annotations of the rule;
//! - Alertmanager notifies the webhook, the agent starts the VM through its engine (a new qemu,
//!   the lease exclusive on n1 only), and the alert resolves: gone from Prometheus's
//!   `/api/v1/alerts` and from Alertmanager's `/api/v2/alerts`. Prometheus itself shows the
//!   webhook call answered 200 and the second completed start.
//!
//! Everything is asserted through Prometheus's and Alertmanager's HTTP APIs (queried from inside
//! n1 with Debian's python, never from the machine's own network namespace), libvirt and sanlock.
//! Needs root, the lab's tools, prometheus and prometheus-alertmanager (scripts/setup.sh); without
//! them a loud SKIPPED line, or a failure under VMWARDEN_REQUIRE_REAL=1. Bounded: ≈ 2–3 minutes.

#[path = "support/lab.rs"]
mod lab_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lab_support::{lab_dir, running, text, Down, Lab};
use support::{lab_ready, repo, skip_or_fail, wait_for};
use vmwarden::lock::Held;

const TEST: &str = "lab_alerts::vm_down_fires_and_alertmanager_remediates_it";
const VM: &str = "vmw-p";
const UUID: &str = "7a1c2e3f-4b5d-4c6e-9f70-8192a3b4c5d6";
const PROM: &str = "127.0.0.1:19090";
const AM: &str = "127.0.0.1:19093";
const ALERT: &str = "VmwardenVmDown";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

/// Token files live outside the lab directory (`lab.sh up` starts from a clean one, and the
/// agents read their tokens when they start, inside `up`).
struct Tokens {
    dir: tempfile::TempDir,
}

impl Tokens {
    fn new() -> Tokens {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("vmwarden-lab-alerts")
            .tempdir()
            .unwrap();
        for (name, value) in [
            ("alertmanager", "lab-alertmanager-token-0123456789"),
            ("ops", "lab-operator-token-0123456789abcd"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{value}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Tokens { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The agents' extra configuration: the watchdog leaves the VM alone, tokens, the rule.
    fn toml(&self) -> String {
        format!(
            "[watchdog]\nexclude = [\"{VM}\"]\nreconcile_seconds = 1\n\
             [api]\ntokens = [\n  {{ name = \"alertmanager\", role = \"alertmanager\", file = \"{am}\" }},\n  \
             {{ name = \"ops\", role = \"operate\", file = \"{ops}\" }},\n]\ntoken_file = \"{ops}\"\n\
             [alertmanager]\nrules = [{{ name = \"vm-down\", alertname = \"{ALERT}\", \
             matchers = {{ severity = \"critical\" }}, action = \"start\", vm_label = \"domain\", \
             cooldown_seconds = 60 }}]\n",
            am = self.path("alertmanager").display(),
            ops = self.path("ops").display(),
        )
    }
}

/// The lab with this test's agents (their tokens in the extra config), and what it asks of
/// Prometheus and Alertmanager inside n1.
struct AlertLab(Lab);

impl std::ops::Deref for AlertLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl AlertLab {
    fn state(&self, node: &str) -> String {
        self.virsh(node, &["domstate", "--reason", VM])
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// GET `url` from inside n1 (Debian's python, urllib): the body as JSON.
    fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let o = self.sh(&[
            "exec",
            "n1",
            "timeout",
            "10",
            "/usr/bin/python3",
            "-c",
            "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
            url,
        ]);
        if !o.status.success() {
            return Err(text(&o));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("{e}: {}", text(&o)))
    }

    /// Whether `url` answers 200 (a server's `/-/ready`).
    fn ready(&self, url: &str) -> bool {
        self.sh(&[
            "exec",
            "n1",
            "timeout",
            "10",
            "/usr/bin/python3",
            "-c",
            "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)",
            url,
        ])
        .status
        .success()
    }

    /// Prometheus's alerts named ALERT for the VM (`/api/v1/alerts`: pending and firing only).
    fn prom_alerts(&self) -> Vec<serde_json::Value> {
        let v = self
            .get_json(&format!("http://{PROM}/api/v1/alerts"))
            .unwrap_or_else(|e| panic!("Prometheus /api/v1/alerts: {e}"));
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == ALERT && a["labels"]["domain"] == VM)
            .collect()
    }

    /// Alertmanager's alerts named ALERT for the VM (`/api/v2/alerts`: resolved ones are left out).
    fn am_alerts(&self) -> Vec<serde_json::Value> {
        let v = self
            .get_json(&format!("http://{AM}/api/v2/alerts"))
            .unwrap_or_else(|e| panic!("Alertmanager /api/v2/alerts: {e}"));
        v.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == ALERT && a["labels"]["domain"] == VM)
            .collect()
    }

    /// One instant query's samples.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let mut url = format!("http://{PROM}/api/v1/query?query=");
        for b in q.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        let v = self
            .get_json(&url)
            .unwrap_or_else(|e| panic!("query {q}: {e}"));
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// A server started inside n1 through `lab.sh exec` by a python wrapper that writes its own pid
/// and then execs the server (so the pid is the server's); stopped by that pid, name checked.
struct Server {
    name: &'static str,
    pidfile: PathBuf,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(lab: &AlertLab, name: &'static str, argv: &[String], dir: &Path) -> Server {
        let pidfile = dir.join(format!("{name}.pid"));
        let log = dir.join(format!("{name}.log"));
        let mut args: Vec<String> = [
            "exec",
            "n1",
            "/usr/bin/python3",
            "-c",
            "import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); os.execv(sys.argv[2], sys.argv[2:])",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(pidfile.display().to_string());
        args.extend(argv.iter().cloned());
        let child = Command::new("bash")
            .arg(repo().join("scripts/lab.sh"))
            .args(&args)
            .env("VMWARDEN_LAB_DIR", lab_dir())
            .envs(lab.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        assert!(
            wait_for(10, || pidfile.exists().then_some(())).is_some(),
            "{name} did not start in n1"
        );
        Server {
            name,
            pidfile,
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            // comm is at most 15 characters: "prometheus-ale" for prometheus-alertmanager.
            if !comm.is_empty() && self.name.starts_with(comm.trim()) {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
        let _ = self.child.wait();
    }
}

fn label<'a>(a: &'a serde_json::Value, k: &str) -> &'a str {
    a["labels"][k].as_str().unwrap_or("")
}

#[test]
fn vm_down_fires_and_alertmanager_remediates_it() {
    if !lab_ready(TEST, &[]) {
        return;
    }
    for p in [
        "/usr/bin/prometheus",
        "/usr/bin/prometheus-alertmanager",
        "/usr/bin/python3",
    ] {
        if !Path::new(p).is_file() {
            skip_or_fail(TEST, &format!("{p} is not installed (scripts/setup.sh)"));
            return;
        }
    }
    let t0 = Instant::now();
    let tokens = Tokens::new();
    let lab = AlertLab(Lab {
        repo: repo(),
        env: vec![
            ("VMWARDEN_BIN", bin().to_string()),
            ("VMWARDEN_LAB_VMS", VM.to_string()),
            ("VMWARDEN_LAB_EXTRA_TOML", tokens.toml()),
        ],
        bin: bin().to_string(),
    });
    let _down = Down(lab.0.clone());
    let up = lab.sh(&["up"]);
    if !up.status.success() {
        skip_or_fail(TEST, &format!("`lab.sh up` failed: {}", text(&up)));
        return;
    }
    let dir = lab_dir();
    let disk = lab_support::guest_disk(VM);
    lab.define_on(
        &["n1", "n2"],
        VM,
        &lab_support::guest_xml(lab.domain_type(), VM, Some(UUID), &disk),
    );
    let (code, out) = lab.ctl("n1", &["start", VM]);
    assert_eq!(code, 0, "start on n1: {out}");
    let first_qemu = lab.qemu_pid("n1", VM).expect("the VM's qemu runs on n1");
    assert_eq!(lab.lease("n1", VM), Held::Exclusive);

    // Prometheus and Alertmanager inside n1.
    let work = dir.join("alerting");
    std::fs::create_dir_all(&work).unwrap();
    let rules = repo().join("alerts/vmwarden.rules.yml");
    let prom_cfg = work.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 3s\n  scrape_timeout: 3s\n  evaluation_interval: 3s\n\
             rule_files:\n  - {rules}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{AM}']\n\
             scrape_configs:\n  - job_name: vmwarden\n    static_configs:\n      \
             - targets: ['10.77.0.1:10177', '10.77.0.2:10177']\n",
            rules = rules.display()
        ),
    )
    .unwrap();
    let am_cfg = work.join("alertmanager.yml");
    // group_wait 10 s: the alert is seen active in Alertmanager before its first notification
    // makes the agent start the VM (which resolves it seconds later).
    std::fs::write(
        &am_cfg,
        format!(
            "route:\n  receiver: vmwarden\n  group_by: [alertname, domain]\n  group_wait: 10s\n  \
             group_interval: 5s\n  repeat_interval: 1h\n\
             receivers:\n  - name: vmwarden\n    webhook_configs:\n      \
             - url: http://10.77.0.1:10177/v1/alertmanager\n        send_resolved: true\n        \
             http_config:\n          authorization:\n            credentials_file: {am}\n",
            am = tokens.path("alertmanager").display()
        ),
    )
    .unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&prom_cfg)
        .output()
        .unwrap();
    assert!(check.status.success(), "promtool check config: {check:?}");
    let am = Server::start(
        &lab,
        "prometheus-alertmanager",
        &[
            "/usr/bin/prometheus-alertmanager".into(),
            format!("--config.file={}", am_cfg.display()),
            format!("--storage.path={}", work.join("am-data").display()),
            format!("--web.listen-address={AM}"),
            "--cluster.listen-address=".into(),
        ],
        &work,
    );
    let prom = Server::start(
        &lab,
        "prometheus",
        &[
            "/usr/bin/prometheus".into(),
            format!("--config.file={}", prom_cfg.display()),
            format!("--storage.tsdb.path={}", work.join("prom-data").display()),
            format!("--web.listen-address={PROM}"),
        ],
        &work,
    );
    let logs = || {
        format!(
            "--- prometheus\n{}\n--- alertmanager\n{}",
            prom.log(),
            am.log()
        )
    };
    // Prometheus answers queries with 503 until its storage is ready; Alertmanager likewise.
    for url in [
        format!("http://{PROM}/-/ready"),
        format!("http://{AM}/-/ready"),
    ] {
        assert!(
            wait_for(60, || lab.ready(&url).then_some(())).is_some(),
            "{url} never answered\n{}",
            logs()
        );
    }
    // Both agents scraped, the shipped rules loaded (every alert of the file), nothing firing
    // for the VM while it runs.
    let up = wait_for(60, || {
        let r = lab.query("up{job=\"vmwarden\"} == 1");
        (r.len() == 2).then_some(r)
    });
    assert!(
        up.is_some(),
        "Prometheus does not scrape both agents\n{}",
        logs()
    );
    let loaded = lab
        .get_json(&format!("http://{PROM}/api/v1/rules?type=alert"))
        .unwrap();
    let shipped = std::fs::read_to_string(&rules)
        .unwrap()
        .matches("- alert: ")
        .count();
    let n_loaded: usize = loaded["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(n_loaded, shipped, "rules loaded: {loaded}");
    assert!(
        !lab.query(&format!(
            "vmwarden_vm_status{{domain=\"{VM}\",status=\"unmanaged\"}}"
        ))
        .is_empty(),
        "the watchdog on n1 must see {VM} as unmanaged (excluded)"
    );
    assert!(lab.prom_alerts().is_empty(), "{:?}", lab.prom_alerts());

    // Kill its qemu: the watchdog leaves it down.
    lab.ok(&["exec", "n1", "kill", "-9", &first_qemu]);
    let t_kill = Instant::now();
    let killed: i32 = first_qemu.parse().unwrap();
    assert!(
        wait_for(10, || (!running(killed)).then_some(())).is_some(),
        "qemu {killed} survived kill -9"
    );
    assert!(
        wait_for(30, || (lab.state("n1") == "shut off (crashed)")
            .then_some(()))
        .is_some(),
        "after kill -9: {}",
        lab.state("n1")
    );

    // Pending, then firing after `for: 1m`, in Prometheus.
    let pending = wait_for(30, || {
        lab.prom_alerts()
            .into_iter()
            .find(|a| a["state"] == "pending")
    });
    assert!(pending.is_some(), "{ALERT} never went pending\n{}", logs());
    let firing = wait_for(120, || {
        lab.prom_alerts()
            .into_iter()
            .find(|a| a["state"] == "firing")
    })
    .unwrap_or_else(|| panic!("{ALERT} never fired in Prometheus\n{}", logs()));
    let t_fire = t_kill.elapsed();
    assert!(
        t_fire >= Duration::from_secs(60),
        "fired {t_fire:?} after the kill: sooner than its `for: 1m`"
    );
    assert_eq!(label(&firing, "instance"), "10.77.0.1:10177", "{firing}");
    assert_eq!(label(&firing, "severity"), "critical", "{firing}");
    // Meanwhile the VM stayed down: nothing restarted it (the watchdog excludes it).
    assert_eq!(lab.state("n1"), "shut off (crashed)");

    // Active in Alertmanager, from Prometheus, with the rule's annotations.
    let in_am = wait_for(30, || lab.am_alerts().into_iter().next())
        .unwrap_or_else(|| panic!("{ALERT} never reached Alertmanager\n{}", logs()));
    assert_eq!(in_am["status"]["state"], "active", "{in_am}");
    assert_eq!(label(&in_am, "instance"), "10.77.0.1:10177", "{in_am}");
    assert_eq!(label(&in_am, "severity"), "critical", "{in_am}");
    assert_eq!(
        in_am["annotations"]["summary"], "A VM that should run is down",
        "{in_am}"
    );
    assert_eq!(
        in_am["annotations"]["runbook_url"],
        format!("docs/runbooks/{ALERT}.md"),
        "{in_am}"
    );
    assert!(
        in_am["generatorURL"]
            .as_str()
            .is_some_and(|u| u.contains("19090")),
        "not from this Prometheus: {in_am}"
    );

    // Alertmanager's webhook makes the agent start it: a new qemu, its lease exclusive on n1.
    let back = wait_for(60, || {
        (lab.state("n1").starts_with("running"))
            .then(|| lab.qemu_pid("n1", VM))
            .flatten()
    })
    .unwrap_or_else(|| {
        panic!(
            "{VM} was not started again: {}\n{}\n--- agent\n{}",
            lab.state("n1"),
            logs(),
            std::fs::read_to_string(dir.join("n1.vmwarden.log")).unwrap_or_default()
        )
    });
    let t_back = t_kill.elapsed();
    assert_ne!(back, first_qemu);
    assert_eq!(lab.lease("n1", VM), Held::Exclusive);
    assert_eq!(lab.lease("n2", VM), Held::None);
    assert!(!lab.state("n2").starts_with("running"));

    // Resolved: gone from Prometheus's active alerts and from Alertmanager's.
    assert!(
        wait_for(60, || lab.prom_alerts().is_empty().then_some(())).is_some(),
        "{ALERT} still active in Prometheus: {:?}",
        lab.prom_alerts()
    );
    let t_resolved_prom = t_kill.elapsed();
    assert!(
        wait_for(60, || lab.am_alerts().is_empty().then_some(())).is_some(),
        "{ALERT} still active in Alertmanager: {:?}",
        lab.am_alerts()
    );
    let t_resolved_am = t_kill.elapsed();
    // What Prometheus saw of it: the webhook answered 200 on n1, and two completed starts (ours
    // through ctl, then the webhook's) — no failed or refused one.
    let hook = wait_for(30, || {
        let r = lab.query(
            "vmwarden_api_requests_total{instance=\"10.77.0.1:10177\",route=\"/v1/alertmanager\",code=\"200\"} > 0",
        );
        (!r.is_empty()).then_some(r)
    });
    assert!(hook.is_some(), "no accepted webhook call on n1");
    let refused =
        lab.query("vmwarden_api_requests_total{route=\"/v1/alertmanager\",code=~\"4..|5..\"}");
    assert!(refused.is_empty(), "webhook calls refused: {refused:?}");
    let starts = wait_for(30, || {
        let r = lab.query(
            "vmwarden_action_total{instance=\"10.77.0.1:10177\",action=\"start\",result=\"completed\"} >= 2",
        );
        (!r.is_empty()).then_some(r)
    });
    assert!(
        starts.is_some(),
        "the second start is not counted: {:?}",
        lab.query("vmwarden_action_total")
    );
    eprintln!(
        "lab_alerts: after the kill: firing in Prometheus {:.1} s, running again {:.1} s, \
         resolved in Prometheus {:.1} s, in Alertmanager {:.1} s; whole test {:.1} s",
        t_fire.as_secs_f64(),
        t_back.as_secs_f64(),
        t_resolved_prom.as_secs_f64(),
        t_resolved_am.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
