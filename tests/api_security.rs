//! The API's security against a real running agent: tokens and roles (401/403), the cluster
//! secret as the `peer` credential, rate-limited failures, strict and bounded bodies, names,
//! slow clients, the audit line and the request counter — and nothing runs or changes on disk.

#[path = "support/api.rs"]
mod api;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::{ctl, AgentConfig};
use common::*;

const SECRET: &str = "cluster-secret-for-tests-0123456789";
const OPS: &str = "ops-token-0123456789abcdef";
const READER: &str = "read-token-0123456789abcdef";
const AM: &str = "alertmanager-token-0123456789";
const PEER: &str = "peer-token-0123456789abcdef";

struct Setup {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    port: u16,
}

/// An agent config with the four roles' tokens and the cluster secret; `api_extra` is appended
/// to its `[api]` section.
fn setup(api_extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = api::agent_config(
        dir.path(),
        port,
        &AgentConfig {
            libvirt: false,
            watchdog: false,
            secret: SECRET,
            secret_file: "cluster.secret",
            tokens: &[
                ("ops", "operate", OPS),
                ("reader", "read", READER),
                ("am", "alertmanager", AM),
                ("peer", "peer", PEER),
            ],
            api: api_extra.to_string(),
            ..Default::default()
        },
    );
    Setup { dir, cfg, port }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn post_as(port: u16, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    api::call(port, "POST", path, token, body)
}

/// One request and what must come back: (method, route, token, body, code, a part of the
/// answer's body).
type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], u16, &'a str);

