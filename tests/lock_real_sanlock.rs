//! The sanlock lease backend against two real sanlock daemons (tests/support/lock-lab.sh): the
//! migration dance on one VM's lease, the lease surviving an "agent restart" (a fresh backend
//! object finds it in sanlock), and the lease vanishing when the VM process it watches dies.

#[path = "support/lock-lab.rs"]
mod lab;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmwarden::lock::sanlock::cmdline_watches;
use vmwarden::lock::{Held, LockError, SanlockLease, VolumeLock};

fn extra(lab: &lab::Lab) -> String {
    format!(
        "[lock]\nbackend = \"sanlock\"\ncommand_timeout_seconds = 5\nconvert_retry_attempts = 3\nconvert_retry_total_seconds = 2\n\
         [lock.sanlock]\nlockspace = \"LS\"\nlease_path = \"{}\"\n\
         leases = [{{ vm = \"vm1\", offset = 1048576 }}, {{ vm = \"vm2\", offset = 2097152 }}]\n",
        lab.var("LEASES")
    )
}

const CHILD_ENV: &str = "VMWARDEN_TEST_LOCK_AGENT_CONFIG";

/// Stand-in for one agent run: acquire vm1 exclusively and exit. Does nothing in a normal test
/// run (only when the main test starts it with the config in the environment).
#[tokio::test]
async fn agent_process() {
    let Ok(text) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cfg = vmwarden::config::Config::from_toml_str(&text, "env").unwrap();
    let l = VolumeLock::for_vm(&cfg, "vm1", "unused", "unused").unwrap();
    l.acquire_exclusive().await.unwrap();
    assert_eq!(l.mode().await.unwrap(), Held::Exclusive);
}

fn assert_held_by(r: Result<(), LockError>, host: u64) {
    match r {
        Err(LockError::HeldByOtherHost { host_id, .. }) => assert_eq!(host_id, Some(host)),
        other => panic!("expected HeldByOtherHost(host {host}), got {other:?}"),
    }
}

