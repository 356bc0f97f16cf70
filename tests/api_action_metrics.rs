//! `vmwarden_action_unfinished_start_time_seconds` (what VmwardenActionStuck alerts on) on a real
//! agent with libvirt's `test:///` driver: an action held before its first step (the test pause
//! point) is one series with its action, its VM and its journal's start time while it runs, and
//! the series is gone once the action's journal is finished.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const OPS: &str = "ops-token-0123456789abcdef";
const SERIES: &str = "vmwarden_action_unfinished_start_time_seconds{";

fn have_virsh() -> bool {
    let ok = Command::new("virsh")
        .args(["-c", "test:///default", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("VMWARDEN_REQUIRE_REAL").is_none(),
            "virsh with the test:/// driver is required (scripts/setup.sh installs libvirt-clients)"
        );
        eprintln!("SKIPPED api_action_metrics: virsh -c test:///default does not work here");
    }
    ok
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn metrics(port: u16) -> String {
    let (s, body) = http(port, "GET", "/metrics", Some("text/plain"));
    assert_eq!(s, 200, "{body}");
    body
}

#[test]
fn an_unfinished_action_is_a_series_until_its_journal_is_finished() {
    if !have_virsh() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_file_mode(d, "secret", "cluster-secret-0123456789abcdef\n", 0o600);
    write_file_mode(d, "ops", &format!("{OPS}\n"), 0o600);
    let port = free_port();
    let cfg = write_config(
        d,
        port,
        &format!(
            "[drbd]\nenabled = false\n[lvm]\nenabled = false\n[sanlock]\nenabled = false\n\
             [libvirt]\nuri = \"test:///default\"\n[watchdog]\nenabled = false\n\
             [cluster]\nnode = \"t1\"\nsecret_file = \"{d}/secret\"\nstate_dir = \"{d}/state\"\n\
             [actions]\nshutdown_timeout_seconds = 1\n\
             [api]\ntokens = [{{ name = \"ops\", role = \"operate\", file = \"{d}/ops\" }}]\n",
            d = d.display()
        ),
    );
    let log = d.join("agent.log");
    let child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("VMWARDEN_TEST_PAUSE_BEFORE_STEP", "stop:acpi_shutdown")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _agent = Agent { child, port };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "agent did not listen: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!metrics(port).contains(SERIES), "no action yet");

    let before = now();
    let auth = format!("Bearer {OPS}");
    let (s, _, body) = request(
        port,
        "POST",
        "/v1/vms/test/stop",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"",
    );
    assert_eq!(s, 202, "{body}");
    let acc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = acc["id"].as_str().unwrap().to_string();
    let flag = d.join("state/paused-acpi_shutdown");
    let t0 = Instant::now();
    while !flag.exists() {
        assert!(t0.elapsed() < Duration::from_secs(20), "never paused");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Held: one series, this action and VM, its journal's start time.
    let m = metrics(port);
    let lines: Vec<&str> = m.lines().filter(|l| l.starts_with(SERIES)).collect();
    assert_eq!(lines.len(), 1, "{m}");
    let v = sample(
        &m,
        "vmwarden_action_unfinished_start_time_seconds{action=\"stop\",domain=\"test\"}",
    )
    .unwrap_or_else(|| panic!("{}", lines[0]));
    assert!(
        v >= before.floor() - 1.0 && v <= now() + 1.0,
        "start time {v}, asked at {before}"
    );
    let journal = std::fs::read_to_string(d.join("state/journal/test.json")).unwrap();
    assert!(
        journal.contains(&format!("\"started_unix\":{}", v as u64)),
        "the journal's start time: {journal}"
    );

    // Let it go: once its journal is finished the series is gone.
    std::fs::remove_file(&flag).unwrap();
    let t0 = Instant::now();
    loop {
        let (s, _, body) = request(
            port,
            "GET",
            &format!("/v1/actions/{id}"),
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(s, 200, "{body}");
        if body.contains("\"state\":\"finished\"") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = metrics(port);
    assert!(!m.contains(SERIES), "{m}");
    // The test driver keeps the VM running: the stop ended failed, and was counted.
    assert_eq!(
        sample(
            &m,
            "vmwarden_action_total{action=\"stop\",result=\"failed\"}"
        ),
        Some(1.0),
        "{m}"
    );
}
