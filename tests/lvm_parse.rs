//! LVM parsers over real captures (tests/fixtures/lvm/, see its README: real lvm 2.03.16 with real
//! lvmlockd + sanlock on loop devices), the LV state rule, malformed input, arbitrary bytes, and
//! the rendered metrics of one capture (golden file).

mod support;

use proptest::prelude::*;
use support::{fixture, golden, render, samples, sorted_metrics};
use vmwarden::probe::lvm::{
    parse_fullreport, parse_lockctl_info, Activity, LockMode, LockdStatus, LvLock, LvState,
    LvmSnapshot,
};

const VM1: &str = "ViULTC-qzY8-8mX0-Kas7-ZP3o-4oNd-yofUEQ";
const VM2: &str = "bnIrtr-Bgzs-GjFM-Cezq-iMMs-Vs4T-ztSTMJ";
const VM3: &str = "NKzeeV-z9Sr-MWIg-8m0L-UUpu-rODc-6Gkqa4";
const VM4: &str = "bj5Nfs-DVu0-tYNS-WgGE-qfRo-cBl1-RJg1E0";

/// A snapshot as the probe builds it: report + lvmlockctl output (None = lvmlockd unavailable).
fn snapshot(report: &str, lockctl: Option<&str>) -> (LvmSnapshot, Vec<String>) {
    let rep = parse_fullreport(&fixture(report)).unwrap();
    let mut errors = rep.errors;
    let lockd = match lockctl {
        Some(f) => {
            let p = parse_lockctl_info(&fixture(f));
            errors.extend(p.errors);
            LockdStatus::Up(p.value)
        }
        None => LockdStatus::Unavailable("lvmlockd is not running".into()),
    };
    (
        LvmSnapshot {
            vgs: rep.value.vgs,
            lvs: rep.value.lvs,
            lockd,
        },
        errors,
    )
}

fn state(s: &LvmSnapshot, lv: &str) -> LvState {
    s.lv_state(s.lvs.iter().find(|l| l.name == lv).unwrap())
}

#[test]
fn fullreport_of_host_1() {
    let p = parse_fullreport(&fixture("lvm/h1-fullreport.json")).unwrap();
    assert_eq!(p.errors, Vec::<String>::new());
    let r = p.value;
    assert_eq!(r.vgs.len(), 2);
    let vg1 = &r.vgs[0];
    assert_eq!(vg1.name, "vg1");
    assert_eq!(vg1.uuid, "fxU6SX-FZyF-MCaj-TI4N-he49-8wa9-kdQTAA");
    assert_eq!(vg1.lock_type, "sanlock");
    assert_eq!(vg1.lock_args, "1.0.0:lvmlock");
    assert_eq!(vg1.size_bytes, Some(801112064));
    assert_eq!(vg1.free_bytes, Some(264241152));
    assert!(vg1.shared && vg1.is_shared() && !vg1.clustered);
    assert_eq!(vg1.attr, "wz--ns");
    let local = &r.vgs[1];
    assert_eq!(
        (local.name.as_str(), local.lock_type.as_str()),
        ("vg_local", "")
    );
    assert!(!local.is_shared());
    assert_eq!(local.size_bytes, Some(264241152));

    // The internal lvmlock LV is hidden; 4 VM LVs + 2 local ones.
    let names: Vec<_> = r
        .lvs
        .iter()
        .map(|l| format!("{}/{}", l.vg, l.name))
        .collect();
    assert_eq!(
        names,
        [
            "vg1/vm1",
            "vg1/vm2",
            "vg1/vm3",
            "vg1/vm4",
            "vg_local/data",
            "vg_local/scratch"
        ]
    );
    let vm1 = &r.lvs[0];
    assert_eq!(vm1.uuid, VM1);
    assert_eq!(vm1.size_bytes, Some(64 << 20));
    assert_eq!(vm1.lock_args, "1.0.0:70254592");
    assert_eq!(vm1.path, "/dev/vg1/vm1");
    assert_eq!(vm1.dm_path, "/dev/mapper/vg1-vm1");
    assert_eq!(vm1.devices, "/dev/loop1(64)");
    // No device-mapper on the capture host: lvm cannot tell (attr state X).
    assert_eq!(vm1.attr, "-wi-XX----");
    assert_eq!(vm1.activity, Activity::Unknown);
    assert_eq!(vm1.active_exclusively, Some(false));
    assert_eq!(r.lvs[5].size_bytes, Some(20 << 20));
    assert_eq!(r.lvs[5].lock_args, "");
}