/// Send every case in order; every mismatch is reported, not only the first.
fn check_cases(port: u16, cases: &[Case]) {
    let mut wrong = Vec::new();
    for (method, route, token, body, code, says) in cases {
        let (st, answer) = api::call(port, method, route, *token, body);
        if st != *code || !answer.contains(says) {
            wrong.push(format!(
                "{method} {route} with {token:?} and {:?}: {st} {answer:?}, expected {code} saying {says:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn state_is_empty(dir: &Path) -> bool {
    let j = dir.join("state/journal");
    !j.exists()
        || std::fs::read_dir(&j)
            .unwrap()
            .filter_map(|e| e.ok())
            .all(|e| e.path().is_dir())
}

#[test]
fn tokens_and_roles() {
    let s = setup("");
    let log = s.dir.path().join("agent.log");
    let agent = Agent::start_logged(&s.cfg, s.port, &log);
    let port = s.port;
    let stop = br#"{"action":"stop","vm":"test","dry_run":true}"#;

    // Mutating routes: no token 401 (with the scheme to use), unknown 401, read 403,
    // alertmanager 403, the cluster secret (peer) 403; only operate passes.
    let (st, head, body) = request(port, "POST", "/v1/action", &[], stop);
    assert_eq!(st, 401, "{body}");
    assert!(head.contains("www-authenticate: Bearer"), "{head}");
    assert!(body.contains("missing token"), "{body}");
    let (reset, status_all) = (br#"{"op":"reset","vm":"test"}"#, br#"{"op":"status"}"#);
    let status = br#"{"op":"status","vm":"test"}"#;
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // Unknown token 401; read, alertmanager and peer (the cluster secret, or a peer
        // token) 403; only operate passes.
        ("POST", "/v1/action", Some("not-a-token-at-all-x"), stop, 401, "needs a valid token"),
        ("POST", "/v1/action", Some(READER), stop, 403, "has the role read; /v1/action needs operate"),
        ("POST", "/v1/action", Some(AM), stop, 403, "has the role alertmanager; /v1/action needs operate"),
        ("POST", "/v1/action", Some(SECRET), stop, 403, "has the role peer; /v1/action needs operate"),
        ("POST", "/v1/action", Some(PEER), stop, 403, "has the role peer; /v1/action needs operate"),
        ("POST", "/v1/action", Some(OPS), stop, 200, "\"vm\":\"test\""),
        // A watchdog reset is operate's; its status is anyone's who reads.
        ("POST", "/v1/watchdog", Some(READER), reset, 403, "a watchdog reset needs a token with the role operate"),
        ("POST", "/v1/watchdog", Some(AM), reset, 403, "has the role alertmanager"),
        ("POST", "/v1/watchdog", Some(READER), status_all, 200, "the watchdog does not run"),
        ("POST", "/v1/watchdog", Some(OPS), reset, 200, "the watchdog does not run"),
        // Node-to-node: what an older agent sends (the cluster secret) is accepted; a peer
        // token too; an operator's token is not a peer's.
        ("POST", "/v1/peer", Some(SECRET), status, 200, "\"node\":\"t1\""),
        ("POST", "/v1/peer", Some(PEER), status, 200, "\"node\":\"t1\""),
        ("POST", "/v1/peer", Some(OPS), status, 403, "/v1/peer needs peer"),
        ("POST", "/v1/peer", None, status, 401, "missing token"),
    ];
    check_cases(port, cases);

    // Metrics and health stay open by default.
    assert_eq!(agent.get("/metrics", None).0, 200);
    assert_eq!(agent.get("/healthz", None).0, 200);

    // `ctl` with an operator token file; with the reader's it is told it may not.
    let token = |name: &str| s.dir.path().join(name).display().to_string();
    let out = ctl(
        &s.cfg,
        [
            "--token-file",
            &token("reader"),
            "stop",
            "test",
            "--dry-run",
        ],
    );
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        out.stderr.contains("403") && out.stderr.contains("needs operate"),
        "{}",
        out.stderr
    );
    let out = ctl(
        &s.cfg,
        [
            "--token-file",
            &token("ops"),
            "--json",
            "stop",
            "test",
            "--dry-run",
        ],
    );
    assert_eq!(out.json()["vm"], "test", "{}", out.text());

    // Counted by route template and code.
    let (_, m) = agent.get("/metrics", None);
    assert_eq!(
        sample(
            &m,
            "vmwarden_api_requests_total{route=\"/v1/action\",code=\"403\"}"
        ),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "vmwarden_api_requests_total{route=\"/v1/action\",code=\"401\"}"
        ),
        Some(2.0),
        "{m}"
    );

    // The audit: one line per mutating request, with the token's name and never its value.
    drop(agent);
    let log = std::fs::read_to_string(&log).unwrap();
    for t in [SECRET, OPS, READER, AM, PEER] {
        assert!(!log.contains(t), "a token was logged:\n{log}");
    }
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("vmwarden::audit"))
        .collect();
    let has = |parts: &[&str]| audit.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&[
            "token=\"ops\"",
            "role=\"operate\"",
            "route=\"/v1/action\"",
            "vm=\"test\"",
            "code=200"
        ]),
        "{log}"
    );
    assert!(
        has(&["token=\"reader\"", "role=\"read\"", "code=403"]),
        "{log}"
    );
    assert!(
        has(&["token=\"-\"", "code=401", "source=127.0.0.1"]),
        "{log}"
    );
    // On /v1/action: 2 × 401, 4 × 403, 200: 7; ctl's 403 and its dry run on the resource route.
    assert_eq!(
        audit
            .iter()
            .filter(|l| l.contains("route=\"/v1/action\""))
            .count(),
        7,
        "{log}"
    );
    assert_eq!(
        audit
            .iter()
            .filter(|l| l.contains("route=\"/v1/vms/{vm}/stop\""))
            .count(),
        2,
        "{log}"
    );
    assert_eq!(
        sample(
            &m,
            "vmwarden_api_requests_total{route=\"/v1/vms/{vm}/stop\",code=\"403\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // Watchdog resets the gate let in (the reader's 403, the operator's 200) are audited; its
    // status is not, nor the alertmanager token's 403 (refused before its body is read).
    assert_eq!(
        audit
            .iter()
            .filter(|l| l.contains("route=\"/v1/watchdog\""))
            .count(),
        2,
        "{log}"
    );
    assert!(state_is_empty(s.dir.path()));
}

#[test]
fn closed_metrics_and_failed_attempts_are_limited() {
    let s = setup("open_metrics = false\nopen_healthz = false\nauth_failures_per_minute = 5\n");
    let agent = Agent::start(&s.cfg, s.port);
    let port = s.port;
    assert_eq!(agent.get("/metrics", None).0, 401);
    assert_eq!(agent.get("/healthz", None).0, 401);
    let (st, _, body) = request(
        port,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(READER))],
        b"",
    );
    assert_eq!(st, 200);
    assert!(body.contains("vmwarden_build_info"), "{body}");
    // The alertmanager token reads nothing.
    let (st, _, _) = request(
        port,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(AM))],
        b"",
    );
    assert_eq!(st, 403);
    // Two failures so far; three more reach the limit of five: then even a good token waits.
    for _ in 0..3 {
        assert_eq!(
            post_as(port, "/v1/action", Some("wrong-token-0123456789"), b"{}").0,
            401
        );
    }
    let (st, head, body) = request(
        port,
        "GET",
        "/metrics",
        &[("Authorization", &bearer(READER))],
        b"",
    );
    assert_eq!(st, 429, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(body.contains("too many requests"), "{body}");
}