/// Kills and reaps a stand-in "qemu" process on drop.
struct FakeVm(std::process::Child);
impl Drop for FakeVm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_free(lease: &SanlockLease, what: &str) {
    let t = Instant::now();
    while lease.mode().await.unwrap() != Held::None {
        assert!(t.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sanlock_lease_dance_restart_and_vm_death() {
    let Some(lab) = lab::Lab::start("sanlock") else {
        return;
    };
    let t0 = Instant::now();
    let (c1, c2) = (
        lab.config("h1", &extra(&lab)),
        lab.config("h2", &extra(&lab)),
    );
    let h1 = VolumeLock::for_vm(&c1, "vm1", "unused", "unused").unwrap();
    let h2 = VolumeLock::for_vm(&c2, "vm1", "unused", "unused").unwrap();
    assert!(matches!(h1, VolumeLock::Sanlock(_)));

    h1.acquire_exclusive().await.unwrap();
    assert_eq!(h1.mode().await.unwrap(), Held::Exclusive);
    let e = h2.acquire_exclusive().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("vm1's lease LS:vm1 is locked by host 1"),
        "{e}"
    );
    assert_held_by(Err(e), 1);
    assert_eq!(
        h2.mode().await.unwrap(),
        Held::None,
        "a refused acquire leaves nothing behind"
    );

    h1.convert_to_shared().await.unwrap();
    assert_eq!(h1.mode().await.unwrap(), Held::Shared);
    h2.acquire_shared().await.unwrap();
    assert_eq!(h2.mode().await.unwrap(), Held::Shared);
    let t = Instant::now();
    assert_held_by(h2.convert_to_exclusive().await, 1);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(h2.mode().await.unwrap(), Held::Shared);
    h1.release().await.unwrap();
    assert_eq!(h1.mode().await.unwrap(), Held::None);
    h2.convert_to_exclusive().await.unwrap();
    assert_eq!(h2.mode().await.unwrap(), Held::Exclusive);
    assert_eq!(h1.mode().await.unwrap(), Held::None);
    assert_held_by(h1.acquire_shared().await, 2);

    // "Agent restart": drop the object; a new one (same config, no shared state) finds the
    // lease in sanlock, still exclusive, and can release it.
    drop(h2);
    let h2 = VolumeLock::for_vm(&c2, "vm1", "unused", "unused").unwrap();
    assert_eq!(h2.mode().await.unwrap(), Held::Exclusive);
    h2.release().await.unwrap();
    // A real restart: another process (this test binary, as `agent_process`) acquires and
    // exits; the lease stays, and this process releases it.
    let st = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "agent_process", "--nocapture"])
        .env(CHILD_ENV, lab.config_text("h2", &extra(&lab)))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        h2.mode().await.unwrap(),
        Held::Exclusive,
        "lease died with the agent"
    );
    assert_held_by(h1.acquire_exclusive().await, 2);
    h2.release().await.unwrap();
    assert_eq!(h2.mode().await.unwrap(), Held::None);
    h1.acquire_exclusive().await.unwrap(); // free again
    h1.release().await.unwrap();

    // Start flow: acquire (no VM yet), start the VM, attach the lease to it; killing the VM
    // frees the lease.
    let vm = FakeVm(
        Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lease = SanlockLease::new(&c1, "vm1").unwrap();
    lease.acquire_exclusive().await.unwrap();
    lease.attach_vm(vm.0.id()).await.unwrap();
    assert_eq!(lease.mode().await.unwrap(), Held::Exclusive);
    assert_held_by(h2.acquire_shared().await, 1);
    drop(vm);
    let t = Instant::now();
    while lease.mode().await.unwrap() != Held::None {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "attached lease outlived its VM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Start flow with the holder that follows the VM's qemu pid file (the vmwarden binary's
    // `lease-holder`): the stand-in qemu runs "-name guest=vm1,…" like libvirt's; once its pid
    // is in the pid file the holder becomes its watcher by itself, so attaching hands nothing
    // over (same holder pid), and the VM's death frees the lease.
    let pid_file = std::env::temp_dir().join(format!("vmw-follow-{}-vm1.pid", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let fake_qemu = || {
        FakeVm(
            Command::new("/usr/bin/python3")
                .args([
                    "-c",
                    "import time; time.sleep(300)",
                    "-name",
                    "guest=vm1,debug-threads=on",
                ])
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    // A qemu of vm1 older than the holder (a previous run's, its pid file left behind) is not
    // followed: attaching falls back to handing the lease over to a new holder.
    let old_vm = fake_qemu();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&pid_file, format!("{}\n", old_vm.0.id())).unwrap();
    let lease = SanlockLease::new(&c1, "vm1")
        .unwrap()
        .following(env!("CARGO_BIN_EXE_vmwarden"), pid_file.clone());
    lease.acquire_exclusive().await.unwrap();
    let follower = lease.holder_pid().await.unwrap().expect("held");
    let cmdline = std::fs::read(format!("/proc/{follower}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("lease-holder"),
        "{cmdline:?}"
    );
    lease.attach_vm(old_vm.0.id()).await.unwrap();
    let handed = lease.holder_pid().await.unwrap().expect("still held");
    assert_ne!(handed, follower, "an older qemu must not be followed");
    assert_eq!(lease.mode().await.unwrap(), Held::Exclusive);
    drop(old_vm);
    wait_free(&lease, "handed-over lease outlived its VM").await;

    let lease = SanlockLease::new(&c1, "vm1")
        .unwrap()
        .following(env!("CARGO_BIN_EXE_vmwarden"), pid_file.clone());
    lease.acquire_exclusive().await.unwrap();
    let follower = lease.holder_pid().await.unwrap().expect("held");
    let vm = fake_qemu();
    std::fs::write(&pid_file, format!("{}\n", vm.0.id())).unwrap();
    // The follower looks at the pid file every 5 ms and becomes the qemu's watcher by itself.
    // That is waited for here, bounded by 10 s for a loaded machine, apart from attach_vm: the
    // latter waits 1 s for it and then hands the lease over instead (the safe fallback, shown
    // above), so asserting through attach_vm alone made a busy CI's timing the verdict.
    let t = Instant::now();
    let watching = |c: &[u8]| cmdline_watches(c, vm.0.id());
    loop {
        let cmdline = std::fs::read(format!("/proc/{follower}/cmdline")).unwrap_or_default();
        if watching(&cmdline) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the follower {follower} did not start watching qemu {} in 10 s: its argv is {:?}",
            vm.0.id(),
            String::from_utf8_lossy(&cmdline)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("the follower watched the new qemu after {:?}", t.elapsed());
    lease.attach_vm(vm.0.id()).await.unwrap();
    assert_eq!(
        lease.holder_pid().await.unwrap(),
        Some(follower),
        "the follower itself became the watcher: attaching must hand nothing over"
    );
    assert_held_by(h2.acquire_shared().await, 1);
    drop(vm);
    wait_free(&lease, "followed lease outlived its VM").await;
    let _ = std::fs::remove_file(&pid_file);

    // The lease cannot outlive the VM: tie vm2's lease to a stand-in qemu pid, kill it.
    let vm = FakeVm(
        Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lease = SanlockLease::new(&c1, "vm2").unwrap().watching(vm.0.id());
    let l = VolumeLock::Sanlock(lease);
    l.acquire_exclusive().await.unwrap();
    assert_eq!(l.mode().await.unwrap(), Held::Exclusive);
    drop(vm);
    let t = Instant::now();
    while l.mode().await.unwrap() != Held::None {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "lease outlived its VM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("lease freed {:?} after the VM died", t.elapsed());
    // ... and the other host can take it at once.
    let h2vm2 = VolumeLock::for_vm(&c2, "vm2", "unused", "unused").unwrap();
    h2vm2.acquire_exclusive().await.unwrap();
    h2vm2.release().await.unwrap();

    // Host 2 crashes holding vm1: until sanlock declares it dead, host 1's start is refused at
    // once with HostNotDeadYet (sanlock itself would block until then).
    h2.acquire_exclusive().await.unwrap();
    let pid = std::fs::read_to_string(format!("{}/h2.sanlock.pid", lab.var("WORK"))).unwrap();
    let st = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    loop {
        match h1.acquire_exclusive().await {
            Err(LockError::HostNotDeadYet { host_id: 2, .. }) => break,
            // Not FAIL yet: sanlock refuses, or blocks (checking the owner) until our timeout.
            Err(LockError::HeldByOtherHost {
                host_id: Some(2), ..
            })
            | Err(LockError::Exec(_)) => {}
            other => panic!("while host 2 fails: {other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "host 2 never seen as failing"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t1 = Instant::now();
    let e = h1.acquire_exclusive().await.unwrap_err();
    assert!(t1.elapsed() < Duration::from_secs(5), "{:?}", t1.elapsed());
    assert!(e.to_string().contains("declares it dead"), "{e}");
    eprintln!("host 2 seen failing {:?} after its crash: {e}", t.elapsed());
    assert_eq!(h1.mode().await.unwrap(), Held::None);

    // Config/name errors.
    assert!(matches!(
        VolumeLock::for_vm(&c1, "vm3", "x", "y"),
        Err(LockError::Config(_))
    ));
    assert!(matches!(
        VolumeLock::for_vm(&c1, "..", "x", "y"),
        Err(LockError::InvalidName { .. })
    ));
    eprintln!("sanlock dance took {:?} (after lab start)", t0.elapsed());
}
