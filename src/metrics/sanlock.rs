//! sanlock metrics. Host states keep sanlock's own spelling (LIVE, FAIL, DEAD, FREE, UNKNOWN), so
//! what an operator sees in `sanlock client gets -h 1` is what the dashboard shows.

use super::Registry;

use super::gauge;
use crate::probe::sanlock::{ListState, SanlockSnapshot};

/// Lockspace list states, as exported in `vmwarden_sanlock_lockspace_state`.
pub const LOCKSPACE_STATES: [&str; 3] = ["joined", "adding", "removing"];

fn lockspace_state(s: &ListState) -> &'static str {
    match s {
        ListState::Active => "joined",
        ListState::Adding => "adding",
        // A lockspace has no orphan list; should the daemon ever say so, it is on its way out.
        ListState::Removing | ListState::Orphan => "removing",
    }
}

pub fn encode(reg: &mut Registry, snap: &SanlockSnapshot) {
    let daemon_info = gauge(
        reg,
        "vmwarden_sanlock_daemon_info",
        "The local sanlock daemon: value 1; its host name (written into delta leases) and version in labels",
    );
    let ls_info = gauge(
        reg,
        "vmwarden_sanlock_lockspace_info",
        "A lockspace this host is in: value 1; this host's host_id and the lease path and offset in labels",
    );
    let ls_state = gauge(
        reg,
        "vmwarden_sanlock_lockspace_state",
        "Always 1; state: lockspace membership, joined, adding (add_lockspace in progress) or removing",
    );
    let age = gauge(
        reg,
        "vmwarden_sanlock_renewal_age_seconds",
        "Seconds since this host last renewed its delta lease in the lockspace, on sanlock's monotonic clock",
    );
    let last_result = gauge(
        reg,
        "vmwarden_sanlock_renewal_last_result",
        "Result of the last delta lease renewal: 1 = success, negative = sanlock error code (e.g. -202 I/O timeout)",
    );
    let io_timeout = gauge(
        reg,
        "vmwarden_sanlock_io_timeout_seconds",
        "The lockspace's I/O timeout; hosts are declared dead after about 8x this plus the watchdog time",
    );
    let space_dead = gauge(
        reg,
        "vmwarden_sanlock_lockspace_space_dead",
        "1 if the daemon gave up on the lockspace (renewals failed for too long: leases are lost), else 0",
    );
    let killing = gauge(
        reg,
        "vmwarden_sanlock_lockspace_killing_pids",
        "1 while the daemon is killing the lockspace's lease holders (renewal failure), else 0",
    );
    let read_s = gauge(
        reg,
        "vmwarden_sanlock_renewal_read_seconds",
        "Read latency of the last successful renewal (from the daemon's renewal history)",
    );
    let write_s = gauge(
        reg,
        "vmwarden_sanlock_renewal_write_seconds",
        "Write latency of the last successful renewal (from the daemon's renewal history)",
    );
    let hist_timeouts = gauge(
        reg,
        "vmwarden_sanlock_renewal_recent_timeouts",
        "Renewal attempts that timed out within the renewal history the daemon keeps (180 renewals by default)",
    );
    let hist_errors = gauge(
        reg,
        "vmwarden_sanlock_renewal_recent_errors",
        "Renewal attempts that failed with an I/O error within the renewal history the daemon keeps",
    );
    let host_state = gauge(
        reg,
        "vmwarden_sanlock_host_state",
        "Always 1; state: each host of the lockspace as this host sees it, in sanlock's spelling (LIVE, FAIL, DEAD, FREE, UNKNOWN)",
    );
    let host_gen = gauge(
        reg,
        "vmwarden_sanlock_host_generation",
        "Generation of each host in the lockspace (increments each time that host joins)",
    );
    let held = gauge(
        reg,
        "vmwarden_sanlock_resource_held",
        "A lease (resource) this host has: 1 held (or being released), 0 while still being acquired; mode ex or sh",
    );
    let owner = gauge(
        reg,
        "vmwarden_sanlock_resource_owner_pid",
        "Pid of the local process holding the lease (lvmlockd holds the LV leases of lvm_<vg> lockspaces)",
    );

    if let Some(d) = &snap.daemon {
        daemon_info.set(
            &[
                ("host_name", d.host_name.as_str()),
                ("version", d.version.as_deref().unwrap_or("")),
            ],
            1.0,
        );
    }

    for ls in &snap.lockspaces {
        let host_id = ls.host_id.to_string();
        let offset = ls.offset.to_string();
        let l = [("lockspace", ls.name.as_str())];
        ls_info.set(
            &[
                ("lockspace", ls.name.as_str()),
                ("host_id", host_id.as_str()),
                ("path", ls.path.as_str()),
                ("offset", offset.as_str()),
            ],
            1.0,
        );
        ls_state.set(&[l[0], ("state", lockspace_state(&ls.state))], 1.0);
        if let Some(a) = snap.renewal_age_seconds(ls) {
            age.set(&l, a as f64);
        }
        if let Some(v) = ls.renewal_last_result {
            last_result.set(&l, v as f64);
        }
        if let Some(v) = ls.io_timeout {
            io_timeout.set(&l, v as f64);
        }
        if let Some(v) = ls.space_dead {
            space_dead.set(&l, v as f64);
        }
        if let Some(v) = ls.killing_pids {
            killing.set(&l, v as f64);
        }
        if let Some(r) = &ls.renewal {
            read_s.set(&l, r.last_read_ms as f64 / 1000.0);
            write_s.set(&l, r.last_write_ms as f64 / 1000.0);
            hist_timeouts.set(&l, r.timeouts as f64);
            hist_errors.set(&l, r.errors as f64);
        }
        for h in ls.hosts.iter().flatten() {
            let hid = h.host_id.to_string();
            let hl = [("lockspace", ls.name.as_str()), ("host_id", hid.as_str())];
            host_state.set(&[hl[0], hl[1], ("state", h.state.as_str())], 1.0);
            host_gen.set(&hl, h.generation as f64);
        }
    }

    for r in &snap.resources {
        let rl = [
            ("lockspace", r.lockspace.as_str()),
            ("resource", r.name.as_str()),
            ("mode", r.mode.as_str()),
        ];
        let v = if r.state == ListState::Adding {
            0.0
        } else {
            1.0
        };
        held.set(&rl, v);
        if r.pid > 0 {
            owner.set(&rl, r.pid as f64);
        }
    }
}
