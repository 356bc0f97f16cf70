//! libvirt lifecycle events, for real: `vmwarden::watchdog::events::EventStream` against the host
//! libvirtd (qemu:///system) with a tiny OS-less qemu guest, and against a private libvirtd that
//! the test starts, stops and starts again to check the stream reconnects.
//!
//! Why the restart test uses a private daemon and not the host's: the host libvirtd is shared
//! with every other test binary (and other people's work) running on this machine at the same
//! time; restarting it under them breaks their runs. A session-mode libvirtd run as `nobody`
//! (or as the current user when not root) in a temporary directory serves `test:///default` on
//! its own socket, so killing it disturbs nothing else; the stream's code path (remote driver,
//! unix socket, EOF, close callback, keepalive) is the same as for qemu:///system.
//!
//! Needs root and `scripts/test-services.sh` for the qemu test; skipped loudly otherwise (failed
//! under VMWARDEN_REQUIRE_REAL=1).

#[path = "support/libvirt-guest.rs"]
mod guest;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guest::{is_root, libvirtd_available, skip_or_fail, virsh, Guest, URI};
use vmwarden::watchdog::events::{DomainEvent, EventItem, EventStream, LifecycleKind};

/// Stop the stream and check that libvirt freed every callback context: each holds a sender, so
/// the channel ends (after any queued items) only when all were released.
fn stop_and_check_released(rt: &tokio::runtime::Runtime, s: EventStream) {
    let mut rx = s.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rt.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
            Ok(None) => return,
            Ok(Some(_)) => continue, // queued before the stop (other domains' events)
            Err(_) => panic!("a libvirt callback context still holds a sender after stop"),
        }
    }
}

/// Bounded wait for the next item.
fn next_item(rt: &tokio::runtime::Runtime, s: &mut EventStream, t: Duration) -> Option<EventItem> {
    rt.block_on(async { tokio::time::timeout(t, s.receiver().recv()).await })
        .ok()
        .flatten()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The next item must be `Connected` (within `t`).
fn expect_connected(rt: &tokio::runtime::Runtime, s: &mut EventStream, t: Duration) {
    match next_item(rt, s, t) {
        Some(EventItem::Connected) => {}
        other => panic!("wanted Connected within {t:?}, got {other:?}"),
    }
}

/// The next event of domain `name`, skipping other domains' (the host libvirtd is shared).
fn next_for(rt: &tokio::runtime::Runtime, s: &mut EventStream, name: &str) -> DomainEvent {
    let t = Duration::from_secs(30);
    let deadline = Instant::now() + t;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_item(rt, s, left) {
            Some(EventItem::Event(e)) if e.domain == name => {
                eprintln!(
                    "event: {} {:?}/{} ({})",
                    e.domain, e.kind, e.detail_text, e.detail
                );
                return e;
            }
            Some(EventItem::Event(_)) => continue,
            other => panic!("{name}: wanted an event within {t:?}, got {other:?}"),
        }
    }
}

/// Events of `name` up to and including the first `(kind, detail_text)`, as pairs, so a caller
/// can assert the whole sequence and an extra or reordered event from libvirt shows up.
fn until(
    rt: &tokio::runtime::Runtime,
    s: &mut EventStream,
    name: &str,
    kind: LifecycleKind,
    detail_text: &str,
) -> Vec<(LifecycleKind, &'static str)> {
    let mut seen = Vec::new();
    loop {
        let e = next_for(rt, s, name);
        seen.push((e.kind, e.detail_text));
        if (e.kind, e.detail_text) == (kind, detail_text) {
            return seen;
        }
        assert!(
            seen.len() < 10,
            "{name}: no {kind:?}/{detail_text} in {seen:?}"
        );
    }
}

fn assert_event(e: &DomainEvent, kind: LifecycleKind, detail_text: &str) {
    assert_eq!(
        (e.kind, e.detail_text),
        (kind, detail_text),
        "unexpected event {e:?}"
    );
}

