//! docs/openapi.yaml is true to the agent: it documents exactly the routes the agent serves,
//! with the role each needs, docs/api.md names each of them, and schemathesis (PyPI; in the
//! venv `scripts/setup.sh` makes) run against a real agent finds no 5xx and no response that
//! breaks the schema.

#[path = "support/api.rs"]
mod api;
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use api::{virsh_test_driver, AgentConfig};
use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (method, path, role) of every operation in the OpenAPI file.
fn documented() -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(repo().join("docs/openapi.yaml")).unwrap();
    let mut out = BTreeSet::new();
    let (mut in_paths, mut path, mut method) = (false, String::new(), String::new());
    for line in text.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
            if !p.starts_with(' ') {
                path = p.to_string();
                continue;
            }
        }
        if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if ["get", "post", "put", "patch", "delete"].contains(&m) {
                method = m.to_string();
                continue;
            }
        }
        if let Some(role) = line.strip_prefix("      x-vmwarden-role: ") {
            assert!(
                out.insert((method.clone(), path.clone(), role.trim().to_string())),
                "{method} {path} twice"
            );
        }
    }
    out
}

#[test]
fn the_openapi_file_documents_exactly_the_served_routes() {
    let doc = documented();
    let code: BTreeSet<(String, String, String)> = vmwarden::api::server::ROUTES
        .iter()
        .map(|(m, p, r)| (m.to_string(), p.to_string(), r.to_string()))
        .collect();
    let missing: Vec<_> = code.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "served but not documented (or with another role): {missing:?}\ndocumented but not served: {extra:?}"
    );
    let api_md = std::fs::read_to_string(repo().join("docs/api.md")).unwrap();
    for (m, p, _) in &code {
        assert!(
            api_md.contains(&format!("`{} {p}`", m.to_uppercase())),
            "docs/api.md does not name `{} {p}`",
            m.to_uppercase()
        );
    }
}

fn schemathesis() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("VMWARDEN_SCHEMATHESIS").map(PathBuf::from),
        std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".cache/vmwarden/venv/bin/schemathesis")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("VMWARDEN_REQUIRE_REAL").is_none(),
            "schemathesis is required (scripts/setup.sh installs it in ~/.cache/vmwarden/venv)"
        );
        eprintln!("SKIPPED schemathesis: not installed (scripts/setup.sh)");
    }
    found
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let Some(st) = schemathesis() else {
        return;
    };
    if !virsh_test_driver("api_openapi") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let cfg = api::agent_config(
        d,
        port,
        &AgentConfig {
            tokens: &[
                ("ops", "operate", "ops-token-0123456789abcdef"),
                ("am", "alertmanager", "am-token-0123456789abcdef"),
            ],
            api: "auth_failures_per_minute = 1000000\n".into(),
            extra: "[actions]\nshutdown_timeout_seconds = 1\n\
                    [alertmanager]\nrules = [{ name = \"r\", alertname = \"VmDown\", action = \"start\", dry_run = true }]\n"
                .into(),
            ..Default::default()
        },
    );
    let _agent = Agent::start(&cfg, port);
    // The operator's token everywhere but the node-to-node route and the webhook; the cluster
    // secret and the alertmanager token there.
    for (token, filter) in [
        (
            "ops-token-0123456789abcdef",
            "--exclude-path-regex=^/v1/(peer|alertmanager)$",
        ),
        ("cluster-secret-0123456789abcdef", "--include-path=/v1/peer"),
        (
            "am-token-0123456789abcdef",
            "--include-path=/v1/alertmanager",
        ),
    ] {
        let out = std::process::Command::new(&st)
            .arg("run")
            .arg(repo().join("docs/openapi.yaml"))
            .args(["--url", &format!("http://127.0.0.1:{port}")])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(filter)
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "20", "--seed", "1", "--request-timeout", "30"])
            .env("NO_COLOR", "1")
            .current_dir(d)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{filter}:\n{text}");
        let cases = text
            .lines()
            .find(|l| l.contains(" generated, "))
            .unwrap_or_default();
        assert!(
            cases.contains("passed") && !cases.contains("failed"),
            "{filter}: {cases}\n{text}"
        );
        assert!(!text.contains("returned only 401/403"), "{filter}:\n{text}");
    }
}