#[test]
fn lockctl_info_formatted_and_raw_agree() {
    for (host, ex, sh, un) in [("h1", VM1, VM2, [VM3, VM4]), ("h2", VM3, VM2, [VM1, VM1])] {
        let fmt = parse_lockctl_info(&fixture(&format!("lvm/{host}-lvmlockctl-info.txt")));
        let raw = parse_lockctl_info(&fixture(&format!("lvm/{host}-lvmlockctl-info-dump.txt")));
        assert!(fmt.errors.is_empty(), "{host}: {:?}", fmt.errors);
        assert!(raw.errors.is_empty(), "{host}: {:?}", raw.errors);
        for p in [&fmt.value, &raw.value] {
            assert_eq!(p.vgs.len(), 1);
            let v = &p.vgs[0];
            assert_eq!(v.vg_name, "vg1");
            assert_eq!(v.vg_uuid, "fxU6SX-FZyF-MCaj-TI4N-he49-8wa9-kdQTAA");
            assert_eq!(v.lock_type, "sanlock");
            assert_eq!(v.lockspace, "lvm_vg1");
            assert_eq!(v.vg_lock, Some(LockMode::Un));
            assert_eq!(v.gl_lock, Some(LockMode::Un));
            let mode = |u: &str| v.lv_locks.iter().find(|(x, _)| x == u).map(|(_, m)| *m);
            assert_eq!(mode(ex), Some(LockMode::Ex), "{host}");
            assert_eq!(mode(sh), Some(LockMode::Sh), "{host}");
            for u in un {
                assert_eq!(mode(u), Some(LockMode::Un), "{host}");
            }
        }
        // Same locks, maybe in another order.
        let mut a = fmt.value.vgs[0].lv_locks.clone();
        let mut b = raw.value.vgs[0].lv_locks.clone();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a, b);
    }
}

#[test]
fn states_come_from_lvmlockd_not_from_lvs() {
    // Real capture of host 1 (no device-mapper): the locks alone decide.
    let (s, errors) = snapshot("lvm/h1-fullreport.json", Some("lvm/h1-lvmlockctl-info.txt"));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(state(&s, "vm1"), LvState::Exclusive);
    assert_eq!(state(&s, "vm2"), LvState::Shared);
    assert_eq!(state(&s, "vm3"), LvState::Inactive); // ex on host 2
    assert_eq!(state(&s, "vm4"), LvState::Inactive);
    assert_eq!(state(&s, "data"), LvState::Inactive);
    let vm3 = s.lvs.iter().find(|l| l.name == "vm3").unwrap();
    assert_eq!(s.lv_lock(vm3), LvLock::Known(LockMode::Un));
    let data = s.lvs.iter().find(|l| l.name == "data").unwrap();
    assert_eq!(s.lv_lock(data), LvLock::NotShared);

    let (s, _) = snapshot("lvm/h2-fullreport.json", Some("lvm/h2-lvmlockctl-info.txt"));
    assert_eq!(state(&s, "vm3"), LvState::Exclusive);
    assert_eq!(state(&s, "vm2"), LvState::Shared);
    assert_eq!(state(&s, "vm1"), LvState::Inactive);
}

