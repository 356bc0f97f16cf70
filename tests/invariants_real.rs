//! `vmwarden check` end to end against the real libvirtd (qemu:///system) with real qemu guests.
//! Needs root and `scripts/test-services.sh` run first; skipped loudly otherwise (failed under
//! VMWARDEN_REQUIRE_REAL=1).

mod support;

#[path = "support/libvirt-guest.rs"]
mod guest;

use std::path::Path;
use std::process::Output;

use guest::{libvirtd_available, Guest};

fn check(cfg: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vmwarden"))
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_passes_with_a_running_file_backed_guest() {
    if !libvirtd_available("check_passes_with_a_running_file_backed_guest") {
        return;
    }
    let g = Guest::define("check-ok");
    g.start();
    assert_eq!(g.state(), "running (booted)");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vmwarden.toml");
    // lvm disabled: this host's real lvm state belongs to other tests (and has no device-mapper).
    std::fs::write(
        &cfg,
        "[drbd]\nenabled = false\n[lvm]\nenabled = false\n[sanlock]\nenabled = false\n\
         [libvirt]\nuri = \"qemu:///system\"\n",
    )
    .unwrap();
    let out = check(&cfg);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("all invariants that could be checked hold"),
        "{t}"
    );
    assert!(
        stdout.contains("NOT CHECKED lock_without_running_domain: the lvm collector is disabled"),
        "{t}"
    );
    assert!(
        stdout.contains("NOT CHECKED drbd_not_uptodate: the drbd collector is disabled"),
        "{t}"
    );
}

/// Mock lvm because this kernel has no device-mapper: no LV can be activated and no guest can run
/// on one here. The stand-in `lvm` and `lvmlockctl` print the real outputs captured on host h1
/// (vm1 held ex, vm2 held sh); the guest is real and file-backed, so nothing uses those LVs.
#[test]
fn check_mock_lvm_reports_leaked_locks() {
    if !libvirtd_available("check_mock_lvm_reports_leaked_locks") {
        return;
    }
    let g = Guest::define("check-leak");
    g.start();
    let dir = tempfile::tempdir().unwrap();
    let fix = support::repo().join("tests/fixtures/lvm");
    let lvm = support::script(
        dir.path(),
        "lvm",
        &format!("cat '{}'\n", fix.join("h1-fullreport.json").display()),
    );
    let lockctl = support::script(
        dir.path(),
        "lvmlockctl",
        &format!("cat '{}'\n", fix.join("h1-lvmlockctl-info.txt").display()),
    );
    let cfg = dir.path().join("vmwarden.toml");
    std::fs::write(
        &cfg,
        format!(
            "[drbd]\nenabled = false\n[sanlock]\nenabled = false\n\
             [lvm]\nlvm = \"{}\"\nlvmlockctl = \"{}\"\n[libvirt]\nuri = \"qemu:///system\"\n",
            lvm.display(),
            lockctl.display()
        ),
    )
    .unwrap();
    let out = check(&cfg);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("VIOLATED lock_without_running_domain domain=- subject=vg1/vm1"),
        "{t}"
    );
    assert!(
        stdout.contains("VIOLATED lock_without_running_domain domain=- subject=vg1/vm2"),
        "{t}"
    );
    assert!(stdout.contains("lvchange -an vg1/vm1"), "{t}");
    assert!(!stdout.contains("vg1/vm3"), "vm3 is not locked here: {t}");
    // The file-backed guest is fine: named only in the watchdog's section, as not its business.
    // (a violation is a `VIOLATED` line and its message indented by four spaces)
    assert!(
        stdout
            .lines()
            .filter(|l| l.starts_with("VIOLATED") || l.starts_with("    "))
            .all(|l| !l.contains(&g.name)),
        "the file-backed guest is fine: {t}"
    );
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(g.name.as_str()))
        .unwrap_or_default();
    assert!(
        line.contains("unmanaged") && line.contains("no disk vmwarden can lock"),
        "the watchdog's section names the guest as not its own: {t}"
    );
}

/// Exit 2 on a configuration error, before probing anything (no libvirtd needed).
#[test]
fn check_exits_2_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vmwarden.toml");
    std::fs::write(&cfg, "[lvm]\nno_such_key = 1\n").unwrap();
    let out = check(&cfg);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no_such_key"),
        "{t}"
    );
}
