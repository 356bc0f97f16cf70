//! Helpers for tests that run the real `vmwarden` binary.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../support/executable.rs"]
mod executable;
#[allow(unused_imports)] // not every test crate writes stand-in commands
pub use executable::executable;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with every collector disabled except what `extra` turns on.
pub fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let p = dir.join("vmwarden.toml");
    let text =
        format!("[agent]\nlisten = \"127.0.0.1:{port}\"\ncollector_timeout_seconds = 2\n{extra}\n");
    std::fs::write(&p, text).unwrap();
    p
}

/// A `vmwarden run` child, killed on drop.
pub struct Agent {
    pub child: Child,
    pub port: u16,
}

impl Agent {
    pub fn start(config: &Path, port: u16) -> Agent {
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut agent = Agent { child, port };
        // It listens within a second here; 60 s because this machine has stalled for up to 19 s
        // at once (steal time), and one CI run failed at the 10 s this used to allow. An agent
        // that exits instead fails at once, with its status.
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = agent.child.try_wait() {
                panic!("the agent exited ({st}) before it listened on {port}");
            }
            assert!(Instant::now() < deadline, "agent did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn get(&self, path: &str, accept: Option<&str>) -> (u16, String) {
        http(self.port, "GET", path, accept)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 client: (status, body).
pub fn http(port: u16, method: &str, path: &str, accept: Option<&str>) -> (u16, String) {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    exchange(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n"
        ),
    )
}

/// Send one raw request, read the whole answer: (status, body).
fn exchange(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Value of the first sample line that starts with `prefix` (name plus labels).
pub fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// True when `pid` no longer runs (gone, or a zombie waiting for its reaper).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// POST a body with an optional `Authorization` header: (status, body).
pub fn post(port: u16, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

impl Agent {
    /// Like `start`, with the agent's stderr (its log) written to `log`.
    pub fn start_logged(config: &Path, port: u16, log: &Path) -> Agent {
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut agent = Agent { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = agent.child.try_wait() {
                panic!(
                    "agent exited ({st}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "agent did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }
}

/// One request with any method, headers and (raw) body: (status, headers, body).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // A server may answer and close before the whole request is written (a refusal of a large
    // body or of a bad token need not read it): the write then fails with EPIPE or a reset,
    // and the answer already sent is still there to read. Any other write error is the test's.
    if let Err(e) = s.write_all(&bytes) {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "writing the request to 127.0.0.1:{port}: {e}"
        );
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// Write `content` to `dir/name` with `mode`; its path.
pub fn write_file_mode(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}
