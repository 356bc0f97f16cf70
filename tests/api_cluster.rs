//! The cluster view against real agents: two agents, t1 and t2, each on libvirt's `test:///`
//! driver (whose VM `test` runs on both — a VM started on two nodes), peers of each other, and a
//! third peer t3 whose agent does not run. Each agent exports `running_on_several_nodes` for
//! `test` naming t1 and t2 and `vmwarden_peer_up{peer="t3"} 0`; `GET /v1/cluster/vms` and
//! `ctl vms --cluster` show both nodes and t3 as unreachable; `vmwarden check` reports it; every
//! start of `test` is refused naming both nodes. Also `ctl`'s live steps, `--json` on every
//! subcommand and its plain errors with the next command to type.

#[path = "support/api.rs"]
mod api;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use api::{call_json, ctl, virsh_test_driver, AgentConfig};
use common::*;

const SECRET: &str = "cluster-secret-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdef";
const READER: &str = "read-token-0123456789abcdef";

fn node(dir: &Path, name: &str, port: u16, peers: &[(&str, u16)]) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let peers: Vec<String> = peers
        .iter()
        .map(|(n, p)| {
            format!("{{ name = \"{n}\", url = \"http://127.0.0.1:{p}\", libvirt_uri = \"test:///default\" }}")
        })
        .collect();
    api::agent_config(
        &d,
        port,
        &AgentConfig {
            node: name,
            secret: SECRET,
            tokens: &[("ops", "operate", OPS), ("reader", "read", READER)],
            cluster: format!("peers = [{}]\n", peers.join(", ")),
            extra: "[actions]\nshutdown_timeout_seconds = 1\npeer_timeout_seconds = 3\n".into(),
            ..Default::default()
        },
    )
}

fn token(cfg: &Path, name: &str) -> String {
    cfg.parent().unwrap().join(name).display().to_string()
}