fn virsh_ok(args: &[&str]) -> String {
    let o = virsh(args);
    assert!(
        o.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// SIGKILL the guest's qemu, after checking that the pid libvirt recorded really is a qemu.
fn kill_qemu(g: &Guest) {
    let pid = g.qemu_pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(
        comm.trim().starts_with("qemu"),
        "pid {pid} from libvirt's pid file is {comm:?}, not a qemu: not killing it"
    );
    // SAFETY: kill(2) with a checked pid; no memory is involved.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

#[test]
fn lifecycle_events_of_a_real_guest() {
    let name = "lifecycle_events_of_a_real_guest";
    if !libvirtd_available(name) {
        return;
    }
    if !is_root() {
        skip_or_fail(name, "killing the guest's qemu needs root");
        return;
    }
    use LifecycleKind::*;
    let rt = rt();
    let mut s = EventStream::start(URI).unwrap();
    expect_connected(&rt, &mut s, Duration::from_secs(15));
    // Each step asserts the whole sequence of our domain's events up to the one it waits for.
    let step = |s: &mut EventStream, name: &str, want: &[(LifecycleKind, &str)]| {
        let (k, d) = want[want.len() - 1];
        assert_eq!(until(&rt, s, name, k, d), want, "{name}");
    };

    let g = Guest::define("events");
    step(&mut s, &g.name, &[(Defined, "added")]);

    // qemu starts with its vCPUs paused and libvirt resumes them before it reports the start.
    g.start();
    step(
        &mut s,
        &g.name,
        &[(Resumed, "unpaused"), (Started, "booted")],
    );

    virsh_ok(&["suspend", &g.name]);
    step(&mut s, &g.name, &[(Suspended, "paused")]);
    virsh_ok(&["resume", &g.name]);
    step(&mut s, &g.name, &[(Resumed, "unpaused")]);

    // libvirt 9.0 announces a destroy as a host-initiated shutdown first (qemu's SHUTDOWN event
    // with "host" as the cause, from the SIGTERM libvirt sends it), then the stop.
    virsh_ok(&["destroy", &g.name]);
    step(
        &mut s,
        &g.name,
        &[(Shutdown, "host"), (Stopped, "destroyed")],
    );

    g.start();
    step(
        &mut s,
        &g.name,
        &[(Resumed, "unpaused"), (Started, "booted")],
    );
    kill_qemu(&g);
    // libvirt 9.0 reports a qemu that died under it as Stopped/failed ("host emulator failed"),
    // while `domstate --reason` says "shut off (crashed)": the watchdog must treat both as a crash.
    step(&mut s, &g.name, &[(Stopped, "failed")]);
    g.wait_state("shut off (crashed)", Duration::from_secs(20));

    virsh_ok(&["undefine", &g.name]);
    step(&mut s, &g.name, &[(Undefined, "removed")]);

    // The uuid is copied correctly (checked on an event of a domain that still exists).
    let g2 = Guest::define("events-uuid");
    let e = next_for(&rt, &mut s, &g2.name);
    assert_eq!(
        (e.kind, e.uuid.as_str()),
        (Defined, virsh_ok(&["domuuid", &g2.name]).as_str())
    );
    drop(g2);

    stop_and_check_released(&rt, s);
}

// ---------------------------------------------------------------------------------------------
// Reconnection against a private libvirtd

/// A session-mode libvirtd in its own temporary directory; killed on drop.
struct PrivateLibvirtd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateLibvirtd {
    fn new() -> PrivateLibvirtd {
        let dir = tempfile::Builder::new()
            .prefix("vmwarden-privlibvirtd-")
            .tempdir()
            .unwrap();
        if is_root() {
            // Root would run libvirtd in system mode, sharing /run/libvirt with the host's
            // daemon: run it as nobody instead, which makes it a session daemon.
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        }
        PrivateLibvirtd { dir, child: None }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/libvirt/libvirt-sock")
    }

    fn uri(&self) -> String {
        format!("test+unix:///default?socket={}", self.socket().display())
    }

    fn virsh(&self, args: &[&str]) -> std::process::Output {
        Command::new("timeout")
            .args(["30", "virsh", "-q", "-c", &self.uri()])
            .args(args)
            .output()
            .unwrap()
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let d = self.dir.path();
        let mut cmd = if is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "libvirtd",
            ]);
            c
        } else {
            Command::new("libvirtd")
        };
        // Everything the session daemon writes goes below the temporary directory.
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", d)
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("XDG_CACHE_HOME", d.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().unwrap());
        let t0 = Instant::now();
        while !(self.socket().exists() && self.virsh(&["version"]).status.success()) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "private libvirtd did not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM the daemon we started (its pid is our child's, checked to be libvirtd), and reap it.
    fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id() as i32;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(comm.trim(), "libvirtd", "our child {pid} is not libvirtd");
        // SAFETY: kill(2) on our own unreaped child; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let t0 = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateLibvirtd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

fn define_test_domain(d: &PrivateLibvirtd, name: &str, dir: &Path) {
    let xml = dir.join(format!("{name}.xml"));
    std::fs::write(
        &xml,
        format!(
            "<domain type='test'><name>{name}</name><memory>8192</memory>\
             <os><type>hvm</type></os></domain>"
        ),
    )
    .unwrap();
    let o = d.virsh(&["define", xml.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "define {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Whether every program is installed; else the loud skip (or failure under VMWARDEN_REQUIRE_REAL).
fn have_tools(test: &str, programs: &[&str]) -> bool {
    for p in programs {
        if !have(p) {
            skip_or_fail(test, &format!("`{p}` is not installed"));
            return false;
        }
    }
    true
}

/// A private libvirtd and a stream connected to it.
fn private_stream(rt: &tokio::runtime::Runtime) -> (PrivateLibvirtd, EventStream) {
    let mut d = PrivateLibvirtd::new();
    d.start();
    let mut s = EventStream::start(&d.uri()).unwrap();
    expect_connected(rt, &mut s, Duration::from_secs(15));
    (d, s)
}

#[test]
fn stream_survives_a_libvirtd_restart() {
    if !have_tools(
        "stream_survives_a_libvirtd_restart",
        &["libvirtd", "virsh", "setpriv"],
    ) {
        return;
    }
    let rt = rt();
    let (mut d, mut s) = private_stream(&rt);

    define_test_domain(&d, "before", d.dir.path());
    assert_event(
        &next_for(&rt, &mut s, "before"),
        LifecycleKind::Defined,
        "added",
    );

    d.stop();
    match next_item(&rt, &mut s, Duration::from_secs(30)) {
        Some(EventItem::Lost(why)) => eprintln!("lost: {why}"),
        other => panic!("wanted Lost after libvirtd stopped, got {other:?}"),
    }

    d.start();
    // Only one Lost per outage: the failed attempts while it was down sent nothing. The backoff
    // is at most 10 s, so 60 s is a bound on a slow machine, not a timing assertion.
    expect_connected(&rt, &mut s, Duration::from_secs(60));

    define_test_domain(&d, "after", d.dir.path());
    assert_event(
        &next_for(&rt, &mut s, "after"),
        LifecycleKind::Defined,
        "added",
    );
    stop_and_check_released(&rt, s);
}

/// A libvirtd that hangs instead of dying (SIGSTOP: the socket stays open, nothing answers) is
/// noticed by keepalive (5 s × 3), reported as Lost, and the stream is back once it runs again.
#[test]
fn stream_notices_a_hung_libvirtd() {
    if !have_tools(
        "stream_notices_a_hung_libvirtd",
        &["libvirtd", "virsh", "setpriv"],
    ) {
        return;
    }
    let rt = rt();
    let (d, mut s) = private_stream(&rt);

    let pid = d.child.as_ref().map(|c| c.id() as i32).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "libvirtd", "our child {pid} is not libvirtd");
    // SAFETY: kill(2) on our own unreaped child; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let lost = next_item(&rt, &mut s, Duration::from_secs(90));
    // SAFETY: as above; resume it whatever happened, so its drop can reap it.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    match lost {
        Some(EventItem::Lost(why)) => {
            eprintln!("lost: {why}");
            assert!(why.contains("keepalive"), "{why}");
        }
        other => panic!("wanted Lost while libvirtd was stopped, got {other:?}"),
    }
    expect_connected(&rt, &mut s, Duration::from_secs(60));
    define_test_domain(&d, "after-hang", d.dir.path());
    assert_event(
        &next_for(&rt, &mut s, "after-hang"),
        LifecycleKind::Defined,
        "added",
    );
    stop_and_check_released(&rt, s);
}
