//! Degraded sanlock, lvmlockctl and lvm input (issue 16, part 3): cut last lines, output that
//! yields nothing, lvm JSON with missing columns, sizes with units and warnings around it.

#[path = "support/executable.rs"]
mod executable;

use std::time::Duration;

use vmwarden::config::SanlockConfig;
use vmwarden::probe::lvm::{parse_fullreport, parse_lockctl_info, LockMode};
use vmwarden::probe::sanlock::{parse_gets, parse_renewal, parse_status, probe};
use vmwarden::probe::ProbeError;

const STATUS: &str = "daemon 5e2d-host\n    our_host_name=5e2d-host\n    monotime=100\ns lvm_vg1:1:/dev/mapper/vg1-lvmlock:0\n    renewal_last_result=1\n";

/// A cut last line of each sanlock output is skipped and counted: `s lvm_vg` would be a
/// lockspace named after a prefix, `h 2 gen 1 timestamp 9 LI` a host state `LI`.
#[test]
fn sanlock_cut_last_lines_are_skipped() {
    let p = parse_status(&format!("{STATUS}s lvm_vg2:1:/dev/mapper/vg2-lvm"));
    let names: Vec<&str> = p.value.lockspaces.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lvm_vg1"]);
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(p.errors[0].contains("cut short"), "{:?}", p.errors);
    // A cut detail line must not give a wrong number (renewal_last_result=1 cut from =-110).
    let p = parse_status(&format!("{STATUS}    renew_fail=1"));
    assert_eq!(p.value.lockspaces[0].renew_fail, None);
    assert_eq!(p.errors.len(), 1);

    let g = parse_gets("s lvm_vg1:1:/dev/mapper/vg1-lvmlock:0\nh 1 gen 3 timestamp 90 LIVE\nh 2 gen 1 timestamp 9 LI");
    let hosts = g.value[0].hosts.as_ref().expect("hosts");
    assert_eq!(hosts.len(), 1, "host 2's state `LI` is not kept");
    assert_eq!(g.errors.len(), 1, "{:?}", g.errors);

    let r = parse_renewal("timestamp=10 read_ms=1 write_ms=2 next_timeouts=0 next_errors=0\ntimestamp=20 read_ms=1 write_ms=2 next_timeouts=");
    assert_eq!(r.value.expect("one entry").entries, 1);
    assert_eq!(r.errors.len(), 1);
}

/// `sanlock client status` output that parses to nothing is a failed collection whose message
/// says what was seen, never a success with zero lockspaces.
#[tokio::test]
async fn sanlock_output_with_nothing_usable_is_a_failed_collection() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "garbage",
            "printf 'hello world\\nsomething else\\n'",
            "unrecognized line",
        ),
        (
            "dashes",
            "printf -- '-\\n-\\n'",
            "no daemon, client, lockspace or resource",
        ),
        ("cut", "printf 'daemon 5e2d-h'", "cut short"),
    ];
    let mut paths = Vec::new();
    for (name, body, _) in cases {
        let path = dir.path().join(name);
        executable::executable(&path, &format!("#!/bin/sh\n{body}\n"));
        paths.push(path.display().to_string());
    }
    for ((name, _, want), sanlock) in cases.iter().zip(paths) {
        let cfg = SanlockConfig {
            enabled: true,
            sanlock,
        };
        match probe(&cfg, Duration::from_secs(5)).await {
            Err(ProbeError::Failed(m)) => {
                assert!(m.contains("nothing vmwarden can read"), "{name}: {m}");
                assert!(m.contains(want), "{name}: {m}");
            }
            other => panic!("{name}: expected Failed, got {other:?}"),
        }
    }
}

/// A cut `LK LV e` (from `ex`) is not a lock line: skipped and counted.
#[test]
fn lvmlockctl_cut_last_line_is_skipped() {
    let p = parse_lockctl_info("VG vg1 lock_type=sanlock u1\nLK LV sh a\nLK LV ex b");
    let locks = &p.value.vgs[0].lv_locks;
    assert_eq!(locks, &vec![("a".to_string(), LockMode::Sh)]);
    assert_eq!(p.errors.len(), 1);
    assert!(p.errors[0].contains("cut short"), "{:?}", p.errors);
}

