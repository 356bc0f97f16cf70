//! vmwarden on real lvmlockd + sanlock and real DRBD 8.4, in the storage lab (scripts/storage-lab.sh,
//! docs/storage-lab.md): two Debian guests `sa` (sanlock host_id 1) and `sb` (host_id 2) under
//! qemu TCG, a shared LUN with the shared VG vg1 (lv1..lv3), DRBD r0 between them, and this
//! build's vmwarden in both (/opt/vmwarden/vmwarden, config /etc/vmwarden/vmwarden.toml).
//!
//! One lab for the whole test (guard: taken down at the end, also on failure):
//! 1. the live-migration lock dance on vg1/lv1 through `vmwarden lock` (vmwarden's lvmlockd
//!    backend): sa ex → sb's start refused naming host 1 → sa ex→sh → sb sh → sb's premature
//!    sh→ex refused (locked by another host) → sa release → sb sh→ex;
//! 2. the exporter in the guests: `vmwarden collect` gives each LV's true lock mode (ex, sh, un:
//!    lvs says "active exclusively" for the shared one), the sanlock lockspace lvm_vg1 with both
//!    hosts LIVE; `vmwarden check` reports the leaked locks (no VM uses them);
//! 3. DRBD: SyncSource/SyncTarget with a resync ratio that grows, Connected Primary/Primary,
//!    StandAlone/WFConnection after a disconnect;
//! 4. split brain: writes on both disconnected primaries, reconnect → both StandAlone, DRBD's
//!    split-brain handler (`vmwarden drbd-handler split-brain`) → `vmwarden_drbd_split_brain` 1 and
//!    `vmwarden check` says what to do;
//! 5. the whole seed stack: `vmwarden run` in both guests (qemu hook installed), an OS-less nested
//!    VM on vg1/lv3 defined on both; `vmwarden ctl start` on sa, the second start on sb refused
//!    through vmwarden and through plain `virsh start` (the hook names sa), `vmwarden ctl migrate`
//!    sa→sb live with the lvmlockd dance (the guest's CMOS byte survives), `ctl stop` on sb.
//!
//! Needs root, qemu-system-x86_64, python3, and for the first (cached) image build debootstrap,
//! cpio and the machine's apt mirror. Without them: a loud SKIPPED line, or a failure under
//! VMWARDEN_REQUIRE_REAL=1. The commands in the guests go through the lab's serial command channel
//! (`storage-lab.sh exec GUEST CMD`, CMD run by sh in the guest); on the host every command is an
//! argv with a timeout.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{have, repo, skip_or_fail};

const TEST: &str = "storage_lab::storage_lab";
const VMW: &str = "/opt/vmwarden/vmwarden";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmwarden")
}

/// The lab this test brings up: its own run dir and port, the shared image cache.
struct Lab {
    run: PathBuf,
}

impl Lab {
    fn script(&self, args: &[&str], timeout_s: u64) -> Output {
        let mut c = Command::new("timeout");
        c.arg("-k")
            .arg("10")
            .arg(timeout_s.to_string())
            .arg("bash")
            .arg(repo().join("scripts/storage-lab.sh"))
            .args(args)
            .env("STORAGE_LAB_RUN", &self.run)
            .env("STORAGE_LAB_PORT", "15578")
            .env("STORAGE_LAB_DRBD", "connected")
            .env("VMWARDEN_BIN", bin());
        c.output().expect("run scripts/storage-lab.sh")
    }

    /// Run `cmd` (sh) in `guest`: (exit code, stdout+stderr).
    fn exec(&self, guest: &str, cmd: &str) -> (i32, String) {
        self.exec_t(guest, cmd, 120)
    }

