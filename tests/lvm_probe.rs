//! LVM probe() cases. Whatever can run for real runs in tests/lvm_real.rs; the `*_mock_*` tests
//! here use small scripts standing in for `lvm` / `lvmlockctl` as a LAST RESORT, for what the real
//! tools cannot be made to do on this kind of machine: report an LV *active* (there is no
//! device-mapper here, so real lvm never activates anything), print garbage, or hang like lvm on
//! dead storage.

mod support;

use std::time::{Duration, Instant};

use support::{repo, script};
use vmwarden::config::LvmConfig;
use vmwarden::exec::ExecError;
use vmwarden::probe::lvm::{probe, LockMode, LockdStatus, LvState};
use vmwarden::probe::ProbeError;

fn cfg(lvm: &str, lvmlockctl: &str) -> LvmConfig {
    LvmConfig {
        enabled: true,
        lvm: lvm.into(),
        lvmlockctl: lvmlockctl.into(),
    }
}

#[tokio::test]
async fn missing_lvm_is_absent() {
    let c = cfg(
        "/nonexistent/vmwarden-test/lvm",
        "/nonexistent/vmwarden-test/lvmlockctl",
    );
    let err = probe(&c, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, ProbeError::Absent(_)), "{err}");
}

#[tokio::test]
async fn probe_mock_active_lvs_and_lock_modes() {
    let dir = tempfile::tempdir().unwrap();
    let fx = repo().join("tests/fixtures/lvm");
    let lvm = script(
        dir.path(),
        "lvm",
        &format!(
            "[ \"$1\" = fullreport ] || exit 3\n[ \"$LVM_SUPPRESS_FD_WARNINGS\" = 1 ] || exit 4\ncat '{}'\n",
            fx.join("activated-h1-fullreport.json").display()
        ),
    );
    let lockctl = script(
        dir.path(),
        "lvmlockctl",
        &format!(
            "[ \"$1\" = --info ] || exit 3\ncat '{}'\n",
            fx.join("h1-lvmlockctl-info.txt").display()
        ),
    );
    let c = cfg(lvm.to_str().unwrap(), lockctl.to_str().unwrap());
    let p = probe(&c, Duration::from_secs(5)).await.unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let s = &p.value;
    assert!(
        matches!(&s.lockd, LockdStatus::Up(i) if i.vgs[0].lv_locks.iter().any(|(_, m)| *m == LockMode::Sh))
    );
    let st = |n: &str| s.lv_state(s.lvs.iter().find(|l| l.name == n).unwrap());
    assert_eq!(st("vm1"), LvState::Exclusive);
    assert_eq!(st("vm2"), LvState::Shared);
    assert_eq!(st("vm3"), LvState::Inactive);
    assert_eq!(st("data"), LvState::Local);
}

#[tokio::test]
async fn probe_mock_lvmlockd_down_is_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let fx = repo().join("tests/fixtures/lvm");
    let lvm = script(
        dir.path(),
        "lvm",
        &format!(
            "cat '{}'\n",
            fx.join("activated-h1-fullreport.json").display()
        ),
    );
    // What the real lvmlockctl prints and returns without lvmlockd (captured, see README).
    let lockctl = script(
        dir.path(),
        "lvmlockctl",
        "echo 'Cannot connect to lvmlockd.'\necho '/run/lvm/lvmlockd.socket: connect failed: Connection refused' >&2\nexit 255\n",
    );
    let p = probe(
        &cfg(lvm.to_str().unwrap(), lockctl.to_str().unwrap()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    match &p.value.lockd {
        LockdStatus::Unavailable(why) => {
            assert!(
                why.contains("systemctl status lvmlockd") && why.contains("exit status 255"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    let s = &p.value;
    assert_eq!(s.lv_state(&s.lvs[0]), LvState::Local);
}

#[tokio::test]
async fn probe_mock_garbage_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let lvm = script(dir.path(), "lvm", "echo 'this is not json'\n");
    let err = probe(
        &cfg(lvm.to_str().unwrap(), "/nonexistent/lvmlockctl"),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    match err {
        ProbeError::Failed(m) => assert!(m.contains("not JSON"), "{m}"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn probe_mock_hung_lvm_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let lvm = script(dir.path(), "lvm", "sleep 30\n");
    let t = Instant::now();
    let err = probe(
        &cfg(lvm.to_str().unwrap(), "/nonexistent/lvmlockctl"),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(err, ProbeError::Exec(ExecError::Timeout { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("storage hung"), "{err}");
}