fn report(vg_row: &str, lv_row: &str) -> String {
    format!(r#"{{"report":[{{"vg":[{vg_row}],"lv":[{lv_row}]}}]}}"#)
}

const VG: &str = r#"{"vg_name":"vg1","vg_uuid":"U","vg_lock_type":"sanlock","vg_lock_args":"1.0.0:lvmlock","vg_size":"1073741824","vg_free":"0","vg_shared":"1","vg_clustered":"0","vg_attr":"wz--ns"}"#;
const LV: &str = r#"{"vg_name":"vg1","lv_name":"lv1","lv_uuid":"L","lv_size":"4194304","lv_active":"active","lv_active_locally":"1","lv_active_remotely":"0","lv_active_exclusively":"1","lv_lock_args":"1.0.0:70254592","lv_attr":"-wi-a-----","lv_path":"/dev/vg1/lv1","lv_dm_path":"/dev/mapper/vg1-lv1"}"#;

/// Warnings printed on stdout before (or text after) the JSON cost a counted message each,
/// not the report.
#[test]
fn lvm_warnings_around_the_json_are_counted_not_fatal() {
    let text = format!(
        "  WARNING: Not using device /dev/sdb for PV abc.\n  WARNING: PV abc prefers device /dev/sdc.\n{}\n  WARNING: after\n",
        report(VG, LV)
    );
    let p = parse_fullreport(&text).expect("the report is still read");
    assert_eq!(p.value.vgs.len(), 1);
    assert_eq!(p.value.lvs[0].size_bytes, Some(4 << 20));
    assert_eq!(p.errors.len(), 3, "{:?}", p.errors);
    assert!(p.errors[0].contains("Not using device"), "{:?}", p.errors);
    assert!(p.errors[2].contains("after"), "{:?}", p.errors);
    // Only warnings: no report, said so.
    let e = parse_fullreport("  WARNING: locking failed.\n").unwrap_err();
    assert!(
        e.contains("not JSON") && e.contains("locking failed"),
        "{e}"
    );
}

/// Sizes with units are exact only as a whole number of the unit; a rounded or unit-less
/// fraction is not exported (it used to be rounded down: `1.99` read as 1 byte).
#[test]
fn lvm_sizes_with_units_are_read_exactly_or_not_at_all() {
    for (size, want) in [
        ("4194304", Some(4u64 << 20)),
        ("4194304B", Some(4 << 20)),
        ("4.00m", Some(4 << 20)),
        ("2g", Some(2 << 30)),
        ("8192s", Some(8192 * 512)),
        ("3.00G", Some(3_000_000_000)),
        ("1.99g", None),
        ("<2.00g", None),
        ("1.99", None),
        ("12x", None),
        ("", None),
    ] {
        let lv = LV.replace(r#""lv_size":"4194304""#, &format!(r#""lv_size":"{size}""#));
        let p = parse_fullreport(&report(VG, &lv)).unwrap();
        assert_eq!(p.value.lvs[0].size_bytes, want, "{size:?}");
        assert_eq!(
            p.errors.len(),
            usize::from(want.is_none()),
            "{size:?}: {:?}",
            p.errors
        );
    }
}

/// Rows lacking a column vmwarden asked for: the next best column, else the row is skipped;
/// never a shared VG read as local or a locked LV read as unlocked.
#[test]
fn lvm_rows_missing_columns_use_the_next_best_or_are_skipped() {
    let drop = |row: &str, keys: &[&str]| {
        let mut v: serde_json::Value = serde_json::from_str(row).unwrap();
        for k in keys {
            v.as_object_mut().unwrap().remove(*k);
        }
        v.to_string()
    };
    // No lock type: vg_shared says shared.
    let p = parse_fullreport(&report(&drop(VG, &["vg_lock_type"]), LV)).unwrap();
    assert!(p.value.vgs[0].is_shared());
    // No lock type, no vg_shared: vg_attr's `s`.
    let p = parse_fullreport(&report(&drop(VG, &["vg_lock_type", "vg_shared"]), LV)).unwrap();
    assert!(p.value.vgs[0].is_shared());
    // None of the three: skipped, not "local".
    let p = parse_fullreport(&report(
        &drop(VG, &["vg_lock_type", "vg_shared", "vg_attr"]),
        LV,
    ))
    .unwrap();
    assert!(p.value.vgs.is_empty());
    assert!(
        p.errors.iter().any(|e| e.contains("VG skipped")),
        "{:?}",
        p.errors
    );
    // An LV without its uuid or without any activity column: skipped.
    for keys in [
        &["lv_uuid"][..],
        &["lv_active", "lv_active_locally", "lv_attr"],
    ] {
        let p = parse_fullreport(&report(VG, &drop(LV, keys))).unwrap();
        assert!(p.value.lvs.is_empty(), "{keys:?}");
        assert_eq!(p.errors.len(), 1, "{keys:?}: {:?}", p.errors);
    }
    // A missing size: no size, the LV kept.
    let p = parse_fullreport(&report(VG, &drop(LV, &["lv_size"]))).unwrap();
    assert_eq!(p.value.lvs[0].size_bytes, None);
    assert!(p.errors[0].contains("lv_size missing"), "{:?}", p.errors);
}
