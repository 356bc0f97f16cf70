//! The webhook with a real Alertmanager (Debian's prometheus-alertmanager) posting to a real agent
//! with `http_config.authorization.credentials_file`: a firing alert matching a rule runs its
//! action once (one journal), the same alert repeated within the cooldown runs nothing, a resolved
//! alert does nothing, and a receiver with a wrong token is refused — Alertmanager logs the failure.

#[path = "support/api.rs"]
mod api;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::{virsh_test_driver, AgentConfig};
use common::*;

const AM_TOKEN: &str = "alertmanager-token-0123456789";

fn alertmanager_bin() -> Option<PathBuf> {
    let found = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("VMWARDEN_REQUIRE_REAL").is_none(),
            "prometheus-alertmanager is required (scripts/setup.sh installs it)"
        );
        eprintln!("SKIPPED api_alertmanager: prometheus-alertmanager is not installed");
    }
    found
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn done_journals(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("state/journal/done"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Post alerts to Alertmanager's v2 API.
fn post_alerts(am_port: u16, alerts: &serde_json::Value) {
    let (s, _, body) = request(
        am_port,
        "POST",
        "/api/v2/alerts",
        &[("Content-Type", "application/json")],
        alerts.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{body}");
}

#[test]
fn real_alertmanager_drives_the_webhook() {
    let Some(am_bin) = alertmanager_bin() else {
        return;
    };
    if !virsh_test_driver("api_alertmanager") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_file_mode(d, "wrong", "not-the-alertmanager-token-0123\n", 0o600);
    let port = free_port();
    let cfg = api::agent_config(
        d,
        port,
        &AgentConfig {
            watchdog: false,
            tokens: &[("am", "alertmanager", AM_TOKEN)],
            api: "auth_failures_per_minute = 100000\n".into(),
            extra: "[actions]\nshutdown_timeout_seconds = 1\n\
                    [alertmanager]\nrules = [{ name = \"vm-stuck\", alertname = \"VmStuck\", \
                    matchers = { severity = \"critical\" }, action = \"stop\", vm_label = \"domain\", \
                    cooldown_seconds = 600 }]\n"
                .into(),
            ..Default::default()
        },
    );
    let log = d.join("agent.log");
    let agent = Agent::start_logged(&cfg, port, &log);

    let am_port = free_port();
    let am_cfg = d.join("am.yml");
    std::fs::write(
        &am_cfg,
        format!(
            "route:\n  receiver: vmwarden\n  group_by: [alertname, domain]\n  group_wait: 0s\n  \
             group_interval: 1s\n  repeat_interval: 2s\n  routes:\n    - receiver: wrong-token\n      \
             matchers: ['team=\"wrong\"']\n\
             receivers:\n  - name: vmwarden\n    webhook_configs:\n      - url: http://127.0.0.1:{port}/v1/alertmanager\n        \
             send_resolved: true\n        http_config:\n          authorization:\n            \
             credentials_file: {d}/am\n  - name: wrong-token\n    webhook_configs:\n      - url: http://127.0.0.1:{port}/v1/alertmanager\n        \
             http_config:\n          authorization:\n            credentials_file: {d}/wrong\n",
            d = d.display()
        ),
    )
    .unwrap();
    let am_log = d.join("am.log");
    let _am = Killed(
        Command::new(am_bin)
            .arg(format!("--config.file={}", am_cfg.display()))
            .arg(format!("--storage.path={}", d.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&am_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("Alertmanager to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", am_port)).is_ok()
            && request(am_port, "GET", "/-/ready", &[], b"").0 == 200
    });

    let now = || {
        // RFC 3339 from the system clock, as Alertmanager wants it.
        let out = Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let alert = |extra: serde_json::Value| {
        let mut a = serde_json::json!({
            "labels": {"alertname": "VmStuck", "severity": "critical", "domain": "test"},
            "annotations": {"summary": "test is stuck"},
            "startsAt": now(),
        });
        if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                a.insert(k.clone(), v.clone());
            }
        }
        a
    };
    // An unmatched alert (warning) and the matching one.
    let mut unmatched = alert(serde_json::json!({}));
    unmatched["labels"]["severity"] = "warning".into();
    post_alerts(
        am_port,
        &serde_json::json!([alert(serde_json::json!({})), unmatched]),
    );

    // It runs once: one stop journal (the test driver's VM does not power off: the stop ends
    // `failed` at wait_or_destroy, a real outcome of a real run).
    wait_for(
        "the webhook's action to run",
        Duration::from_secs(30),
        || done_journals(d) == 1,
    );
    // Repeats (repeat_interval 2 s) within the cooldown run nothing more.
    wait_for(
        "a repeat within the cooldown",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("decision=\"cooldown\"") || l.contains("decision=cooldown"))
        },
    );
    // Resolved: Alertmanager sends it (send_resolved); nothing runs.
    post_alerts(
        am_port,
        &serde_json::json!([alert(serde_json::json!({"endsAt": now()}))]),
    );
    wait_for("the resolved notification", Duration::from_secs(30), || {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        l.contains("decision=\"resolved\"") || l.contains("decision=resolved")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(done_journals(d), 1);

    // A receiver with the wrong token is refused, and Alertmanager says so.
    let mut wrong = alert(serde_json::json!({}));
    wrong["labels"]["team"] = "wrong".into();
    wrong["labels"]["domain"] = "other".into();
    post_alerts(am_port, &serde_json::json!([wrong]));
    wait_for(
        "Alertmanager to log the refused notification",
        Duration::from_secs(30),
        || {
            let l = std::fs::read_to_string(&am_log).unwrap_or_default();
            l.contains("wrong-token") && l.contains("401")
        },
    );
    let (_, m) = agent.get("/metrics", None);
    assert!(
        sample(
            &m,
            "vmwarden_api_requests_total{route=\"/v1/alertmanager\",code=\"401\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "vmwarden_api_requests_total{route=\"/v1/alertmanager\",code=\"200\"}"
        )
        .is_some_and(|n| n >= 3.0),
        "{m}"
    );
    assert_eq!(done_journals(d), 1);
    let l = std::fs::read_to_string(&log).unwrap();
    let actions: Vec<&str> = l.lines().filter(|l| l.contains("webhook action")).collect();
    assert_eq!(actions.len(), 1, "{l}");
    assert!(
        actions[0].contains("rule=vm-stuck") && actions[0].contains("code=202"),
        "{l}"
    );
    assert!(l.contains("decision=\"unmatched\""), "{l}");
    assert!(!l.contains(AM_TOKEN), "the token was logged:\n{l}");
}
