//! Against a REAL sanlock daemon: two lab hosts (each a real daemon in its own mount namespace,
//! see tests/support/lab-host.sh) share one lease file; host 1 holds an exclusive and a shared
//! lease, host 2 the same shared lease; `vmwarden collect` runs inside host 1's namespace.
//!
//! Needs root, sanlock, util-linux and a C compiler. Without them the tests print a loud SKIPPED
//! line and pass — unless VMWARDEN_REQUIRE_REAL=1 (CI), where they fail.
//! Each test uses its own temp directory and namespaces, so they run in parallel with anything.

mod support;

use std::process::Command;

use support::{lab_unavailable, skip_or_fail, wait_for, LabDir, LabHost};

const BIN: &str = env!("CARGO_BIN_EXE_vmwarden");

const CONFIG: &str = "\
[drbd]
enabled = false
[lvm]
enabled = false
[libvirt]
enabled = false
[sanlock]
enabled = true
sanlock = \"sanlock\"
";

/// The value of the sample whose line starts with `prefix` (name and labels), if any.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l[prefix.len()..].trim().parse().ok())
}

fn lab_or_skip(test: &str) -> Option<LabDir> {
    if let Some(why) = lab_unavailable() {
        skip_or_fail(test, &why);
        return None;
    }
    match LabDir::new() {
        Ok(l) => Some(l),
        Err(why) => {
            skip_or_fail(test, &why);
            None
        }
    }
}

fn held(host: &LabHost, name: &str) -> bool {
    host.run("sanlock", &["client", "status"]).is_ok_and(|s| {
        s.lines().any(|l| {
            l.starts_with(&format!("r LS:{name}:"))
                && l.rsplit_once(" p ")
                    .is_some_and(|(_, pid)| pid.trim().parse::<u32>().is_ok())
        })
    })
}

