//! The documented resource routes against a real agent and libvirt's `test:///` driver (no
//! daemon): node status, VMs, an action answered at once with its id and followed from its
//! journal, a second action on the same VM refused with 409 naming the first, and the
//! OpenAPI file kept true to the routes the agent serves.

#[path = "support/api.rs"]
mod api;
mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use api::{call_json as call, ctl, virsh_test_driver, AgentConfig};
use common::*;

const OPS: &str = "ops-token-0123456789abcdef";
const READER: &str = "read-token-0123456789abcdef";
const AM: &str = "alertmanager-token-0123456789";

fn agent(dir: &std::path::Path) -> (Agent, u16, PathBuf) {
    let port = free_port();
    let cfg = api::agent_config(
        dir,
        port,
        &AgentConfig {
            tokens: &[
                ("ops", "operate", OPS),
                ("reader", "read", READER),
                ("am", "alertmanager", AM),
            ],
            extra: "[actions]\nshutdown_timeout_seconds = 1\n".into(),
            ..Default::default()
        },
    );
    let log = dir.join("agent.log");
    (Agent::start_logged(&cfg, port, &log), port, log)
}

#[test]
fn resources_and_actions() {
    if !virsh_test_driver("api_rest") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_agent, port, log) = agent(dir.path());

    let (s, node) = call(port, "GET", "/v1/node", Some(READER), "");
    assert_eq!(s, 200, "{node}");
    assert_eq!(node["node"], "t1");
    assert_eq!(node["collectors"]["libvirt"]["status"], "ok", "{node}");
    assert_eq!(node["collectors"]["lvm"]["status"], "disabled", "{node}");
    assert!(
        node["violations"].is_array() && node["not_checked"].is_array(),
        "{node}"
    );
    assert!(node["watchdog"]["vms"].is_array(), "{node}");

    let (s, vms) = call(port, "GET", "/v1/vms", Some(READER), "");
    assert_eq!(s, 200, "{vms}");
    let list = vms["vms"].as_array().unwrap();
    let test = list
        .iter()
        .find(|v| v["name"] == "test")
        .expect("the test driver's VM");
    assert_eq!(test["state"], "running", "{vms}");
    assert_eq!(test["active"], true);
    assert_eq!(test["node"], "t1");
    let (s, one) = call(port, "GET", "/v1/vms/test", Some(READER), "");
    assert_eq!(
        (s, &one["name"]),
        (200, &serde_json::json!("test")),
        "{one}"
    );
    let (s, e) = call(port, "GET", "/v1/vms/nope", Some(READER), "");
    assert_eq!(s, 404, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("not defined on t1"),
        "{e}"
    );
    for bad in [
        "..%2Fx",
        "%ff%fe",
        "vm%3Brm%20-rf%20%2F",
        "-x",
        &"a".repeat(300),
    ] {
        let (s, e) = call(port, "GET", &format!("/v1/vms/{bad}"), Some(READER), "");
        assert_eq!(s, 400, "{bad}: {e}");
        let (s, e) = call(port, "POST", &format!("/v1/vms/{bad}/start"), Some(OPS), "");
        assert_eq!(s, 400, "{bad}: {e}");
    }

    // Roles on the resource routes.
    assert_eq!(call(port, "POST", "/v1/vms/test/stop", None, "").0, 401);
    assert_eq!(
        call(port, "POST", "/v1/vms/test/stop", Some(READER), "").0,
        403
    );
    assert_eq!(call(port, "POST", "/v1/vms/test/stop", Some(AM), "").0, 403);
    assert_eq!(call(port, "GET", "/v1/vms", Some(AM), "").0, 403);
    assert_eq!(call(port, "GET", "/v1/vms/test/stop", Some(OPS), "").0, 405);

    // Strict bodies.
    let (s, e) = call(
        port,
        "POST",
        "/v1/vms/test/stop",
        Some(OPS),
        r#"{"dry_run":true,"force":1}"#,
    );
    assert_eq!(s, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `force`"),
        "{e}"
    );
    let (s, e) = call(
        port,
        "POST",
        "/v1/vms/test/migrate",
        Some(OPS),
        r#"{"dry_run":true}"#,
    );
    assert_eq!(s, 400);
    assert!(
        e["error"].as_str().unwrap().contains("missing field `to`"),
        "{e}"
    );
    let (s, e) = call(
        port,
        "POST",
        "/v1/vms/test/migrate",
        Some(OPS),
        r#"{"to":"n2","cold":true}"#,
    );
    assert_eq!(s, 409, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("cold migration needs it stopped"),
        "{e}"
    );

    // A dry run answers with the plan and journals nothing.
    let (s, plan) = call(
        port,
        "POST",
        "/v1/vms/test/stop",
        Some(OPS),
        r#"{"dry_run":true}"#,
    );
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["result"], "planned");
    assert!(!dir.path().join("state/journal/test.json").exists());

    // A real stop: answered at once with its id; a second action on the VM meanwhile is 409
    // naming it; its steps are followed until it ends (the test driver keeps the VM running,
    // so the stop fails at wait_or_destroy — a real outcome, from the real journal).
    let t0 = Instant::now();
    let (s, acc) = call(port, "POST", "/v1/vms/test/stop", Some(OPS), "");
    assert_eq!(s, 202, "{acc}");
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    let id = acc["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("test-stop-"), "{acc}");
    assert_eq!(acc["href"], format!("/v1/actions/{id}"));
    let (s, e) = call(port, "POST", "/v1/vms/test/restart", Some(OPS), "{}");
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains(&id), "{e}");
    let (s, vm) = call(port, "GET", "/v1/vms/test", Some(READER), "");
    assert_eq!((s, vm["action"].as_str()), (200, Some(id.as_str())), "{vm}");
    let mut seen_running = false;
    let done = loop {
        let (s, st) = call(port, "GET", &format!("/v1/actions/{id}"), Some(READER), "");
        assert_eq!(s, 200, "{st}");
        if st["state"] == "finished" {
            break st;
        }
        seen_running |= st["state"] == "running";
        assert!(t0.elapsed() < Duration::from_secs(30), "{st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(seen_running);
    assert_eq!(done["result"], "failed", "{done}");
    assert_eq!(done["vm"], "test");
    assert_eq!(
        done["plan"],
        serde_json::json!(["acpi_shutdown", "wait_or_destroy", "release_lock"]),
        "{done}"
    );
    let steps: Vec<(&str, &str)> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [("acpi_shutdown", "done"), ("wait_or_destroy", "failed")],
        "{done}"
    );
    // Once it is over the VM takes another action.
    let (s, acc2) = call(
        port,
        "POST",
        "/v1/vms/test/stop",
        Some(OPS),
        "{\"dry_run\":false}",
    );
    assert_eq!(s, 202, "{acc2}");
    assert_ne!(acc2["id"], acc["id"]);

    let (s, _) = call(port, "GET", "/v1/actions/test-stop-1", Some(READER), "");
    assert_eq!(s, 404);
    let (s, _) = call(port, "GET", "/v1/actions/a%20b", Some(READER), "");
    assert_eq!(s, 400);

    // Audited with the action id, and its end too.
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.lines().any(|l| l.contains("vmwarden::audit")
            && l.contains("route=\"/v1/vms/{vm}/stop\"")
            && l.contains(&format!("action_id=\"{id}\""))
            && l.contains("result=\"accepted\"")
            && l.contains("code=202")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("action finished")
            && l.contains(&format!("action_id={id}"))
            && l.contains("result=failed")),
        "{log}"
    );
    assert!(!log.contains(OPS) && !log.contains(READER));

    // `ctl vms`, a client of GET /v1/vms, with a read token.
    let reader = dir.path().join("reader");
    let out = ctl(
        &dir.path().join("vmwarden.toml"),
        [
            OsStr::new("--token-file"),
            reader.as_os_str(),
            OsStr::new("vms"),
        ],
    );
    assert!(out.ok(), "{}", out.text());
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("test "))
        .unwrap_or_default();
    assert!(
        line.contains("t1") && line.contains("running"),
        "{}",
        out.stdout
    );
}