#[test]
fn activated_host_shared_lv_is_not_called_exclusive() {
    // Derived fixture (see README): vm1 and vm2 active. lvs says "active exclusively" for BOTH,
    // but vm2's lock is shared.
    let (s, errors) = snapshot(
        "lvm/activated-h1-fullreport.json",
        Some("lvm/h1-lvmlockctl-info.txt"),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let vm2 = s.lvs.iter().find(|l| l.name == "vm2").unwrap();
    assert_eq!(vm2.active_exclusively, Some(true));
    assert_eq!(vm2.activity, Activity::Active);
    assert_eq!(state(&s, "vm1"), LvState::Exclusive);
    assert_eq!(state(&s, "vm2"), LvState::Shared);
    assert_eq!(state(&s, "vm3"), LvState::Inactive);
    assert_eq!(state(&s, "data"), LvState::Local);
    assert_eq!(state(&s, "scratch"), LvState::Inactive);

    // Without lvmlockd the mode is unknown: active LVs of the shared VG are only "local".
    let (s, _) = snapshot("lvm/activated-h1-fullreport.json", None);
    assert_eq!(state(&s, "vm1"), LvState::Local);
    assert_eq!(state(&s, "vm2"), LvState::Local);
    assert_eq!(state(&s, "vm3"), LvState::Inactive);
    let vm1 = s.lvs.iter().find(|l| l.name == "vm1").unwrap();
    assert_eq!(s.lv_lock(vm1), LvLock::Unknown);
}

#[test]
fn report_read_without_lvmlockd_is_the_same_report() {
    let a = parse_fullreport(&fixture("lvm/h1-fullreport.json")).unwrap();
    let b = parse_fullreport(&fixture("lvm/h1-nolockd-fullreport.json")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn lvmlockctl_without_daemon_is_not_info() {
    let p = parse_lockctl_info(&fixture("lvm/h1-nolockd-lvmlockctl-info.txt"));
    assert!(p.value.vgs.is_empty());
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
}

#[test]
fn malformed_report_keeps_good_rows() {
    let p = parse_fullreport(&fixture("lvm/malformed-fullreport.json")).unwrap();
    let r = &p.value;
    let vgs: Vec<_> = r.vgs.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(vgs, ["vg_ok", "vg_num"]);
    assert_eq!(r.vgs[0].size_bytes, None);
    assert_eq!(r.vgs[0].free_bytes, None);
    assert!(r.vgs[0].is_shared());
    // json_std-style numbers and booleans are read too.
    assert_eq!(r.vgs[1].size_bytes, Some(1 << 30));
    assert_eq!(r.vgs[1].free_bytes, Some(0));
    assert!(!r.vgs[1].shared);

    let lvs: Vec<_> = r.lvs.iter().map(|l| l.name.as_str()).collect();
    // LVs without a usable uuid are skipped: their lock could not be looked up and would read
    // as unlocked (this test used to keep them with uuid "").
    assert_eq!(lvs, ["good", "nosize"]);
    let good = &r.lvs[0];
    assert_eq!(
        (good.size_bytes, good.activity),
        (Some(1 << 20), Activity::Active)
    );
    assert_eq!(r.lvs[1].size_bytes, None);

    let e = p.errors.join("\n");
    for needle in [
        "VG vg_ok: vg_size \"\" is empty",
        "VG vg_ok: vg_free \"12x\" has a unit lvm does not print",
        "vg row without vg_name skipped",
        "report[0].vg[2] is not an object",
        "lv row without vg_name/lv_name skipped",
        "LV vg_ok/nosize: lv_size \"\" is empty",
        "LV vg_ok/sparse: none of lv_active, lv_active_locally, lv_attr",
        "LV vg_ok/typed: no lv_uuid",
        "report[0].seg is not an array",
        "report[2] is not an object",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }

    // Rendering what is left works and skips what is unknown.
    let (s, _) = snapshot(
        "lvm/malformed-fullreport.json",
        Some("lvm/h1-lvmlockctl-info.txt"),
    );
    let text = render(|reg| vmwarden::metrics::lvm::encode(reg, &s));
    assert!(
        !text.contains(r#"vmwarden_lvm_vg_size_bytes{vg="vg_ok"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vmwarden_lvm_lv_size_bytes{vg="vg_ok",lv="good"} 1048576"#),
        "{text}"
    );
}

#[test]
fn not_a_report_is_an_error() {
    assert!(parse_fullreport("").is_err());
    assert!(parse_fullreport("  WARNING: something\n").is_err());
    assert!(parse_fullreport(r#"{"log": []}"#).is_err());
    assert!(parse_fullreport(r#"{"report": {}}"#).is_err());
    let p = parse_fullreport(r#"{"report": []}"#).unwrap();
    assert!(p.value.vgs.is_empty() && p.errors.is_empty());
}

#[test]
fn malformed_lockctl_lines_are_skipped_and_counted() {
    let text = "\
LK LV ex before-any-vg
VG vg1 lock_type=sanlock uuid1
LS sanlock lvm_vg1
LK VG un ver 3
LK LV zz weird-mode
LK LV ex
LK XX ex thing
LK LV ex good-ex
LW LV sh waiting-is-not-held
OP lock pid 7 (lvchange)
UN info=new_kind a=b
VG
what is this

VG vg2 lock_type=dlm uuid2
LS dlm lvm_vg2
LK LV nl cached
info=lk mode=ex version=0 flags=0x1 client_id=0
";
    let p = parse_lockctl_info(text);
    assert_eq!(p.value.vgs.len(), 2);
    let v1 = &p.value.vgs[0];
    assert_eq!(v1.lv_locks, vec![("good-ex".to_string(), LockMode::Ex)]);
    assert_eq!(v1.vg_lock, Some(LockMode::Un));
    assert_eq!(
        p.value.vgs[1].lv_locks,
        vec![("cached".to_string(), LockMode::Un)]
    );
    // before-any-vg, zz, LK LV ex (no uuid), LK XX, VG (no name), "what is this", info=lk w/o r
    assert_eq!(p.errors.len(), 7, "{:#?}", p.errors);
}

#[test]
fn metrics_golden_activated_host_1() {
    let (s, errors) = snapshot(
        "lvm/activated-h1-fullreport.json",
        Some("lvm/h1-lvmlockctl-info.txt"),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let text = render(|reg| vmwarden::metrics::lvm::encode(reg, &s));
    let lines = samples(&text);
    for want in [
        r#"vmwarden_lvm_lv_active{vg="vg1",lv="vm1",state="exclusive"} 1"#,
        r#"vmwarden_lvm_lv_active{vg="vg1",lv="vm2",state="shared"} 1"#,
        r#"vmwarden_lvm_lv_active{vg="vg1",lv="vm3",state="inactive"} 1"#,
        r#"vmwarden_lvm_lv_active{vg="vg_local",lv="data",state="local"} 1"#,
        r#"vmwarden_lvm_lv_size_bytes{vg="vg1",lv="vm1"} 67108864"#,
        r#"vmwarden_lvm_vg_info{vg="vg1",vg_uuid="fxU6SX-FZyF-MCaj-TI4N-he49-8wa9-kdQTAA",lock_type="sanlock",lock_args="1.0.0:lvmlock",shared="1",clustered="0"} 1"#,
        r#"vmwarden_lvm_vg_info{vg="vg_local",vg_uuid="PFt58z-00iG-Fxe8-ETl8-PDGd-ihyr-KxlThu",lock_type="none",lock_args="",shared="0",clustered="0"} 1"#,
        r#"vmwarden_lvm_lv_lock_info{vg="vg1",lv="vm2",mode="sh"} 1"#,
        r#"vmwarden_lvm_vg_lockspace_started{vg="vg1"} 1"#,
        "vmwarden_lvm_lockd_up 1",
    ] {
        assert!(lines.contains(&want), "missing {want}\n{text}");
    }
    // One state series per LV (the one it is in), none for the other states.
    assert!(
        !text.contains(r#"lv_active{vg="vg1",lv="vm2",state="exclusive"}"#),
        "{text}"
    );
    // Local VGs have no cluster lock and no lockspace.
    assert!(!text.contains(r#"lv_lock_info{vg="vg_local""#), "{text}");
    assert!(
        !text.contains(r#"vg_lockspace_started{vg="vg_local""#),
        "{text}"
    );
    golden("lvm/activated-h1.metrics", &sorted_metrics(&text));
}

#[test]
fn metrics_without_lvmlockd() {
    let (s, _) = snapshot("lvm/activated-h1-fullreport.json", None);
    let text = render(|reg| vmwarden::metrics::lvm::encode(reg, &s));
    let lines = samples(&text);
    assert!(lines.contains(&"vmwarden_lvm_lockd_up 0"), "{text}");
    assert!(
        lines.contains(&r#"vmwarden_lvm_lv_lock_info{vg="vg1",lv="vm1",mode="unknown"} 1"#),
        "{text}"
    );
    assert!(
        lines.contains(&r#"vmwarden_lvm_lv_active{vg="vg1",lv="vm1",state="local"} 1"#),
        "{text}"
    );
    assert!(!text.contains("vg_lockspace_started{"), "{text}");
}

#[test]
fn capture_script_runs_the_probe_command() {
    // scripts/capture-lvm-fixtures.sh must capture exactly what the probe runs.
    let script = support::repo().join("scripts/capture-lvm-fixtures.sh");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"eval "$(sed -n '/^FULLREPORT=(/,/)$/p' "$0")"; printf '%s\n' "${FULLREPORT[@]}""#)
        .arg(&script)
        .output()
        .unwrap();
    let got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(got, vmwarden::probe::lvm::fullreport_cmd("lvm").argv());
}

fn all_fixtures() -> Vec<String> {
    let dir = support::repo().join("tests/fixtures/lvm");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".json") || n.ends_with(".txt")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    v.sort();
    v
}

fn parse_all(text: &str) {
    let rep = parse_fullreport(text);
    let info = parse_lockctl_info(text);
    if let Ok(rep) = rep {
        let s = LvmSnapshot {
            vgs: rep.value.vgs,
            lvs: rep.value.lvs,
            lockd: LockdStatus::Up(info.value),
        };
        let _ = render(|reg| vmwarden::metrics::lvm::encode(reg, &s));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        parse_all(&String::from_utf8_lossy(&bytes));
    }

    /// JSON-shaped garbage: objects and arrays of random keys and values.
    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let doc = serde_json::json!({"report": [v]});
        parse_all(&doc.to_string());
        parse_all(&serde_json::json!({"report": [{"vg": [v.clone()], "lv": [v.clone()], "seg": [v]}]}).to_string());
    }

    /// Real captures with bytes deleted, replaced or cut: never a panic.
    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..16),
    ) {
        let all = all_fixtures();
        let mut bytes = all[which % all.len()].clone().into_bytes();
        for (idx, b, op) in edits {
            if bytes.is_empty() { break; }
            let i = idx.index(bytes.len());
            match op {
                0 => { bytes.remove(i); }
                1 => bytes[i] = b,
                _ => bytes.truncate(i),
            }
        }
        parse_all(&String::from_utf8_lossy(&bytes));
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let key = prop_oneof![
        Just("vg_name".to_string()),
        Just("lv_name".to_string()),
        Just("lv_uuid".to_string()),
        Just("lv_size".to_string()),
        Just("vg_size".to_string()),
        Just("lv_attr".to_string()),
        Just("lv_active_locally".to_string()),
        Just("vg_lock_type".to_string()),
        Just("devices".to_string()),
        "[a-z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,20}".prop_map(Value::String),
        "[0-9]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}