#[test]
fn collect_against_real_sanlock_daemons() {
    const TEST: &str = "sanlock_real::collect_against_real_sanlock_daemons";
    let Some(lab) = lab_or_skip(TEST) else { return };
    let h1 = match LabHost::start(&lab, "h1") {
        Ok(h) => h,
        Err(why) => {
            return skip_or_fail(
                TEST,
                &format!("the real sanlock daemon did not start: {why}"),
            )
        }
    };
    let h2 = match LabHost::start(&lab, "h2") {
        Ok(h) => h,
        Err(why) => {
            return skip_or_fail(
                TEST,
                &format!("the second sanlock daemon did not start: {why}"),
            )
        }
    };

    let leases = lab.path().join("leases");
    std::fs::File::create(&leases)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let l = leases.display().to_string();
    let ls = |id: u32| format!("LS:{id}:{l}:0");
    h1.run("sanlock", &["client", "init", "-s", &ls(0), "-o", "1"])
        .unwrap();
    h1.run(
        "sanlock",
        &["client", "add_lockspace", "-s", &ls(1), "-o", "1"],
    )
    .unwrap();
    h2.run(
        "sanlock",
        &["client", "add_lockspace", "-s", &ls(2), "-o", "1"],
    )
    .unwrap();
    let vm1 = format!("LS:vm1:{l}:1048576");
    let vm2 = format!("LS:vm2:{l}:2097152");
    h1.run("sanlock", &["client", "init", "-r", &vm1]).unwrap();
    h1.run("sanlock", &["client", "init", "-r", &vm2]).unwrap();

    h1.hold(&vm1).unwrap();
    assert!(
        wait_for(20, || held(&h1, "vm1").then_some(())).is_some(),
        "vm1 not held on h1: {}",
        h1.log()
    );
    h1.hold(&format!("{vm2}:SH")).unwrap();
    assert!(
        wait_for(20, || held(&h1, "vm2").then_some(())).is_some(),
        "vm2 not held on h1: {}",
        h1.log()
    );
    // Both hosts must see each other LIVE before a shared acquire on h2 (and for the assertions).
    let live = |h: &LabHost, other: u32| {
        h.run("sanlock", &["client", "gets", "-h", "1"])
            .is_ok_and(|s| {
                s.lines()
                    .any(|x| x.starts_with(&format!("h {other} ")) && x.ends_with(" LIVE"))
            })
    };
    assert!(
        wait_for(30, || live(&h1, 2).then_some(())).is_some(),
        "h1 never saw host 2 LIVE"
    );
    assert!(
        wait_for(30, || live(&h2, 1).then_some(())).is_some(),
        "h2 never saw host 1 LIVE"
    );
    h2.hold(&format!("{vm2}:SH")).unwrap();
    assert!(
        wait_for(20, || held(&h2, "vm2").then_some(())).is_some(),
        "vm2 not held on h2: {}",
        h2.log()
    );
    // The exclusive lease h1 holds cannot be taken by h2 (real sanlock answer: -243).
    let taken = h2.run(
        "sanlock",
        &["client", "command", "-r", &vm1, "-c", "/bin/true"],
    );
    assert!(taken.is_err(), "h2 got vm1 although h1 holds it: {taken:?}");

    let cfg = lab.path().join("vmwarden.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let out = h1
        .cmd(BIN)
        .arg("collect")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vmwarden collect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v = |p: &str| value(&text, p);

    assert_eq!(
        v(r#"vmwarden_collector_success{collector="sanlock"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_collector_absent{collector="sanlock"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        v(&format!(
            r#"vmwarden_sanlock_lockspace_info{{lockspace="LS",host_id="1",path="{l}",offset="0"}}"#
        )),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_sanlock_lockspace_state{lockspace="LS",state="joined"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_sanlock_host_state{lockspace="LS",host_id="1",state="LIVE"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_sanlock_host_state{lockspace="LS",host_id="2",state="LIVE"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_sanlock_host_state{lockspace="LS",host_id="2",state="DEAD"}"#),
        None,
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_sanlock_resource_held{lockspace="LS",resource="vm1",mode="ex"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_sanlock_resource_held{lockspace="LS",resource="vm2",mode="sh"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_sanlock_renewal_last_result{lockspace="LS"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(r#"vmwarden_sanlock_io_timeout_seconds{lockspace="LS"}"#),
        Some(1.0),
        "{text}"
    );
    // io_timeout 1 s: renewals every 2 s, so the last one is only seconds old.
    let age = v(r#"vmwarden_sanlock_renewal_age_seconds{lockspace="LS"}"#).expect("renewal age");
    assert!((0.0..=10.0).contains(&age), "renewal age {age}: {text}");
    assert!(
        v(r#"vmwarden_sanlock_renewal_read_seconds{lockspace="LS"}"#).is_some(),
        "{text}"
    );
    // Collectors that are disabled export nothing.
    assert!(
        !text.contains(r#"vmwarden_collector_success{collector="lvm"}"#),
        "{text}"
    );
    assert!(!text.contains("vmwarden_lvm_"), "{text}");

    // The daemon's monotime and this host's CLOCK_MONOTONIC are the same clock.
    let status = h1.run("sanlock", &["client", "status", "-D"]).unwrap();
    let daemon_now: u64 = status
        .lines()
        .find_map(|x| x.trim().strip_prefix("monotime="))
        .and_then(|x| x.parse().ok())
        .expect("monotime in status -D");
    let local_now = vmwarden::probe::sanlock::local_monotonic_seconds().unwrap();
    assert!(
        local_now.abs_diff(daemon_now) <= 2,
        "daemon {daemon_now} vs local {local_now}"
    );
    drop(h2);
    drop(h1);
}

#[test]
fn collect_without_a_daemon_fails_with_a_hint() {
    const TEST: &str = "sanlock_real::collect_without_a_daemon_fails_with_a_hint";
    let Some(lab) = lab_or_skip(TEST) else { return };
    let cfg = lab.path().join("vmwarden.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    // A private, empty /run: sanlock is installed but no daemon answers there.
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"mount -t tmpfs tmpfs /run && mkdir /run/sanlock && exec "$0" collect --config "$1""#,
        )
        .arg(BIN)
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        value(&text, r#"vmwarden_collector_success{collector="sanlock"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"vmwarden_collector_absent{collector="sanlock"}"#),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("vmwarden_sanlock_"), "{text}");
    assert!(log.contains("systemctl status sanlock"), "{log}");
}
