//! The lvmlockd backend against real lvmlockd + sanlock daemons on two lab hosts
//! (tests/support/lock-lab.sh; `--driverloaded n` because this kernel has no device-mapper — the
//! locks are real, only activation is skipped). The live-migration lock dance on one LV.

#[path = "support/lock-lab.rs"]
mod lab;

use std::time::{Duration, Instant};

use vmwarden::exec::Cmd;
use vmwarden::lock::{Held, LockError, VolumeLock};

const EXTRA: &str = "[lock]\nlvchange_extra_args = [\"--driverloaded\", \"n\"]\nconvert_retry_attempts = 3\nconvert_retry_total_seconds = 2\ncommand_timeout_seconds = 30\n";

fn assert_held_by(r: Result<(), LockError>, host: u64) {
    match r {
        Err(LockError::HeldByOtherHost { host_id, .. }) => assert_eq!(host_id, Some(host)),
        other => panic!("expected HeldByOtherHost(host {host}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lvmlockd_migration_dance() {
    let Some(lab) = lab::Lab::start("lvmlockd") else {
        return;
    };
    let t0 = Instant::now();
    let (ca, cb) = (lab.config("h1", EXTRA), lab.config("h2", EXTRA));
    let a = VolumeLock::for_vm(&ca, "vm1", "vg1", "vm1").unwrap();
    let b = VolumeLock::for_vm(&cb, "vm1", "vg1", "vm1").unwrap();

    // Start on A.
    a.acquire_exclusive().await.unwrap();
    assert_eq!(a.mode().await.unwrap(), Held::Exclusive);
    a.acquire_exclusive().await.unwrap(); // idempotent
                                          // A start on B while A runs it: refused, naming host 1, with the house-style message.
    let e = b.acquire_exclusive().await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("vm1's LV vg1/vm1 is locked by host 1"),
        "{msg}"
    );
    assert!(msg.contains("vmwarden ctl status vm1`"), "{msg}");
    assert_held_by(b.acquire_shared().await, 1);
    // A shared acquire on A would silently downgrade a running VM: refused locally.
    assert!(matches!(
        a.acquire_shared().await,
        Err(LockError::IncompatibleMode { .. })
    ));

    // Migration: A ex -> sh, B sh.
    a.convert_to_shared().await.unwrap();
    assert_eq!(a.mode().await.unwrap(), Held::Shared);
    b.acquire_shared().await.unwrap();
    assert_eq!(b.mode().await.unwrap(), Held::Shared);
    // B's premature sh -> ex: refused after the bounded retries, naming host 1.
    let t = Instant::now();
    assert_held_by(b.convert_to_exclusive().await, 1);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(b.mode().await.unwrap(), Held::Shared);
    // A releases, B takes it exclusively.
    a.release().await.unwrap();
    assert_eq!(a.mode().await.unwrap(), Held::None);
    a.release().await.unwrap(); // idempotent
    b.convert_to_exclusive().await.unwrap();
    assert_eq!(b.mode().await.unwrap(), Held::Exclusive);
    assert_held_by(a.acquire_exclusive().await, 2);

    // "Agent restart": a fresh object reads the mode from lvmlockd, not from memory.
    drop(b);
    let b = VolumeLock::for_vm(&cb, "vm1", "vg1", "vm1").unwrap();
    assert_eq!(b.mode().await.unwrap(), Held::Exclusive);
    b.release().await.unwrap();
    assert_eq!(b.mode().await.unwrap(), Held::None);

    // Converting what is not held is a local mistake, not a cluster refusal.
    assert!(matches!(
        b.convert_to_exclusive().await,
        Err(LockError::IncompatibleMode { .. })
    ));
    // Unknown LV, invalid names.
    let nope = VolumeLock::for_vm(&ca, "vm9", "vg1", "vm9").unwrap();
    assert!(matches!(
        nope.acquire_exclusive().await,
        Err(LockError::NotFound { what: "LV", .. })
    ));
    assert!(matches!(
        VolumeLock::for_vm(&ca, "vm1", "vg1", "-aey"),
        Err(LockError::InvalidName { .. })
    ));

    // Lockspace stopped on A: typed, with the command to fix it.
    let out = Cmd::new(lab.bin("h1", "lvm"))
        .args(["vgchange", "--driverloaded", "n", "--lock-stop", "vg1"])
        .run(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);
    let a2 = VolumeLock::for_vm(&ca, "vm2", "vg1", "vm2").unwrap();
    let e = a2.acquire_exclusive().await.unwrap_err();
    assert!(
        matches!(e, LockError::LockspaceInactive { ref vg } if vg == "vg1"),
        "{e:?}"
    );
    assert!(e.to_string().contains("vgchange --lock-start vg1"), "{e}");
    a2.release().await.unwrap(); // nothing held: fine

    eprintln!("lvmlockd dance took {:?} (after lab start)", t0.elapsed());
}
