//! Shared by the API tests (agent_api.rs, api_*.rs), included with `#[path]` next to
//! `mod common;` (the HTTP client and the `vmwarden run` child): is libvirt's `test:///` driver
//! usable, an agent's config with its secret and token files, one API call, and `vmwarden ctl`
//! run with its output (and its JSON) at hand.
#![allow(dead_code)] // each test crate uses a different subset

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{bin, request, write_config, write_file_mode};

/// Whether `virsh -c test:///default` works (libvirt's test driver: no daemon). Without it a test
/// is skipped loudly, or fails under VMWARDEN_REQUIRE_REAL.
pub fn virsh_test_driver(test: &str) -> bool {
    let ok = Command::new("virsh")
        .args(["-c", "test:///default", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("VMWARDEN_REQUIRE_REAL").is_none(),
            "virsh with the test:/// driver is required (scripts/setup.sh installs libvirt-clients)"
        );
        eprintln!("SKIPPED {test}: virsh -c test:///default does not work here");
    }
    ok
}

/// An agent for the API tests: every collector off but libvirt on `test:///default` (or off),
/// the cluster secret and named tokens in 0600 files of the directory.
pub struct AgentConfig<'a> {
    pub node: &'a str,
    /// `[libvirt] enabled` (its uri is `test:///default` either way).
    pub libvirt: bool,
    /// `[watchdog] enabled = false` when false (the default config's value otherwise).
    pub watchdog: bool,
    /// The cluster secret, written to `secret_file` (none written when empty).
    pub secret: &'a str,
    /// File name of the secret in the directory.
    pub secret_file: &'a str,
    /// (name, role, token): each written to a file called `name`.
    pub tokens: &'a [(&'a str, &'a str, &'a str)],
    /// Lines of `[cluster]` (peers = [...]).
    pub cluster: String,
    /// Lines of `[api]` after its tokens.
    pub api: String,
    /// Sections after `[api]`.
    pub extra: String,
}

impl Default for AgentConfig<'_> {
    fn default() -> Self {
        AgentConfig {
            node: "t1",
            libvirt: true,
            watchdog: true,
            secret: "cluster-secret-0123456789abcdef",
            secret_file: "secret",
            tokens: &[],
            cluster: String::new(),
            api: String::new(),
            extra: String::new(),
        }
    }
}

/// Write the secret, the token files and `dir/vmwarden.toml` (listening on `port`); its path.
pub fn agent_config(dir: &Path, port: u16, c: &AgentConfig) -> PathBuf {
    let d = dir.display();
    if !c.secret.is_empty() {
        write_file_mode(dir, c.secret_file, &format!("{}\n", c.secret), 0o600);
    }
    let mut tokens = Vec::new();
    for (name, role, tok) in c.tokens {
        write_file_mode(dir, name, &format!("{tok}\n"), 0o600);
        tokens.push(format!(
            "{{ name = \"{name}\", role = \"{role}\", file = \"{d}/{name}\" }}"
        ));
    }
    let tokens = if tokens.is_empty() {
        String::new()
    } else {
        format!("tokens = [{}]\n", tokens.join(",\n  "))
    };
    write_config(
        dir,
        port,
        &format!(
            "[drbd]\nenabled = false\n[lvm]\nenabled = false\n[sanlock]\nenabled = false\n\
             [libvirt]\n{libvirt}uri = \"test:///default\"\n{watchdog}\
             [cluster]\nnode = \"{node}\"\nsecret_file = \"{d}/{sf}\"\nstate_dir = \"{d}/state\"\n{cluster}\n\
             [api]\n{tokens}{api}\n{extra}\n",
            libvirt = if c.libvirt { "" } else { "enabled = false\n" },
            watchdog = if c.watchdog {
                ""
            } else {
                "[watchdog]\nenabled = false\n"
            },
            node = c.node,
            sf = c.secret_file,
            cluster = c.cluster,
            api = c.api,
            extra = c.extra,
        ),
    )
}

/// One request with an optional bearer token and a JSON body: (status, body).
pub fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    let (s, _, b) = request(port, method, path, &h, body);
    (s, b)
}

/// Like `call`, the body parsed as JSON (a string value when it is not JSON).
pub fn call_json(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let (s, b) = call(port, method, path, token, body.as_bytes());
    (
        s,
        serde_json::from_str(&b).unwrap_or(serde_json::Value::String(b)),
    )
}

/// What one `vmwarden ctl` run said.
pub struct CtlRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CtlRun {
    /// Its stdout as JSON (`--json`); Null when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_default()
    }

    /// stdout then stderr, for messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// `vmwarden ctl --config CONFIG ARGS...`.
pub fn ctl<I, S>(config: &Path, args: I) -> CtlRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(bin())
        .args(["ctl", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    CtlRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
