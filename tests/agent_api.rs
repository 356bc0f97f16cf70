//! The agent's /v1/ API without a cluster: the secret is required and checked, bogus requests get
//! clear errors, names are validated, and a dry run plans against a real libvirt (the `test:///`
//! driver, which needs no daemon) and changes nothing. Also `vmwarden ctl` end to end.

#[path = "support/api.rs"]
mod api;
mod common;

use api::{ctl, virsh_test_driver, AgentConfig};
use common::*;

const SECRET: &str = "s3cret-for-tests-0123456789";

/// libvirt off (the dry run still plans through virsh against `test:///default`); `secret`
/// written to `cluster.secret` unless empty.
fn config(dir: &std::path::Path, port: u16, secret: &str) -> std::path::PathBuf {
    api::agent_config(
        dir,
        port,
        &AgentConfig {
            libvirt: false,
            secret,
            secret_file: "cluster.secret",
            ..Default::default()
        },
    )
}

#[test]
fn without_a_secret_the_agent_only_observes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, "");
    let agent = Agent::start(&cfg, port);
    let (s, body) = post(port, "/v1/action", Some(&format!("Bearer {SECRET}")), "{}");
    assert_eq!(s, 503, "{body}");
    assert!(
        body.contains("cluster.secret") && body.contains("urandom"),
        "{body}"
    );
    assert_eq!(agent.get("/healthz", None).0, 200);
}

#[test]
fn the_api_checks_the_secret_and_the_request() {
    if !virsh_test_driver("agent_api") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, SECRET);
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
    let out = ctl(&cfg, ["stop", "test", "--dry-run"]);
    let text = &out.stdout;
    assert!(out.ok(), "{}", out.text());
    assert!(
        text.contains("plan for stop of test on t1") && text.contains("undo:")
            || text.contains("run:"),
        "{text}"
    );
    // A start of a VM libvirt does not know is refused, not attempted.
    let out = ctl(&cfg, ["start", "no-such-vm"]);
    let text = &out.stdout;
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(text.contains("not defined on t1"), "{text}");
}
