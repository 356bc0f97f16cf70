//! The agent as a whole: HTTP endpoints, hung commands, bad requests, bad config.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A fake command that records its pid and then hangs, as `lvs` does on dead storage.
fn hanging_command(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let pidfile = dir.join(format!("{name}.pid"));
    executable(
        &p,
        &format!(
            "#!/bin/sh\necho $$ >> {}\nsleep 1000 &\necho $! >> {}\nwait\n",
            pidfile.display(),
            pidfile.display()
        ),
    )
}

fn pids(dir: &std::path::Path, name: &str) -> Vec<i32> {
    std::fs::read_to_string(dir.join(format!("{name}.pid")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn hung_commands_are_killed_and_the_scrape_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let lvm = hanging_command(dir.path(), "lvm");
    let sanlock = hanging_command(dir.path(), "sanlock");
    let drbdsetup = hanging_command(dir.path(), "drbdsetup");
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        port,
        &format!(
            "[drbd]\nproc_path = \"{}/no-proc-drbd\"\ndrbdsetup = \"{}\"\n\
             [lvm]\nlvm = \"{}\"\nlvmlockctl = \"{}\"\n[sanlock]\nsanlock = \"{}\"\n\
             [libvirt]\nenabled = false\n",
            dir.path().display(),
            drbdsetup.display(),
            lvm.display(),
            lvm.display(),
            sanlock.display()
        ),
    );
    let agent = Agent::start(&cfg, port);
    let started = Instant::now();
    let (status, body) = agent.get("/metrics", None);
    let took = started.elapsed();
    assert_eq!(status, 200);
    // The timeout is 2 s; the scrape must not wait for the hung commands (they sleep 1000 s).
    assert!(took < Duration::from_secs(10), "scrape took {took:?}");
    for c in ["lvm", "sanlock", "drbd"] {
        assert_eq!(
            sample(
                &body,
                &format!("vmwarden_collector_success{{collector=\"{c}\"}}")
            ),
            Some(0.0),
            "{c} should have failed:\n{body}"
        );
    }
    // Every hung process (the script and its sleeping child) is gone after the timeout.
    for name in ["lvm", "sanlock", "drbdsetup"] {
        let ps = pids(dir.path(), name);
        assert!(!ps.is_empty(), "{name} was never run");
        let deadline = Instant::now() + Duration::from_secs(5);
        for pid in ps {
            while !process_gone(pid) {
                assert!(
                    Instant::now() < deadline,
                    "{name} pid {pid} survived the timeout"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // The agent is still healthy and answers again.
    assert_eq!(agent.get("/healthz", None).0, 200);
}

#[test]
fn endpoints_and_bogus_requests() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        port,
        "[drbd]\nenabled = false\n[lvm]\nenabled = false\n[sanlock]\nenabled = false\n[libvirt]\nenabled = false\n",
    );
    let agent = Agent::start(&cfg, port);

    let (s, body) = agent.get("/", None);
    assert_eq!(s, 200);
    assert!(body.contains("/metrics"));
    assert_eq!(agent.get("/healthz", None), (200, "ok\n".to_string()));
    assert_eq!(agent.get("/nope", None).0, 404);
    assert_eq!(http(port, "POST", "/metrics", None).0, 405);

    // Garbage on the socket: the connection is dropped, the agent keeps serving.
    for junk in [
        &b"\x00\xff\x13garbage\r\n\r\n"[..],
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(junk);
    }

    // Content negotiation: OpenMetrics for Prometheus, classic text for everyone else.
    let (_, om) = agent.get(
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE vmwarden_parse_errors counter"));
    let (_, txt) = agent.get("/metrics", None);
    assert!(!txt.contains("# EOF"));
    assert!(txt.contains("# TYPE vmwarden_parse_errors_total counter"));
    // Disabled collectors export nothing about themselves.
    assert!(!txt.contains("vmwarden_collector_success{"), "{txt}");
    assert_eq!(sample(&txt, "vmwarden_build_info{"), Some(1.0));
}

#[test]
fn collect_exits_zero_when_collectors_fail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        1,
        "[drbd]\nproc_path = \"/nonexistent/drbd\"\ndrbdsetup = \"/nonexistent/drbdsetup\"\n\
         [lvm]\nlvm = \"/nonexistent/lvm\"\nlvmlockctl = \"/nonexistent/lvmlockctl\"\n\
         [sanlock]\nsanlock = \"/nonexistent/sanlock\"\n[libvirt]\nuri = \"test:///nonexistent-driver\"\n",
    );
    let out = Command::new(bin())
        .args(["collect", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for c in ["drbd", "lvm", "sanlock", "libvirt"] {
        assert_eq!(
            sample(
                &text,
                &format!("vmwarden_collector_success{{collector=\"{c}\"}}")
            ),
            Some(0.0),
            "{text}"
        );
    }
    for c in ["drbd", "lvm", "sanlock"] {
        assert_eq!(
            sample(
                &text,
                &format!("vmwarden_collector_absent{{collector=\"{c}\"}}")
            ),
            Some(1.0),
            "{c} is not installed, so absent:\n{text}"
        );
    }
}

#[test]
fn bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[sanlock]\nsanlock_path = \"/usr/sbin/sanlock\"\n").unwrap();
    for sub in ["run", "collect"] {
        let out = Command::new(bin())
            .args([sub, "--config"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("sanlock.sanlock_path"), "{err}");
    }
}
