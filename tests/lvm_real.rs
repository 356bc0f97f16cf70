//! Against REAL lvm, lvmlockd and sanlock: two lab hosts (own mount namespace, real sanlock daemon
//! and real lvmlockd each, host_id 1 and 2) share a loop device with the shared VG vg1; host 1 also
//! has a local VG. This kernel has no device-mapper, so lvm runs with --driverloaded n (LVs are
//! never *active*: the lock modes are what is real) and a loop device stands in for the internal
//! lvmlock LV (see scripts/capture-lvm-fixtures.sh, which builds the same lab).
//!
//! Needs root, lvm2 + lvm2-lockd, sanlock, util-linux, loop devices and a C compiler. Without them
//! the tests print a loud SKIPPED line and pass — unless VMWARDEN_REQUIRE_REAL=1 (CI).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{have, lab_unavailable, skip_or_fail, wait_for, LabDir, LabHost};

const BIN: &str = env!("CARGO_BIN_EXE_vmwarden");

fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l[prefix.len()..].trim().parse().ok())
}

/// Loop devices detached on drop (after the hosts using them are gone: declare it first).
struct Loops(Vec<String>);

impl Loops {
    fn add(&mut self, file: &Path, size: u64) -> Result<String, String> {
        std::fs::File::create(file)
            .and_then(|f| f.set_len(size))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.0.push(dev.clone());
        Ok(dev)
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = Command::new("losetup").arg("-d").arg(d).status();
        }
    }
}

fn lvm_lab_unavailable() -> Option<String> {
    if let Some(why) = lab_unavailable() {
        return Some(why);
    }
    for p in ["lvm", "lvmlockd", "lvmlockctl", "losetup"] {
        if !have(p) {
            return Some(format!(
                "`{p}` is not installed (scripts/setup.sh installs lvm2 and lvm2-lockd)"
            ));
        }
    }
    None
}

