//! systemd readiness for real: the agent started as systemd starts a `Type=notify` service
//! (`$NOTIFY_SOCKET` naming a unix datagram socket this test binds, `$WATCHDOG_USEC`) says
//! `READY=1` only once it serves `/healthz` and its first collection is done, sends `WATCHDOG=1`
//! keep-alives from the start (systemd's watchdog runs during start-up too), and `STOPPING=1` on
//! SIGTERM.
//!
//! The first collection is made visibly slow by a stand-in `lvm` (a script that sleeps, then
//! records that it ran): the only stand-in here, there to see the ordering; the socket protocol,
//! the HTTP server and the agent are the real ones.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn recv(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

#[test]
fn ready_after_healthz_and_first_collection_then_watchdog_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("lvm-ran");
    let lvm = dir.path().join("lvm");
    executable(
        &lvm,
        &format!(
            "#!/bin/sh\nsleep 1.5\necho \"$@\" >> {}\nexit 1\n",
            ran.display()
        ),
    );
    let port = free_port();
    let cfg = dir.path().join("vmwarden.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{port}\"\ncollector_timeout_seconds = 4\n\
             [drbd]\nenabled = false\n[lvm]\nlvm = \"{0}\"\nlvmlockctl = \"{0}\"\n\
             [sanlock]\nenabled = false\n[libvirt]\nenabled = false\n\
             [cluster]\nsecret_file = \"{1}/no-secret\"\n",
            lvm.display(),
            dir.path().display()
        ),
    )
    .unwrap();

    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Poll /healthz from the side, remembering when it first answered.
    let first_ok: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (first_ok, stop) = (first_ok.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && http(port, "GET", "/healthz", None).0 == 200
                {
                    first_ok.lock().unwrap().get_or_insert_with(Instant::now);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Keep-alives may come first (the watchdog runs from the start); then READY=1.
    let mut early_pings = 0;
    let ready = loop {
        let m = recv(&sock).expect("no READY=1 within 20 s");
        if m == "WATCHDOG=1" {
            early_pings += 1;
            continue;
        }
        break m;
    };
    let ready_at = Instant::now();
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "the first notification other than WATCHDOG=1 is not READY=1: {ready:?}"
    );
    assert!(
        early_pings >= 1,
        "no keep-alive during the {:?} before READY=1 (systemd's watchdog runs from the start)",
        ready_at - started
    );
    assert!(
        ready.contains(&format!("STATUS=serving on 127.0.0.1:{port}")),
        "{ready:?}"
    );
    // At READY=1 the agent answers, and it answered before it said so.
    assert_eq!(http(port, "GET", "/healthz", None).0, 200);
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    let first_ok = first_ok
        .lock()
        .unwrap()
        .expect("/healthz never answered before READY=1");
    assert!(
        first_ok <= ready_at,
        "READY=1 came before /healthz answered"
    );
    // ... and the first collection was done: the slow stand-in lvm had run to its end.
    assert!(
        ran.exists(),
        "READY=1 before the first collection ran lvm ({:?} after start)",
        ready_at - started
    );
    assert!(
        ready_at - started >= Duration::from_millis(1400),
        "READY=1 after {:?}: it did not wait for the 1.5 s collection",
        ready_at - started
    );
    assert!(
        first_ok + Duration::from_millis(500) < ready_at,
        "/healthz answered at {:?}, READY=1 at {:?}: readiness should wait for the collection, not the listener",
        first_ok - started,
        ready_at - started
    );

    // Keep-alives at half the 1 s watchdog period.
    let t0 = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let m = recv(&sock).expect("no WATCHDOG=1 keep-alive");
        assert_eq!(m, "WATCHDOG=1");
        pings += 1;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "3 keep-alives took {:?}",
        t0.elapsed()
    );

    // SIGTERM (systemctl stop): STOPPING=1, then a clean exit.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        match recv(&sock) {
            Some(m) if m == "STOPPING=1" => stopping = true,
            Some(m) => assert_eq!(m, "WATCHDOG=1", "unexpected notification"),
            None => break,
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "agent exit after SIGTERM: {status}");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_the_agent_serves() {
    // The everyday case (not under systemd): no socket, no readiness task, same agent.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        port,
        "[drbd]\nenabled = false\n[lvm]\nenabled = false\n[sanlock]\nenabled = false\n[libvirt]\nenabled = false\n",
    );
    let agent = Agent::start(&cfg, port);
    assert_eq!(agent.get("/healthz", None).0, 200);
}