#[test]
fn two_nodes_running_one_vm_are_seen_by_both_and_every_start_is_refused() {
    if !virsh_test_driver("api_cluster") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let c1 = node(d, "t1", p1, &[("t2", p2), ("t3", p3)]);
    let c2 = node(d, "t2", p2, &[("t1", p1), ("t3", p3)]);
    let a1 = Agent::start_logged(&c1, p1, &d.join("t1.log"));
    let a2 = Agent::start_logged(&c2, p2, &d.join("t2.log"));

    // Both agents export the violation, naming both nodes; the dead peer is 0, never missing.
    for (a, me, other) in [(&a1, "t1", "t2"), (&a2, "t2", "t1")] {
        let (s, m) = a.get("/metrics", None);
        assert_eq!(s, 200);
        assert_eq!(
            sample(
                &m,
                "vmwarden_invariant_violation{invariant=\"running_on_several_nodes\",domain=\"test\",subject=\"t1,t2\"}"
            ),
            Some(1.0),
            "{me}: {m}"
        );
        assert_eq!(
            sample(&m, &format!("vmwarden_peer_up{{peer=\"{other}\"}}")),
            Some(1.0),
            "{me}"
        );
        assert_eq!(
            sample(&m, "vmwarden_peer_up{peer=\"t3\"}"),
            Some(0.0),
            "{me}"
        );
        assert_eq!(
            sample(
                &m,
                "vmwarden_invariant_checked{invariant=\"running_on_several_nodes\"}"
            ),
            Some(0.0),
            "{me}: t3 could not be asked"
        );
    }

    // The cluster view: both nodes with the VM, t3 reported unreachable.
    let (s, v) = call_json(p1, "GET", "/v1/cluster/vms", Some(READER), "");
    assert_eq!(s, 200, "{v}");
    let reach: Vec<(&str, bool)> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap(),
                n["reachable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(reach, [("t1", true), ("t2", true), ("t3", false)], "{v}");
    assert!(
        v["nodes"][2]["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the agent"),
        "{v}"
    );
    let test = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "test")
        .expect("the test VM");
    assert_eq!(test["running_on"], serde_json::json!(["t1", "t2"]), "{v}");
    assert!(
        test["violation"]
            .as_str()
            .unwrap()
            .contains("test runs on t1 and t2 at once"),
        "{v}"
    );
    let placed: Vec<&str> = test["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(placed, ["t1", "t2"]);
    // An alertmanager-less agent still wants a token with a reading role.
    assert_eq!(call_json(p1, "GET", "/v1/cluster/vms", None, "").0, 401);
    // GET /v1/node carries the same judgment and the peers' answers.
    let (s, n) = call_json(p2, "GET", "/v1/node", Some(READER), "");
    assert_eq!(s, 200, "{n}");
    assert!(
        n["violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["invariant"] == "running_on_several_nodes" && x["subject"] == "t1,t2"),
        "{n}"
    );
    assert_eq!(
        n["peers_up"][0],
        serde_json::json!({"peer": "t1", "up": true, "error": null})
    );
    assert_eq!(n["peers_up"][1]["up"], false);

    // ctl vms --cluster: a table with both nodes, the VM on two nodes and t3 called out; exit 1.
    let out = ctl(
        &c1,
        ["--token-file", &token(&c1, "reader"), "vms", "--cluster"],
    );
    assert_eq!(out.code, Some(1), "{}", out.text());
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("test "))
        .collect();
    assert!(
        lines.len() == 2
            && lines[0].contains(" t1 ")
            && lines[1].contains(" t2 ")
            && lines.iter().all(|l| l.contains("running")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("!! test runs on t1 and t2 at once (running_on_several_nodes)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("!! node t3 is unreachable"),
        "{}",
        out.stdout
    );
    let j = ctl(&c2, ["--json", "vms", "--cluster"]).json();
    assert_eq!(j["node"], "t2", "{j}");
    assert_eq!(j["nodes"][0]["node"], "t2");

    // vmwarden check judges the same, with the peers.
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&c1)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("VIOLATED running_on_several_nodes domain=test subject=t1,t2"),
        "{text}"
    );
    assert!(
        text.contains("NOT CHECKED running_on_several_nodes: peer t3 could not be asked"),
        "{text}"
    );

    // Any start is refused, naming both nodes: through ctl (steps shown), the API, and a dry
    // run plans it (the refusal is the preflight's, when it runs).
    let out = ctl(&c1, ["--token-file", &token(&c1, "ops"), "start", "test"]);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stdout
            .contains("refusing to start test: test runs on t1 and t2 at once")
            && out.stdout.contains("[running_on_several_nodes]")
            && out.stdout.contains("failed  start_preflight"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("next: nothing was changed"),
        "{}",
        out.stdout
    );
    let out = ctl(
        &c2,
        [
            "--token-file",
            &token(&c2, "ops"),
            "--json",
            "start",
            "test",
        ],
    );
    assert_eq!(out.code, Some(1), "{}", out.text());
    let rep = out.json();
    assert_eq!(rep["result"], "refused", "{}", out.stdout);
    assert_eq!(rep["held_by_node"], "t1", "{}", out.stdout);
    assert!(
        rep["message"].as_str().unwrap().contains("t1 and t2"),
        "{}",
        out.stdout
    );
}

#[test]
fn ctl_follows_steps_speaks_json_everywhere_and_says_what_to_type() {
    if !virsh_test_driver("api_cluster") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let cfg = node(d, "t1", port, &[]);
    let _a = Agent::start_logged(&cfg, port, &d.join("t1.log"));
    let ops = token(&cfg, "ops");
    let reader = token(&cfg, "reader");

    // A real stop of the test driver's VM, followed live: each step as it ends, then the
    // result (it fails at wait_or_destroy: the test driver's VM does not power off).
    let out = ctl(&cfg, ["--token-file", &ops, "stop", "test"]);
    assert_eq!(out.code, Some(1), "{}", out.text());
    let s = &out.stdout;
    let at = |p: &str| s.find(p).unwrap_or_else(|| panic!("{p:?} missing:\n{s}"));
    assert!(s.starts_with("action test-stop-"), "{s}");
    assert!(
        at("plan: acpi_shutdown → wait_or_destroy → release_lock") < at("done    acpi_shutdown")
    );
    assert!(at("done    acpi_shutdown") < at("failed  wait_or_destroy"));
    assert!(at("failed  wait_or_destroy") < at("stop test on t1: failed"));
    assert!(s.contains("next: `vmwarden ctl status test`"), "{s}");

    // --json everywhere: each answer parses.
    for args in [
        vec!["--json", "status", "test"],
        vec!["--json", "vms"],
        vec!["--json", "vms", "--cluster"],
        vec!["--json", "watchdog"],
        vec!["--json", "start", "test", "--dry-run"],
        vec!["--json", "migrate", "test", "--to", "t9", "--dry-run"],
        vec!["--json", "reset", "test", "--dry-run"],
    ] {
        let mut a = vec!["--token-file", &ops];
        a.extend(args.iter().copied());
        let out = ctl(&cfg, &a);
        assert!(
            !out.json().is_null(),
            "{args:?}: not JSON (exit {:?}):\n{}",
            out.code,
            out.text()
        );
    }
    // A cluster of one: nothing to flag.
    let out = ctl(&cfg, ["--token-file", &reader, "vms", "--cluster"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert!(!out.stdout.contains("!!"), "{}", out.stdout);

    // Plain errors with the next command to type.
    let out = ctl(&cfg, ["--token-file", &reader, "start", "test"]);
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        out.stderr.contains("403")
            && out.stderr.contains("needs operate")
            && out
                .stderr
                .contains("next: `vmwarden ctl --token-file FILE start test`"),
        "{}",
        out.stderr
    );
    let out = ctl(&cfg, ["--token-file", &ops, "start", "no-such-vm"]);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(out.stdout.contains("not defined on t1"), "{}", out.stdout);
    let dead = d.join("dead.toml");
    std::fs::write(
        &dead,
        std::fs::read_to_string(&cfg).unwrap().replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", free_port()),
        ),
    )
    .unwrap();
    let out = ctl(&dead, ["--token-file", &ops, "vms"]);
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        out.stderr.contains("cannot reach the agent")
            && out
                .stderr
                .contains("next: check that the agent runs on this node"),
        "{}",
        out.stderr
    );
    // With --json the error is JSON too.
    let j = ctl(&dead, ["--token-file", &ops, "--json", "vms"]).json();
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the agent")
            && j["next"]
                .as_str()
                .unwrap()
                .contains("systemctl status vmwarden"),
        "{j}"
    );
}