    fn exec_t(&self, guest: &str, cmd: &str, timeout_s: u64) -> (i32, String) {
        let mut c = Command::new("timeout");
        c.arg("-k")
            .arg("10")
            .arg((timeout_s + 20).to_string())
            .arg("bash")
            .arg(repo().join("scripts/storage-lab.sh"))
            .args(["exec", guest, cmd])
            .env("STORAGE_LAB_RUN", &self.run)
            .env("STORAGE_LAB_TIMEOUT", timeout_s.to_string());
        let out = c.output().expect("run storage-lab.sh exec");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// `cmd` must succeed in `guest`; its output.
    fn ok(&self, guest: &str, cmd: &str) -> String {
        let (rc, out) = self.exec(guest, cmd);
        assert_eq!(rc, 0, "[{guest}] `{cmd}` exited {rc}:\n{out}");
        out
    }

    fn lock(&self, guest: &str, op: &str, target: &str) -> (i32, String) {
        let t = Instant::now();
        let r = self.exec(
            guest,
            &format!("{VMW} lock --config /etc/vmwarden/vmwarden.toml {op} {target} 2>&1"),
        );
        eprintln!(
            "[{guest}] vmwarden lock {op} {target}: exit {} in {:.1} s: {}",
            r.0,
            t.elapsed().as_secs_f64(),
            r.1.trim()
        );
        r
    }

    fn lock_ok(&self, guest: &str, op: &str, target: &str) {
        let (rc, out) = self.lock(guest, op, target);
        assert_eq!(rc, 0, "[{guest}] vmwarden lock {op} {target}: {out}");
    }

    fn status(&self, guest: &str, target: &str) -> String {
        let (rc, out) = self.lock(guest, "status", target);
        assert_eq!(rc, 0, "[{guest}] vmwarden lock status {target}: {out}");
        out.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("")
            .to_string()
    }

    fn collect(&self, guest: &str) -> String {
        let (rc, out) = self.exec(
            guest,
            "/opt/vmwarden/vmwarden collect --config /etc/vmwarden/vmwarden.toml 2>/dev/null",
        );
        assert_eq!(rc, 0, "[{guest}] vmwarden collect exited {rc}:\n{out}");
        out
    }

    fn proc_drbd(&self, guest: &str) -> String {
        self.ok(guest, "cat /proc/drbd")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.script(&["down"], 120);
        eprintln!(
            "storage lab down: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// The value of the sample `name{labels...}` (every given label must match; others ignored).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (lbls, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let end = r.rfind('}')?;
                (&r[..end], r[end + 1..].trim())
            }
            None if rest.starts_with(' ') => ("", rest.trim()),
            None => return None,
        };
        let all = labels
            .iter()
            .all(|(k, v)| lbls.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if !all {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

fn is_one(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    sample(text, name, labels) == Some(1.0)
}

fn poll<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Why the lab cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (debootstrap, chroot, the guests' disks)".into());
    }
    for p in ["qemu-system-x86_64", "qemu-img", "python3", "mkfs.ext4"] {
        if !have(p) {
            return Some(format!("{p} is missing (scripts/setup.sh)"));
        }
    }
    None
}

#[test]
fn storage_lab() {
    if let Some(why) = unavailable() {
        skip_or_fail(TEST, &why);
        return;
    }
    let t0 = Instant::now();
    let cache = std::env::var_os("VMWARDEN_STORAGE_LAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/vmwarden/storage-lab")
        });
    let lab = Lab {
        run: cache.join("run-test"),
    };
    // The image: cached; a machine that cannot build it (no debootstrap, no mirror) skips.
    let out = lab.script(&["build"], 1800);
    if !out.status.success() {
        skip_or_fail(
            TEST,
            &format!(
                "the storage-lab guest image cannot be built: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return;
    }
    eprintln!(
        "storage lab image ready in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let out = lab.script(&["up"], 900);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "storage-lab.sh up failed");
    eprintln!("storage lab up in {:.0} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    lock_dance(&lab);
    eprintln!("lock dance: {:.0} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    exporter_lvm_sanlock(&lab);
    eprintln!(
        "exporter (lvm, sanlock, check): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    drbd_states(&lab);
    eprintln!("drbd states: {:.0} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    drbd_split_brain(&lab);
    eprintln!("drbd split brain: {:.0} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    seed_stack(&lab);
    eprintln!(
        "seed stack (agents, start, refusals, live migration, stop): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    eprintln!(
        "storage lab test: {:.0} s in all",
        t0.elapsed().as_secs_f64()
    );
}

/// The live-migration lock dance on vg1/lv1, sa (host 1) → sb (host 2), through vmwarden's own
/// lvmlockd backend, checked against lvmlockd itself at every step.
fn lock_dance(lab: &Lab) {
    const LV: &str = "vg1/lv1";
    let uuid = lab
        .ok("sa", "lvs --noheadings -o lv_uuid vg1/lv1")
        .trim()
        .to_string();
    assert!(!uuid.is_empty());
    let lockd = |g: &str| -> String {
        let info = lab.ok(g, "lvmlockctl --info");
        info.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f.as_slice() {
                    ["LK", "LV", mode, u, ..] if *u == uuid => Some(mode.to_string()),
                    _ => None,
                }
            })
            .unwrap_or_else(|| "un".to_string())
    };

    assert_eq!(lab.status("sa", LV), "unlocked");
    // A start on sa: exclusive.
    lab.lock_ok("sa", "exclusive", LV);
    assert_eq!(lab.status("sa", LV), "exclusive");
    assert_eq!(lockd("sa"), "ex");
    // A start on sb while sa runs it: refused, naming host 1 (sa).
    let (rc, out) = lab.lock("sb", "exclusive", LV);
    assert_eq!(rc, 1, "start on sb while sa holds ex: {out}");
    assert!(
        out.contains("is locked by host 1"),
        "refusal must name sa's host id 1: {out}"
    );
    assert_eq!(lab.status("sb", LV), "unlocked");
    // Migration: source ex→sh, target sh.
    lab.lock_ok("sa", "to-shared", LV);
    assert_eq!(lab.status("sa", LV), "shared");
    assert_eq!(lockd("sa"), "sh");
    lab.lock_ok("sb", "shared", LV);
    assert_eq!(lab.status("sb", LV), "shared");
    assert_eq!(lockd("sb"), "sh");
    // The target's sh→ex before the source let go: refused (after the configured retries).
    let (rc, out) = lab.lock("sb", "to-exclusive", LV);
    assert_eq!(rc, 1, "sh→ex on sb while sa holds sh: {out}");
    assert!(
        out.contains("is locked by"),
        "typed refusal expected: {out}"
    );
    assert_eq!(lab.status("sb", LV), "shared");
    // The source releases; the target's sh→ex goes through.
    lab.lock_ok("sa", "release", LV);
    assert_eq!(lab.status("sa", LV), "unlocked");
    assert_eq!(lockd("sa"), "un");
    lab.lock_ok("sb", "to-exclusive", LV);
    assert_eq!(lab.status("sb", LV), "exclusive");
    assert_eq!(lockd("sb"), "ex");
    // And now sa is the one refused, naming host 2.
    let (rc, out) = lab.lock("sa", "exclusive", LV);
    assert_eq!(rc, 1, "start on sa while sb holds ex: {out}");
    assert!(out.contains("is locked by host 2"), "names host 2: {out}");
}

/// `vmwarden collect` and `vmwarden check` in the guests: true LV lock modes, sanlock hosts,
/// leaked locks. Starts with sb holding lv1 ex (the dance's end).
fn exporter_lvm_sanlock(lab: &Lab) {
    lab.lock_ok("sa", "shared", "vg1/lv2");
    lab.lock_ok("sb", "shared", "vg1/lv2");
    // The trap: lvs calls the shared LV "active exclusively" too.
    let lvs = lab.ok(
        "sb",
        "lvs --noheadings -o lv_name,lv_active_exclusively vg1/lv1 vg1/lv2",
    );
    eprintln!("[sb] lvs lv_active_exclusively:\n{lvs}");
    for lv in ["lv1", "lv2"] {
        assert!(
            lvs.lines()
                .any(|l| l.contains(lv) && l.contains("active exclusively")),
            "lvs on sb should say {lv} is active exclusively (the trap): {lvs}"
        );
    }

    let m = lab.collect("sb");
    assert!(
        is_one(&m, "vmwarden_lvm_lv_lock_info", &lv("lv1", "ex")),
        "lv1 ex on sb:\n{m}"
    );
    assert!(
        is_one(&m, "vmwarden_lvm_lv_lock_info", &lv("lv2", "sh")),
        "lv2 sh on sb:\n{m}"
    );
    assert!(
        is_one(&m, "vmwarden_lvm_lv_lock_info", &lv("lv3", "un")),
        "lv3 un on sb:\n{m}"
    );
    assert!(
        is_one(&m, "vmwarden_lvm_lv_active", &st("lv1", "exclusive")),
        "{m}"
    );
    assert!(
        is_one(&m, "vmwarden_lvm_lv_active", &st("lv2", "shared")),
        "{m}"
    );
    assert!(
        !is_one(&m, "vmwarden_lvm_lv_active", &st("lv2", "exclusive")),
        "{m}"
    );
    assert!(
        is_one(&m, "vmwarden_lvm_lv_active", &st("lv3", "inactive")),
        "{m}"
    );
    assert!(is_one(&m, "vmwarden_lvm_lockd_up", &[]), "{m}");
    assert!(
        is_one(&m, "vmwarden_lvm_vg_lockspace_started", &[("vg", "vg1")]),
        "{m}"
    );
    for h in ["1", "2"] {
        assert!(
            is_one(
                &m,
                "vmwarden_sanlock_host_state",
                &[("lockspace", "lvm_vg1"), ("host_id", h), ("state", "LIVE")]
            ),
            "host {h} LIVE in lvm_vg1:\n{m}"
        );
    }
    assert!(
        is_one(
            &m,
            "vmwarden_sanlock_lockspace_info",
            &[("lockspace", "lvm_vg1"), ("host_id", "2")]
        ),
        "{m}"
    );
    let m = lab.collect("sa");
    assert!(
        is_one(&m, "vmwarden_lvm_lv_lock_info", &lv("lv1", "un")),
        "lv1 un on sa:\n{m}"
    );
    assert!(
        is_one(&m, "vmwarden_lvm_lv_lock_info", &lv("lv2", "sh")),
        "lv2 sh on sa:\n{m}"
    );

    // No VM uses lv1 or lv2 on sb (no libvirt in the guests): leaked locks.
    let (rc, out) = lab.exec(
        "sb",
        "/opt/vmwarden/vmwarden check --config /etc/vmwarden/vmwarden.toml 2>/dev/null",
    );
    eprintln!("[sb] vmwarden check: exit {rc}\n{out}");
    assert_eq!(rc, 1, "check must report the leaked locks:\n{out}");
    assert!(out.contains("lock_without_running_domain"), "{out}");
    assert!(out.contains("vg1/lv1") && out.contains("vg1/lv2"), "{out}");
    assert!(!out.contains("vg1/lv3"), "lv3 holds no lock: {out}");

    for (g, l) in [("sb", "vg1/lv1"), ("sa", "vg1/lv2"), ("sb", "vg1/lv2")] {
        lab.lock_ok(g, "release", l);
    }
    let (rc, out) = lab.exec(
        "sb",
        "/opt/vmwarden/vmwarden check --config /etc/vmwarden/vmwarden.toml 2>/dev/null",
    );
    assert!(
        !out.contains("lock_without_running_domain") || rc == 0,
        "no leaked lock left after release: exit {rc}\n{out}"
    );
}

fn lv<'a>(name: &'a str, mode: &'a str) -> [(&'static str, &'a str); 3] {
    [("vg", "vg1"), ("lv", name), ("mode", mode)]
}

fn st<'a>(name: &'a str, state: &'a str) -> [(&'static str, &'a str); 3] {
    [("vg", "vg1"), ("lv", name), ("state", state)]
}

/// Minor 0 in one of the state labels of `vmwarden_drbd_state` (role, disk_state) or
/// `vmwarden_drbd_peer_state` (connection, replication, peer_role, peer_disk_state).
fn drbd_labels<'a>(key: &'static str, state: &'a str) -> [(&'static str, &'a str); 2] {
    [("minor", "0"), (key, state)]
}

/// DRBD r0 from Connected Secondary/Secondary (Inconsistent) through the initial sync to
/// Primary/Primary, then a disconnect.
fn drbd_states(lab: &Lab) {
    let p = lab.proc_drbd("sa");
    assert!(
        p.contains("cs:Connected ro:Secondary/Secondary ds:Inconsistent/Inconsistent"),
        "{p}"
    );
    let m = lab.collect("sa");
    assert!(
        is_one(
            &m,
            "vmwarden_drbd_peer_state",
            &drbd_labels("connection", "Connected")
        ),
        "{m}"
    );
    assert!(
        is_one(
            &m,
            "vmwarden_drbd_state",
            &drbd_labels("disk_state", "Inconsistent")
        ),
        "{m}"
    );

    lab.ok("sa", "drbdadm primary --force r0");
    let ratio = |m: &str| sample(m, "vmwarden_drbd_resync_done_ratio", &[("minor", "0")]);
    // Two readings of the running sync, a few seconds apart: the ratio grows.
    let (r1, m1) = poll(30, || {
        let m = lab.collect("sa");
        ratio(&m).map(|r| (r, m))
    })
    .expect("a resync ratio on sa while it syncs");
    assert!(
        is_one(
            &m1,
            "vmwarden_drbd_peer_state",
            &drbd_labels("replication", "SyncSource")
        ),
        "{m1}"
    );
    assert!(
        is_one(&m1, "vmwarden_drbd_state", &drbd_labels("role", "Primary")),
        "{m1}"
    );
    let mb = lab.collect("sb");
    assert!(
        is_one(
            &mb,
            "vmwarden_drbd_peer_state",
            &drbd_labels("replication", "SyncTarget")
        ),
        "{mb}"
    );
    assert!(
        is_one(
            &mb,
            "vmwarden_drbd_state",
            &drbd_labels("disk_state", "Inconsistent")
        ),
        "{mb}"
    );
    std::thread::sleep(Duration::from_secs(4));
    let m2 = lab.collect("sa");
    let r2 = ratio(&m2);
    eprintln!("resync ratio on sa: {r1} then {r2:?}");
    assert!(r1 < 1.0, "{m1}");
    // Finished in between is growth too (no ratio once the sync is done).
    if let Some(r2) = r2 {
        assert!(r2 > r1, "resync ratio must grow: {r1} then {r2}");
    } else {
        assert!(lab.proc_drbd("sa").contains("ds:UpToDate/UpToDate"));
    }

    poll(180, || {
        lab.proc_drbd("sb")
            .contains("ds:UpToDate/UpToDate")
            .then_some(())
    })
    .expect("initial sync finished");
    lab.ok("sb", "drbdadm primary r0");
    for g in ["sa", "sb"] {
        let m = lab.collect(g);
        assert!(
            is_one(
                &m,
                "vmwarden_drbd_peer_state",
                &drbd_labels("connection", "Connected")
            ),
            "{g}:\n{m}"
        );
        assert!(
            is_one(&m, "vmwarden_drbd_state", &drbd_labels("role", "Primary")),
            "{g}:\n{m}"
        );
        assert!(
            is_one(
                &m,
                "vmwarden_drbd_peer_state",
                &drbd_labels("peer_role", "Primary")
            ),
            "{g}:\n{m}"
        );
        assert!(
            is_one(
                &m,
                "vmwarden_drbd_state",
                &drbd_labels("disk_state", "UpToDate")
            ),
            "{g}:\n{m}"
        );
        assert!(
            is_one(
                &m,
                "vmwarden_drbd_peer_state",
                &drbd_labels("peer_disk_state", "UpToDate")
            ),
            "{g}:\n{m}"
        );
        assert!(ratio(&m).is_none(), "no resync ratio once in sync: {m}");
    }

    lab.ok("sa", "drbdadm disconnect r0");
    let m = lab.collect("sa");
    assert!(
        is_one(
            &m,
            "vmwarden_drbd_peer_state",
            &drbd_labels("connection", "StandAlone")
        ),
        "{m}"
    );
    let m = poll(30, || {
        let m = lab.collect("sb");
        is_one(
            &m,
            "vmwarden_drbd_peer_state",
            &drbd_labels("connection", "WFConnection"),
        )
        .then_some(m)
    });
    assert!(m.is_some(), "sb WFConnection after sa disconnected");
}

/// Both disconnected primaries write, then reconnect: DRBD finds a split brain, both sides go
/// StandAlone, its split-brain handler (vmwarden drbd-handler) records it for the exporter and
/// `vmwarden check`.
fn drbd_split_brain(lab: &Lab) {
    for g in ["sa", "sb"] {
        lab.ok(
            g,
            "dd if=/dev/urandom of=/dev/drbd0 bs=4k count=16 oflag=direct 2>&1",
        );
    }
    lab.ok("sa", "drbdadm connect r0");
    poll(60, || {
        (lab.proc_drbd("sa").contains("cs:StandAlone")
            && lab.proc_drbd("sb").contains("cs:StandAlone"))
        .then_some(())
    })
    .expect("both sides StandAlone after the split brain");
    let dmesg = lab.ok("sa", "dmesg | grep -i 'split-brain' || true");
    eprintln!("[sa] dmesg:\n{dmesg}");
    assert!(dmesg.contains("Split-Brain detected"), "{dmesg}");

    for g in ["sa", "sb"] {
        let m = poll(20, || {
            let m = lab.collect(g);
            is_one(&m, "vmwarden_drbd_split_brain", &[("minor", "0")]).then_some(m)
        });
        assert!(
            m.is_some(),
            "[{g}] vmwarden_drbd_split_brain must be 1 after DRBD's handler ran:\n{}\n{}",
            lab.collect(g),
            lab.exec(g, "dmesg | grep -i handler; ls -laR /var/lib/vmwarden")
                .1
        );
        let (rc, out) = lab.exec(
            g,
            "/opt/vmwarden/vmwarden check --config /etc/vmwarden/vmwarden.toml 2>/dev/null",
        );
        eprintln!("[{g}] vmwarden check: exit {rc}\n{out}");
        assert_eq!(rc, 1, "{out}");
        assert!(out.contains("drbd_split_brain"), "{out}");
        assert!(
            out.contains("connect --discard-my-data r0"),
            "check must say how to resolve it: {out}"
        );
    }

    // Resolve it the documented way: sb discards its writes; connected again, the mark clears.
    lab.ok(
        "sb",
        "drbdadm secondary r0 && drbdadm connect --discard-my-data r0",
    );
    lab.ok("sa", "drbdadm connect r0");
    poll(120, || {
        lab.proc_drbd("sb").contains("cs:Connected").then_some(())
    })
    .expect("reconnected after resolving the split brain");
    for g in ["sa", "sb"] {
        let m = poll(30, || {
            let m = lab.collect(g);
            (sample(&m, "vmwarden_drbd_split_brain", &[("minor", "0")]) == Some(0.0)).then_some(m)
        });
        assert!(m.is_some(), "[{g}] split brain mark clears once connected");
    }
}

const VM: &str = "vmt";

impl Lab {
    /// `vmwarden SUB --config … ARGS` in `guest`.
    fn vmw(&self, guest: &str, sub: &str, args: &str) -> (i32, String) {
        let t = Instant::now();
        let r = self.exec_t(
            guest,
            &format!("{VMW} {sub} --config /etc/vmwarden/vmwarden.toml {args} 2>&1"),
            300,
        );
        eprintln!(
            "[{guest}] vmwarden {sub} {args}: exit {} in {:.1} s:\n{}",
            r.0,
            t.elapsed().as_secs_f64(),
            r.1.trim_end()
        );
        r
    }

    fn domstate(&self, guest: &str) -> String {
        let (_, out) = self.exec(
            guest,
            &format!("virsh -c qemu:///system domstate --reason {VM} 2>&1"),
        );
        out.trim().to_string()
    }

    /// A byte of the nested guest's CMOS (register 0x7e) through qemu's monitor, written first
    /// when `write` is given; CMOS is migrated device state. Repeated a few times: the BIOS uses
    /// the CMOS index port too while it boots.
    fn cmos(&self, guest: &str, write: Option<u8>, expect: u8) -> u8 {
        let mut last = 0;
        for _ in 0..20 {
            let set = write
                .map(|v| {
                    format!(
                        "$M 'o/b 0x70 0x7e' >/dev/null && $M 'o/b 0x71 {v:#04x}' >/dev/null && "
                    )
                })
                .unwrap_or_default();
            let out = self.ok(
                guest,
                &format!(
                    "M='virsh -c qemu:///system qemu-monitor-command {VM} --hmp'; \
                     {set}$M 'o/b 0x70 0x7e' >/dev/null && $M 'i/b 0x71'"
                ),
            );
            let hex = out.trim().rsplit("0x").next().unwrap_or("").trim();
            last = u8::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{out:?}: {e}"));
            if last == expect {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        last
    }
}

/// vmwarden's own lifecycle on the seed stack: agents, hook, real lvmlockd locks, nested libvirt
/// in both guests, live migration over the guests' private link.
fn seed_stack(lab: &Lab) {
    // The locks the earlier parts left behind (lv1 ex on sb, lv2 sh on both) go first, so that
    // `vmwarden check` below judges only the VM.
    lab.lock_ok("sb", "release", "vg1/lv1");
    lab.lock_ok("sa", "release", "vg1/lv2");
    lab.lock_ok("sb", "release", "vg1/lv2");
    let out = lab.script(&["agents"], 180);
    assert!(
        out.status.success(),
        "storage-lab.sh agents: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // vmt: OS-less, its disk vg1/lv3, defined on both (scripts/storage-lab.sh define-vm).
    let out = lab.script(&["define-vm"], 120);
    assert!(
        out.status.success(),
        "storage-lab.sh define-vm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lock_of = |g: &str| lab.status(g, "vg1/lv3");

    // Start on sa: its LV lock exclusive there, then the VM.
    let (rc, out) = lab.vmw("sa", "ctl", &format!("start {VM}"));
    assert_eq!(rc, 0, "ctl start on sa: {out}");
    assert_eq!(lab.domstate("sa"), "running (booted)");
    assert_eq!(lock_of("sa"), "exclusive");
    assert_eq!(lock_of("sb"), "unlocked");
    // `vmwarden lock status VM` under lvmlockd: the LVs of its disks, from libvirt.
    assert_eq!(lab.status("sa", VM), "exclusive");

    // A second start on sb: refused by vmwarden (it asks sa) and by the hook (lvmlockd refuses
    // the lock, the hook names the holder).
    let (rc, out) = lab.vmw("sb", "ctl", &format!("start {VM}"));
    assert_eq!(rc, 1, "a second start on sb must be refused: {out}");
    assert!(
        out.contains("already runs on node sa"),
        "the refusal names sa: {out}"
    );
    let (rc, out) = lab.exec("sb", &format!("virsh -c qemu:///system start {VM} 2>&1"));
    eprintln!("[sb] plain virsh start {VM}: exit {rc}\n{out}");
    assert_ne!(rc, 0, "plain virsh start on sb must fail: {out}");
    assert!(
        out.contains("vmwarden refuses to start vmt")
            && out.contains("locked by host 1")
            && out.contains("host 1 is node sa"),
        "the hook's refusal names sa: {out}"
    );
    assert_ne!(lab.domstate("sb").split(' ').next(), Some("running"));
    assert_eq!(lock_of("sb"), "unlocked");
    assert_eq!(lab.domstate("sa"), "running (booted)");

    // Live migration sa → sb: ex→sh on sa, sh on sb, libvirt over the private link, release on
    // sa, sh→ex on sb. The same guest arrives: a CMOS byte set before is there after.
    let mark = 0x5a;
    assert_eq!(lab.cmos("sa", Some(mark), mark), mark);
    let (rc, out) = lab.vmw("sa", "ctl", &format!("migrate {VM} --to sb"));
    assert_eq!(rc, 0, "ctl migrate sa -> sb: {out}");
    for step in [
        "source_to_shared",
        "target_acquire_shared",
        "libvirt_migrate",
        "source_release",
        "target_to_exclusive",
    ] {
        assert!(out.contains(step), "the migration ran {step}: {out}");
    }
    assert_eq!(lab.domstate("sb"), "running (migrated)");
    // --persistent --undefinesource: the definition moved with the VM.
    let sa = lab.domstate("sa");
    assert!(sa.contains("failed to get domain"), "vmt left on sa: {sa}");
    assert_eq!(lock_of("sb"), "exclusive");
    assert_eq!(lab.status("sb", VM), "exclusive");
    assert_eq!(lock_of("sa"), "unlocked");
    assert_eq!(lab.cmos("sb", None, mark), mark, "not the same guest on sb");
    for g in ["sa", "sb"] {
        let (rc, out) = lab.vmw(g, "check", "");
        assert_eq!(
            rc, 0,
            "[{g}] all invariants hold after the migration: {out}"
        );
    }

    // Stop on sb: the VM goes down, its lock is released.
    let (rc, out) = lab.vmw("sb", "ctl", &format!("stop {VM}"));
    assert_eq!(rc, 0, "ctl stop on sb: {out}");
    assert!(lab.domstate("sb").starts_with("shut off"));
    assert_eq!(lock_of("sb"), "unlocked");
}
