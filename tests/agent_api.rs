//! The agent's /v1/ API without a cluster: the secret is required and checked, bogus requests get
//! clear errors, names are validated, and a dry run plans against a real libvirt (the `test:///`
//! driver, which needs no daemon) and changes nothing. Also `vmwarden ctl` end to end.

mod common;

use std::process::Command;

use common::*;

const SECRET: &str = "s3cret-for-tests-0123456789";

fn config(dir: &std::path::Path, port: u16, secret_file: &std::path::Path) -> std::path::PathBuf {
    write_config(
        dir,
        port,
        &format!(
            "[drbd]\nenabled = false\n[lvm]\nenabled = false\n[sanlock]\nenabled = false\n\
             [libvirt]\nenabled = false\nuri = \"test:///default\"\n\
             [cluster]\nnode = \"t1\"\nsecret_file = \"{}\"\nstate_dir = \"{}\"\n",
            secret_file.display(),
            dir.join("state").display()
        ),
    )
}

#[test]
fn without_a_secret_the_agent_only_observes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, &dir.path().join("missing.secret"));
    let agent = Agent::start(&cfg, port);
    let (s, body) = post(port, "/v1/action", Some(&format!("Bearer {SECRET}")), "{}");
    assert_eq!(s, 503, "{body}");
    assert!(
        body.contains("missing.secret") && body.contains("urandom"),
        "{body}"
    );
    assert_eq!(agent.get("/healthz", None).0, 200);
}

#[test]
fn the_api_checks_the_secret_and_the_request() {
    if !have_virsh() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, &secret);
    let _agent = Agent::start(&cfg, port);
    let good = format!("Bearer {SECRET}");
    let stop = r#"{"action":"stop","vm":"test","dry_run":true}"#;

    assert_eq!(post(port, "/v1/action", None, stop).0, 401);
    assert_eq!(post(port, "/v1/action", Some("Bearer wrong"), stop).0, 401);
    assert_eq!(post(port, "/v1/action", Some(SECRET), stop).0, 401);
    assert_eq!(http(port, "GET", "/v1/action", None).0, 405);
    let (s, body) = post(port, "/v1/action", Some(&good), "{not json");
    assert_eq!(s, 400);
    assert!(body.contains("bad JSON"), "{body}");
    let (s, body) = post(
        port,
        "/v1/action",
        Some(&good),
        r#"{"action":"explode","vm":"x"}"#,
    );
    assert_eq!(s, 400, "{body}");
    assert_eq!(post(port, "/v1/nothing", Some(&good), "{}").0, 404);

    // A name that would read as an option never reaches a command: refused before the engine.
    let (s, body) = post(
        port,
        "/v1/action",
        Some(&good),
        r#"{"action":"start","vm":"-x"}"#,
    );
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("'-'"), "{body}");

    // Dry run of a stop against libvirt's test driver: the plan, with the concrete commands.
    let (s, body) = post(port, "/v1/action", Some(&good), stop);
    assert_eq!(s, 200, "{body}");
    let rep: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rep["result"], "planned", "{body}");
    let steps: Vec<&str> = rep["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["acpi_shutdown", "wait_or_destroy", "release_lock"]);
    assert!(
        body.contains("virsh -q -c test:///default shutdown test"),
        "{body}"
    );
    // Nothing was journaled.
    assert!(!dir.path().join("state/journal/test.json").exists());

    // The same through `vmwarden ctl`, which finds the agent and the secret in the config.
    let out = Command::new(bin())
        .args(["ctl", "--config"])
        .arg(&cfg)
        .args(["stop", "test", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("plan for stop of test on t1") && text.contains("undo:")
            || text.contains("run:"),
        "{text}"
    );
    // A start of a VM libvirt does not know is refused, not attempted.
    let out = Command::new(bin())
        .args(["ctl", "--config"])
        .arg(&cfg)
        .args(["start", "no-such-vm"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not defined on t1"), "{text}");
}

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
        eprintln!("SKIPPED agent_api: virsh -c test:///default does not work here");
    }
    ok
}
