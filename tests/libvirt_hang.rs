//! A hung libvirtd (SIGSTOP, for about two seconds), for real: the probe's blocked call cannot be
//! cancelled, so the next scrape must fail at once instead of starting a second blocked call, and
//! probing must recover once libvirtd answers again. Its own test binary so no other test runs
//! while libvirtd is stopped. Needs root and scripts/test-services.sh.

#[path = "support/libvirt-guest.rs"]
mod guest;

use std::time::{Duration, Instant};

use guest::{is_root, libvirtd_available, skip_or_fail, URI};
use vmwarden::config::LibvirtConfig;
use vmwarden::probe::libvirt::LibvirtProbe;
use vmwarden::probe::ProbeError;

/// libvirtd's pid: systemd's MainPID where systemd runs it, else its pid file.
fn libvirtd_pid() -> Option<i32> {
    let out = std::process::Command::new("systemctl")
        .args(["show", "-p", "MainPID", "--value", "libvirtd"])
        .output();
    if let Ok(o) = out {
        if std::path::Path::new("/run/systemd/system").exists() && o.status.success() {
            return String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .ok()
                .filter(|p| *p > 0);
        }
    }
    let pid: i32 = std::fs::read_to_string("/run/libvirtd.pid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "libvirtd").then_some(pid)
}

/// SIGSTOPs libvirtd; SIGCONT when dropped, even if the test fails.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Stopped {
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_libvirtd_keeps_one_call_in_flight() {
    let name = "hung_libvirtd_keeps_one_call_in_flight";
    if !libvirtd_available(name) {
        return;
    }
    if !is_root() {
        skip_or_fail(name, "stopping libvirtd needs root");
        return;
    }
    let Some(pid) = libvirtd_pid() else {
        skip_or_fail(name, "cannot find libvirtd's pid");
        return;
    };
    let p = LibvirtProbe::new(LibvirtConfig {
        enabled: true,
        uri: URI.to_string(),
    });
    let t = Duration::from_secs(1);
    p.probe(t).await.unwrap(); // connection open before the hang

    let stopped = Stopped::new(pid);
    // The collector's outer timeout abandons the wait; the blocking call stays stuck.
    let r = tokio::time::timeout(t, p.probe(t)).await;
    assert!(
        r.is_err(),
        "probe returned while libvirtd was stopped: {r:?}"
    );

    // The next scrape fails at once and starts nothing.
    for _ in 0..3 {
        let t0 = Instant::now();
        match p.probe(t).await {
            Err(ProbeError::Failed(m)) => assert!(m.contains("still hung"), "{m}"),
            other => panic!("expected a fast failure, got {other:?}"),
        }
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
    }

    // libvirtd answers again: the stuck call completes and probing recovers.
    drop(stopped);
    let t0 = Instant::now();
    loop {
        match p.probe(Duration::from_secs(5)).await {
            Ok(_) => break,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(15), "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!("recovered {:?} after SIGCONT", t0.elapsed());
}