/// An LVM config dir that sees only the lab's devices and keeps no backups or devices file.
fn lvm_system_dir(dir: &Path, host_id: u32, devices: &[&str]) -> PathBuf {
    let d = dir.join(format!("lvm{host_id}"));
    std::fs::create_dir_all(&d).unwrap();
    let accept: Vec<String> = devices.iter().map(|x| format!("\"a|^{x}$|\"")).collect();
    std::fs::write(
        d.join("lvm.conf"),
        format!(
            "devices {{ filter = [ {}, \"r|.*|\" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }}\n\
             global {{ use_lvmlockd = 1 event_activation = 0 }}\n\
             activation {{ udev_sync = 0 udev_rules = 0 monitoring = 0 }}\n\
             backup {{ backup = 0 archive = 0 }}\n",
            accept.join(", ")
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("lvmlocal.conf"),
        format!("local {{ host_id = {host_id} }}\n"),
    )
    .unwrap();
    d
}

fn lvm(h: &LabHost, sysdir: &Path, args: &[&str]) -> Result<String, String> {
    let out = h
        .cmd("lvm")
        .env("LVM_SYSTEM_DIR", sysdir)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .args(args)
        .output()
        .map_err(|e| format!("lvm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "lvm {args:?} on {}: {}: {}",
            h.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn collect(h: &LabHost, sysdir: &Path, cfg: &Path) -> (String, String) {
    let out = h
        .cmd(BIN)
        .env("LVM_SYSTEM_DIR", sysdir)
        .arg("collect")
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &Path, name: &str, lvmlockctl: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "[drbd]\nenabled = false\n[libvirt]\nenabled = false\n[lvm]\nenabled = true\nlvm = \"lvm\"\nlvmlockctl = \"{lvmlockctl}\"\n[sanlock]\nenabled = true\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn collect_against_real_lvmlockd_and_sanlock() {
    const TEST: &str = "lvm_real::collect_against_real_lvmlockd_and_sanlock";
    if let Some(why) = lvm_lab_unavailable() {
        return skip_or_fail(TEST, &why);
    }
    let lab = match LabDir::new() {
        Ok(l) => l,
        Err(why) => return skip_or_fail(TEST, &why),
    };
    // Declared before the hosts: dropped after them.
    let mut loops = Loops(Vec::new());
    let devs = (|| -> Result<(String, String, String), String> {
        Ok((
            loops.add(&lab.path().join("pv-shared.img"), 768 << 20)?,
            loops.add(&lab.path().join("pv-local.img"), 256 << 20)?,
            loops.add(&lab.path().join("lvmlock.img"), 256 << 20)?,
        ))
    })();
    let (shared, local, lockdev) = match devs {
        Ok(d) => d,
        Err(why) => return skip_or_fail(TEST, &format!("no loop devices: {why}")),
    };
    let mapper = format!("vg1-lvmlock={lockdev}");
    let h1 = match LabHost::start_with(&lab, "h1", &["--lvmlockd", "--mapper", &mapper]) {
        Ok(h) => h,
        Err(why) => return skip_or_fail(TEST, &format!("lvmlockd/sanlock did not start: {why}")),
    };
    let h2 = match LabHost::start_with(&lab, "h2", &["--lvmlockd", "--mapper", &mapper]) {
        Ok(h) => h,
        Err(why) => return skip_or_fail(TEST, &format!("second host did not start: {why}")),
    };
    let s1 = lvm_system_dir(lab.path(), 1, &[&shared, &local]);
    let s2 = lvm_system_dir(lab.path(), 2, &[&shared, &local]);
    let n = "--driverloaded";

    lvm(&h1, &s1, &["vgcreate", n, "n", "--shared", "vg1", &shared]).unwrap();
    lvm(&h1, &s1, &["vgcreate", n, "n", "vg_local", &local]).unwrap();
    for lv in ["vm1", "vm2", "vm3"] {
        lvm(
            &h1,
            &s1,
            &["lvcreate", n, "n", "-an", "-L", "64M", "-n", lv, "vg1"],
        )
        .unwrap();
    }
    lvm(
        &h1,
        &s1,
        &[
            "lvcreate", n, "n", "-an", "-L", "32M", "-n", "data", "vg_local",
        ],
    )
    .unwrap();
    // Without udev the first lock-start on the second host can race the lock LV: retry once.
    if lvm(&h2, &s2, &["vgchange", n, "n", "--lock-start", "vg1"]).is_err() {
        std::thread::sleep(std::time::Duration::from_secs(2));
        lvm(&h2, &s2, &["vgchange", n, "n", "--lock-start", "vg1"]).unwrap();
    }
    lvm(&h1, &s1, &["lvchange", n, "n", "-aey", "vg1/vm1"]).unwrap();
    lvm(&h1, &s1, &["lvchange", n, "n", "-asy", "vg1/vm2"]).unwrap();
    lvm(&h2, &s2, &["lvchange", n, "n", "-asy", "vg1/vm2"]).unwrap();
    lvm(&h2, &s2, &["lvchange", n, "n", "-aey", "vg1/vm3"]).unwrap();
    let refused = lvm(&h2, &s2, &["lvchange", n, "n", "-aey", "vg1/vm1"]).unwrap_err();
    assert!(refused.contains("LV locked by other host"), "{refused}");
    let vm1_uuid = lvm(
        &h1,
        &s1,
        &["lvs", "--noheadings", "-o", "lv_uuid", "vg1/vm1"],
    )
    .unwrap()
    .trim()
    .to_string();
    let live = wait_for(30, || {
        h1.run("sanlock", &["client", "gets", "-h", "1"])
            .ok()
            .filter(|s| {
                s.contains(" LIVE") && s.lines().filter(|l| l.ends_with(" LIVE")).count() == 2
            })
    });
    assert!(live.is_some(), "h1 never saw both hosts LIVE: {}", h1.log());

    // 1. Everything up.
    let cfg = config(lab.path(), "vmwarden.toml", "lvmlockctl");
    let (text, log) = collect(&h1, &s1, &cfg);
    let v = |p: &str| value(&text, p);
    assert_eq!(
        v(r#"vmwarden_collector_success{collector="lvm"}"#),
        Some(1.0),
        "{log}\n{text}"
    );
    assert_eq!(
        v(r#"vmwarden_collector_success{collector="sanlock"}"#),
        Some(1.0),
        "{log}\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"vmwarden_lvm_vg_info{vg="vg1","#)
                && l.contains(r#"lock_type="sanlock",lock_args="1.0.0:lvmlock",shared="1""#)),
        "{text}"
    );
    assert!(
        text.contains(r#"vmwarden_lvm_vg_info{vg="vg_local","#)
            && text.contains(r#"lock_type="none""#),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_lvm_lv_active{vg="vg1",lv="vm1",state="exclusive"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_lvm_lv_active{vg="vg1",lv="vm2",state="shared"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_lvm_lv_active{vg="vg1",lv="vm2",state="exclusive"}"#),
        None,
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_lvm_lv_active{vg="vg1",lv="vm3",state="inactive"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_lvm_lv_active{vg="vg_local",lv="data",state="inactive"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_lvm_lv_lock_info{vg="vg1",lv="vm3",mode="un"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_lvm_lv_size_bytes{vg="vg1",lv="vm1"}"#),
        Some(67108864.0),
        "{text}"
    );
    assert_eq!(v("vmwarden_lvm_lockd_up"), Some(1.0), "{text}");
    assert_eq!(
        v(r#"vmwarden_lvm_vg_lockspace_started{vg="vg1"}"#),
        Some(1.0),
        "{text}"
    );
    // The same lock seen from sanlock: lockspace lvm_vg1, resource = LV uuid.
    assert_eq!(
        v(&format!(
            r#"vmwarden_sanlock_resource_held{{lockspace="lvm_vg1",resource="{vm1_uuid}",mode="ex"}}"#
        )),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains(&format!(r#"lv_uuid="{vm1_uuid}""#)), "{text}");

    // 2. lvmlockctl missing: still a working collector, lock modes unknown.
    let cfg2 = config(
        lab.path(),
        "vmwarden-nolockctl.toml",
        "/nonexistent/vmwarden-test/lvmlockctl",
    );
    let (text, _) = collect(&h1, &s1, &cfg2);
    let v = |p: &str| value(&text, p);
    assert_eq!(
        v(r#"vmwarden_collector_success{collector="lvm"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(v("vmwarden_lvm_lockd_up"), Some(0.0), "{text}");
    assert_eq!(
        v(r#"vmwarden_lvm_lv_lock_info{vg="vg1",lv="vm1",mode="unknown"}"#),
        Some(1.0),
        "{text}"
    );

    // 3. lvmlockd gone (killed): lvm reads "without a lock", lvmlockctl cannot connect.
    let pid = h1.daemon_pid("lvmlockd").expect("lvmlockd pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (text, _) = collect(&h1, &s1, &cfg);
    let v = |p: &str| value(&text, p);
    assert_eq!(
        v(r#"vmwarden_collector_success{collector="lvm"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(v("vmwarden_lvm_lockd_up"), Some(0.0), "{text}");
    assert_eq!(
        v(r#"vmwarden_lvm_lv_lock_info{vg="vg1",lv="vm2",mode="unknown"}"#),
        Some(1.0),
        "{text}"
    );
    drop(h2);
    drop(h1);
    drop(loops);
}

#[test]
fn lvm_failure_is_reported_with_its_error() {
    const TEST: &str = "lvm_real::lvm_failure_is_reported_with_its_error";
    if !have("lvm") {
        return skip_or_fail(
            TEST,
            "`lvm` is not installed (scripts/setup.sh installs lvm2)",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // A broken lvm.conf makes the real lvm exit non-zero before touching any device.
    let sys = dir.path().join("lvm");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(sys.join("lvm.conf"), "devices { filter = [ \"a|x|\" \n").unwrap();
    let cfg = config(
        dir.path(),
        "vmwarden.toml",
        "/nonexistent/vmwarden-test/lvmlockctl",
    );
    std::fs::write(
        &cfg,
        "[drbd]\nenabled = false\n[libvirt]\nenabled = false\n[sanlock]\nenabled = false\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .env("LVM_SYSTEM_DIR", &sys)
        .arg("collect")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        value(&text, r#"vmwarden_collector_success{collector="lvm"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"vmwarden_collector_absent{collector="lvm"}"#),
        Some(0.0),
        "{text}"
    );
    assert!(
        log.contains("Parse error") || log.contains("Failed to load config"),
        "{log}"
    );
    assert!(log.contains("exit status"), "{log}");
}
