//! DRBD metrics. Volume families carry `resource, volume, minor`; peer families add `peer`.
//! States are not StateSets: one series per volume (`vmwarden_drbd_state`: role, disk state) and
//! one per peer (`vmwarden_drbd_peer_state`: connection, replication, peer role, peer disk state)
//! carry the current states as labels at value 1, in DRBD's spelling (an unknown state included).
//! A 0/1 series per possible state cost 54 of the 69 series of a volume with one peer; the
//! budget and its defence are in `docs/metrics.md` § Series budget. The mapping of 8.x onto
//! these labels is described in `probe::drbd` and `docs/metrics.md`.

use super::{counter, gauge, GaugeFam, LabelSet, Registry};
use crate::probe::drbd::DrbdSnapshot;

pub fn encode(reg: &mut Registry, snap: &DrbdSnapshot) {
    let info = gauge(
        reg,
        "vmwarden_drbd_info",
        "Always 1: where DRBD status was read (proc = /proc/drbd of 8.x, drbdsetup-json = DRBD 9) and the kernel module version",
    );
    // Volume families.
    let state = gauge(
        reg,
        "vmwarden_drbd_state",
        "Always 1: the volume's current role and local disk state in labels, as DRBD spells them",
    );
    let quorum = gauge(
        reg,
        "vmwarden_drbd_quorum",
        "1 if the volume has quorum (DRBD 9 only)",
    );
    let io_suspended = gauge(
        reg,
        "vmwarden_drbd_io_suspended",
        "1 if I/O to the device is suspended",
    );
    let split_brain = gauge(
        reg,
        "vmwarden_drbd_split_brain",
        "1 if DRBD's split-brain handler (vmwarden drbd-handler split-brain) reported a split brain and the peers have not reconnected since",
    );
    let size = gauge(
        reg,
        "vmwarden_drbd_size_bytes",
        "Size of the device in bytes (DRBD 9 only)",
    );
    let read = counter(
        reg,
        "vmwarden_drbd_disk_read_bytes_total",
        "Data read from the local backing disk, in bytes (wraps at 4 TiB on 8.x)",
    );
    let written = counter(
        reg,
        "vmwarden_drbd_disk_written_bytes_total",
        "Data written to the local backing disk, in bytes (wraps at 4 TiB on 8.x)",
    );
    let al = counter(
        reg,
        "vmwarden_drbd_activity_log_writes_total",
        "Activity log metadata updates",
    );
    let bm = counter(
        reg,
        "vmwarden_drbd_bitmap_writes_total",
        "Bitmap metadata updates",
    );
    let lower = gauge(
        reg,
        "vmwarden_drbd_lower_pending",
        "Requests open to the local backing disk",
    );
    let upper = gauge(
        reg,
        "vmwarden_drbd_upper_pending",
        "Application requests accepted by DRBD and not yet completed",
    );
    // Peer families.
    let peer_state = gauge(
        reg,
        "vmwarden_drbd_peer_state",
        "Always 1: connection and replication state with the peer, its role and disk state in labels, as DRBD spells them",
    );
    let oos = gauge(
        reg,
        "vmwarden_drbd_out_of_sync_bytes",
        "Data known to be out of sync with the peer, in bytes",
    );
    let sent = counter(
        reg,
        "vmwarden_drbd_network_sent_bytes_total",
        "Data sent to the peer, in bytes (wraps at 4 TiB on 8.x)",
    );
    let received = counter(
        reg,
        "vmwarden_drbd_network_received_bytes_total",
        "Data received from the peer, in bytes (wraps at 4 TiB on 8.x)",
    );
    let pending = gauge(
        reg,
        "vmwarden_drbd_peer_pending",
        "Requests sent to the peer and not yet answered",
    );
    let unacked = gauge(
        reg,
        "vmwarden_drbd_peer_unacked",
        "Requests received from the peer and not yet answered",
    );
    let congested = gauge(
        reg,
        "vmwarden_drbd_peer_congested",
        "1 if the network to the peer is congested",
    );
    let rs_suspended = gauge(
        reg,
        "vmwarden_drbd_resync_suspended",
        "1 if resync with the peer is suspended (by the user, the peer or a resync-after dependency)",
    );
    let done = gauge(
        reg,
        "vmwarden_drbd_resync_done_ratio",
        "Progress of the running resync or online verify, 0 to 1 (only while one runs)",
    );
    let remaining = gauge(
        reg,
        "vmwarden_drbd_resync_remaining_bytes",
        "Data the running resync or verify still has to do, in bytes",
    );
    let finish = gauge(
        reg,
        "vmwarden_drbd_resync_remaining_seconds",
        "DRBD's estimate of the time the running resync or verify still needs",
    );
    let speed = gauge(
        reg,
        "vmwarden_drbd_resync_speed_bytes_per_second",
        "Recent speed of the running resync or verify",
    );
    let want = gauge(
        reg,
        "vmwarden_drbd_resync_want_bytes_per_second",
        "Target rate of DRBD's dynamic resync controller",
    );

    let version = snap.version.as_deref().unwrap_or("unknown");
    info.set(
        &[("source", snap.source.as_str()), ("version", version)],
        1.0,
    );

    let bool01 = |b: bool| if b { 1.0 } else { 0.0 };
    for v in &snap.volumes {
        let minor = v.minor.to_string();
        let volume = v.volume.to_string();
        // Spelled once for the volume's families (and once more with the peer for each peer's):
        // escaping them again per family was most of building a large scrape.
        let l = LabelSet::new(&[
            ("resource", v.resource.as_str()),
            ("volume", volume.as_str()),
            ("minor", minor.as_str()),
        ]);
        state.set_in(
            &l.with(&[
                ("role", v.role.as_str()),
                ("disk_state", v.disk_state.as_str()),
            ]),
            1.0,
        );
        if let Some(q) = v.quorum {
            quorum.set_in(&l, bool01(q));
        }
        io_suspended.set_in(&l, bool01(v.io_suspended));
        split_brain.set_in(&l, bool01(v.split_brain.is_some()));
        let opt = |fam: &GaugeFam, x: Option<u64>| {
            if let Some(x) = x {
                fam.set_in(&l, x as f64);
            }
        };
        opt(&size, v.size_bytes);
        opt(&lower, v.lower_pending);
        opt(&upper, v.upper_pending);
        for (fam, x) in [
            (&read, v.read_bytes),
            (&written, v.written_bytes),
            (&al, v.al_writes),
            (&bm, v.bm_writes),
        ] {
            if let Some(x) = x {
                fam.set_in(&l, x as f64);
            }
        }

        for p in &v.peers {
            let pl = l.with(&[("peer", p.name.as_ref())]);
            peer_state.set_in(
                &pl.with(&[
                    ("connection", p.connection.as_str()),
                    ("replication", p.replication.as_str()),
                    ("peer_role", p.role.as_str()),
                    ("peer_disk_state", p.disk_state.as_str()),
                ]),
                1.0,
            );
            let opt = |fam: &GaugeFam, x: Option<u64>| {
                if let Some(x) = x {
                    fam.set_in(&pl, x as f64);
                }
            };
            opt(&oos, p.out_of_sync_bytes);
            opt(&pending, p.pending);
            opt(&unacked, p.unacked);
            if let Some(x) = p.sent_bytes {
                sent.set_in(&pl, x as f64);
            }
            if let Some(x) = p.received_bytes {
                received.set_in(&pl, x as f64);
            }
            if let Some(c) = p.congested {
                congested.set_in(&pl, bool01(c));
            }
            rs_suspended.set_in(&pl, bool01(p.resync_suspended.any()));
            if let Some(r) = &p.resync {
                if let Some(d) = r.done_ratio {
                    done.set_in(&pl, d);
                }
                opt(&remaining, r.remaining_bytes);
                opt(&finish, r.finish_seconds);
                opt(&speed, r.speed_bytes_per_second);
                opt(&want, r.want_bytes_per_second);
            }
        }
    }
}