#[test]
fn a_readable_token_file_stops_the_agent() {
    let s = setup("");
    std::fs::set_permissions(
        s.dir.path().join("ops"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&s.cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("readable by group or others") && err.contains("chmod 600"),
        "{err}"
    );
    // ctl refuses it too, before sending anything.
    let ops = s.dir.path().join("ops").display().to_string();
    let out = ctl(&s.cfg, ["--token-file", &ops, "stop", "test"]);
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
}

#[test]
fn bodies_and_names_are_checked_before_anything_runs() {
    let s = setup("max_body_bytes = 4096\n");
    let _agent = Agent::start(&s.cfg, s.port);
    let port = s.port;
    let big = format!(
        r#"{{"action":"stop","vm":"test","pad":"{}"}}"#,
        "x".repeat(5000)
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("POST", "/v1/action", Some(OPS), big.as_bytes(), 413, "4096 bytes"),
        ("POST", "/v1/action", Some(OPS), b"{not json", 400, "bad JSON"),
        ("POST", "/v1/action", Some(OPS), br#"{"action":"stop","vm":"test","dryrun":true}"#, 400, "unknown field `dryrun`"),
        ("POST", "/v1/peer", Some(SECRET), br#"{"op":"status","vm":"x","evil":1}"#, 400, "unknown field `evil`"),
        // Not UTF-8 at all.
        ("POST", "/v1/action", Some(OPS), b"{\"action\":\"start\",\"vm\":\"\xff\xfe\"}", 400, ""),
    ];
    check_cases(port, cases);
    // Bad names, in an action and in a peer's lock step.
    let long = "a".repeat(300);
    let bodies: Vec<(Vec<u8>, Vec<u8>)> = [
        "../x",
        "vm;rm -rf /",
        "",
        long.as_str(),
        "-x",
        "a b",
        "vm/../../etc",
    ]
    .iter()
    .map(|name| {
        (
            serde_json::json!({"action": "start", "vm": name})
                .to_string()
                .into_bytes(),
            serde_json::json!({"op": "acquire_shared", "vm": name})
                .to_string()
                .into_bytes(),
        )
    })
    .collect();
    let cases: Vec<Case> = bodies
        .iter()
        .flat_map(|(action, peer)| {
            [
                (
                    "POST",
                    "/v1/action",
                    Some(OPS),
                    action.as_slice(),
                    400,
                    "name",
                ),
                ("POST", "/v1/peer", Some(SECRET), peer.as_slice(), 400, ""),
            ]
        })
        .collect();
    check_cases(port, &cases);
    assert!(state_is_empty(s.dir.path()));
}

#[test]
fn slow_clients_are_cut_off() {
    let s = setup("read_timeout_seconds = 1\n");
    let agent = Agent::start(&s.cfg, s.port);
    // Headers never finished: the connection is closed after the read timeout.
    let t0 = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"POST /v1/action HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // A body that trickles: 408 after the read timeout.
    let t0 = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(
        format!(
            "POST /v1/action HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPS}\r\nContent-Length: 100\r\n\r\n{{\"a"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(agent.get("/healthz", None).0, 200);
}

/// Every route that changes something, from the agent's own route table: no token 401, a read
/// token 403, the alertmanager token 403 (except on its webhook), bad bodies 400/413, bad names
/// 400 — and nothing was journaled or written under the state directory.
#[test]
fn every_mutating_route_refuses_what_it_must() {
    let s = setup("max_body_bytes = 2048\nauth_failures_per_minute = 100000\n");
    let _agent = Agent::start(&s.cfg, s.port);
    let port = s.port;
    let state = s.dir.path().join("state");
    let before = list_tree(&state);
    let mutating: Vec<(&str, &str)> = vmwarden::api::server::ROUTES
        .iter()
        .filter(|(m, _, role)| *m == "post" && ["operate", "peer", "alertmanager"].contains(role))
        .map(|(_, p, role)| (*p, *role))
        .collect();
    assert!(mutating.len() >= 8, "{mutating:?}");
    let big = format!("{{\"dry_run\":true,\"x\":\"{}\"}}", "y".repeat(3000));
    for (template, role) in &mutating {
        let path = template.replace("{vm}", "test");
        assert_eq!(post_as(port, &path, None, b"{}").0, 401, "{path}");
        assert_eq!(
            post_as(port, &path, Some("Bearer-less-garbage-0123456789"), b"{}").0,
            401
        );
        if *role != "peer" {
            assert_eq!(post_as(port, &path, Some(READER), b"{}").0, 403, "{path}");
        }
        if *role != "alertmanager" {
            assert_eq!(post_as(port, &path, Some(AM), b"{}").0, 403, "{path}");
        }
        let tok = match *role {
            "operate" => OPS,
            "peer" => SECRET,
            _ => AM,
        };
        // The webhook's own limit is [alertmanager] max_body_bytes (1 MiB by default).
        let huge = format!("{{\"x\":\"{}\"}}", "y".repeat(1 << 20));
        let too_big = if *role == "alertmanager" { &huge } else { &big };
        let (st, body) = post_as(port, &path, Some(tok), too_big.as_bytes());
        assert_eq!(st, 413, "{path}: {body}");
        let (st, body) = post_as(port, &path, Some(tok), b"{\"dry_run\": tru");
        assert_eq!(st, 400, "{path}: {body}");
        assert!(
            body.contains("JSON") || body.contains("payload"),
            "{path}: {body}"
        );
        if *role != "alertmanager" && !path.ends_with("/migrate") {
            // (migrate's body needs `to`; the webhook ignores unknown fields on purpose.)
            let (st, body) = post_as(
                port,
                &path,
                Some(tok),
                br#"{"dry_run":true,"vm":"test","op":"status","action":"stop","bogus":1}"#,
            );
            assert_eq!(st, 400, "{path}: {body}");
            assert!(body.contains("unknown field"), "{path}: {body}");
        }
    }
    // Names in paths, including what is not UTF-8 once decoded.
    for bad in [
        "..%2Fx",
        "vm%3Brm%20-rf%20%2F",
        "%ff",
        "%",
        &"a".repeat(300),
    ] {
        for verb in ["start", "stop", "restart", "reset"] {
            let (st, body) = post_as(port, &format!("/v1/vms/{bad}/{verb}"), Some(OPS), b"");
            assert_eq!(st, 400, "{bad}/{verb}: {body}");
        }
    }
    let (st, body) = post_as(
        port,
        "/v1/vms/test/migrate",
        Some(OPS),
        br#"{"to":"../n2","dry_run":true}"#,
    );
    assert_eq!(st, 400, "{body}");
    assert_eq!(
        list_tree(&state),
        before,
        "something was written under {}",
        state.display()
    );
}

fn list_tree(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            out.push(e.path());
            out.extend(list_tree(&e.path()));
        }
    }
    out.sort();
    out
}
