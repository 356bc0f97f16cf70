//! The maintenance marker: `STATE_DIR/maintenance/VM.json`, written by `ctl disks activate` once
//! the VM's disks are locked and active here, removed by `ctl disks deactivate`. The lock is what
//! keeps other nodes out; the marker is what lets every refusal say *why* (and this node's own
//! start, which the lock would let through, is refused on it). `vmwarden check` reports markers
//! older than `[lifecycle] maintenance_warn_seconds`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub vm: String,
    pub node: String,
    pub since_unix: u64,
    pub action_id: String,
    /// Device paths shown to the operator (LVs, mapped partitions).
    #[serde(default)]
    pub devices: Vec<String>,
}

pub fn dir(state_dir: &str) -> PathBuf {
    Path::new(state_dir).join("maintenance")
}

fn path(state_dir: &str, vm: &str) -> PathBuf {
    dir(state_dir).join(format!("{vm}.json"))
}

pub fn write(state_dir: &str, m: &Marker) -> std::io::Result<()> {
    std::fs::create_dir_all(dir(state_dir))?;
    let p = path(state_dir, &m.vm);
    let tmp = p.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(m).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    std::fs::File::open(dir(state_dir))?.sync_all()
}

pub fn read(state_dir: &str, vm: &str) -> Option<Marker> {
    let text = std::fs::read(path(state_dir, vm)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Remove the marker (absent is fine).
pub fn clear(state_dir: &str, vm: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path(state_dir, vm)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn all(state_dir: &str) -> Vec<Marker> {
    let Ok(rd) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mut v: Vec<Marker> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    v.sort_by(|a, b| a.vm.cmp(&b.vm));
    v
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ago(secs: u64) -> String {
    if secs >= 7200 {
        format!("{:.1} h", secs as f64 / 3600.0)
    } else if secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

impl Marker {
    /// Why a start (or anything else wanting the disks) is refused.
    pub fn refusal(&self, now: u64) -> String {
        format!(
            "{}'s disks are activated for maintenance on node {} (for {}, `vmwarden ctl disks activate`, action {}): its lock is held there for the maintenance — finish it and run `vmwarden ctl disks deactivate {}` on {} first",
            self.vm,
            self.node,
            ago(now.saturating_sub(self.since_unix)),
            self.action_id,
            self.vm,
            self.node
        )
    }
}

/// `vmwarden check`'s maintenance section: every marker, and whether one is older than
/// `warn_seconds` (which fails the check).
pub fn report(markers: &[Marker], now: u64, warn_seconds: f64) -> (String, bool) {
    let mut out = String::new();
    let mut stale = false;
    for m in markers {
        let age = now.saturating_sub(m.since_unix);
        if age as f64 > warn_seconds {
            stale = true;
            out.push_str(&format!(
                "MAINTENANCE: {}'s disks have been activated for maintenance on {} for {} (more than [lifecycle] maintenance_warn_seconds = {warn_seconds}); its lock stays held and it cannot start anywhere — when done: `vmwarden ctl disks deactivate {}`\n",
                m.vm,
                m.node,
                ago(age),
                m.vm
            ));
        } else {
            out.push_str(&format!(
                "maintenance: {}'s disks activated on {} for {} ({})\n",
                m.vm,
                m.node,
                ago(age),
                m.devices.join(", ")
            ));
        }
    }
    (out, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(vm: &str, since: u64) -> Marker {
        Marker {
            vm: vm.into(),
            node: "n1".into(),
            since_unix: since,
            action_id: format!("{vm}-activate-disks-1"),
            devices: vec![format!("/dev/vg1/{vm}")],
        }
    }

    #[test]
    fn files_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let sd = d.path().to_str().unwrap();
        assert!(read(sd, "vm1").is_none());
        write(sd, &m("vm1", 5)).unwrap();
        write(sd, &m("vm0", 7)).unwrap();
        assert_eq!(read(sd, "vm1").unwrap(), m("vm1", 5));
        assert_eq!(
            all(sd).iter().map(|x| x.vm.as_str()).collect::<Vec<_>>(),
            ["vm0", "vm1"]
        );
        clear(sd, "vm1").unwrap();
        clear(sd, "vm1").unwrap();
        assert!(read(sd, "vm1").is_none());
    }

    #[test]
    fn check_reports_old_markers() {
        let (t, stale) = report(&[m("vm1", 1000)], 1000 + 3600, 86400.0);
        assert!(
            !stale && t.contains("vm1's disks activated on n1 for 60 min"),
            "{t}"
        );
        let (t, stale) = report(&[m("vm1", 1000), m("vm2", 90_000)], 1000 + 90_000, 86400.0);
        assert!(stale, "{t}");
        assert!(
            t.contains(
                "MAINTENANCE: vm1's disks have been activated for maintenance on n1 for 25.0 h"
            ),
            "{t}"
        );
        assert!(t.contains("vmwarden ctl disks deactivate vm1"));
        assert!(t.contains("maintenance: vm2"));
        let r = m("vm1", 100).refusal(400);
        assert!(
            r.contains("on node n1") && r.contains("disks deactivate vm1") && r.contains("5 min"),
            "{r}"
        );
    }
}
