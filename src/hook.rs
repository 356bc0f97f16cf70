//! The libvirt qemu hook: `vmwarden hook qemu DOMAIN OP SUBOP [EXTRA]` with the domain XML on
//! stdin, installed as /etc/libvirt/hooks/qemu (a symlink to the vmwarden binary works: called
//! as `.../hooks/qemu`, vmwarden acts as the hook). It makes plain `virsh start` and `virsh
//! migrate` as safe as `vmwarden ctl`:
//!
//! - `prepare begin` (before qemu starts): the VM's lock must be held here — exclusive (a start;
//!   taken now if needed, and a refusal aborts the start, naming the holder) or shared, and then
//!   only as the incoming end of a migration vmwarden declared whose libvirt part has begun.
//! - `migrate begin` (incoming migration, on the target): allowed only when vmwarden declared
//!   this migration to this node (`STATE_DIR/incoming/VM`, written by this node's agent when the
//!   source's agent asked it to join the lock); the lock is then held (or taken) shared. A plain
//!   `virsh migrate` is refused at once, naming the node that holds the lock — also in the
//!   window after a vmwarden migration's switchover, when the source still holds a share.
//! - `started begin`: the sanlock lease is tied to qemu's pid.
//! - `release end` (qemu is gone): the lock is released — except the share of a declared
//!   incoming migration whose libvirt part has not begun (the qemu that went was a refused start).
//!
//! Domains without a lockable disk (lvmlockd backend and no disk on an LV) are not vmwarden's:
//! the hook lets them pass, and says so in libvirt's log.

use crate::actions::journal;
use crate::actions::vmlocks::VmLocks;
use crate::config::Config;
use crate::lock::{validate_name, Held, LockOp, NameKind};

/// Disk sources (device `disk` or `lun`) from the domain XML libvirt passes on stdin.
pub fn disk_sources(xml: &str) -> Vec<String> {
    crate::probe::libvirt::lockable_sources(
        &crate::probe::libvirt::xml::parse_domain_xml(xml)
            .value
            .disks,
    )
}

/// Run the hook; `Err(message)` makes libvirt abort the operation (for the ops that can be
/// aborted) and shows the message to whoever ran it.
pub async fn qemu(
    cfg: &Config,
    domain: &str,
    op: &str,
    subop: &str,
    xml: &str,
) -> Result<(), String> {
    let acts = matches!(
        (op, subop),
        ("prepare", "begin") | ("migrate", "begin") | ("started", "begin") | ("release", "end")
    );
    if !acts {
        return Ok(());
    }
    validate_name(NameKind::Vm, domain).map_err(|e| e.to_string())?;
    let disks = disk_sources(xml);
    let locks = match VmLocks::for_vm(cfg, domain, &disks) {
        Ok(Some(l)) => l,
        Ok(None) => {
            eprintln!("vmwarden hook: {domain} has no disk vmwarden locks ({disks:?}): not managed, allowed");
            return Ok(());
        }
        Err(e) => return Err(format!("vmwarden: {domain}: {e}")),
    };
    let sd = &cfg.cluster.state_dir;
    if (op, subop) == ("prepare", "begin") {
        // Disks activated for maintenance here: the lock is this node's, so only the marker
        // stops a plain `virsh start`.
        if let Some(m) = crate::actions::lifecycle::maintenance_refusal(sd, domain) {
            return Err(format!("vmwarden refuses to start {domain}: {m}"));
        }
    }
    match (op, subop) {
        ("prepare", "begin") => match locks.mode().await.map_err(|e| e.to_string())? {
            Held::Exclusive => Ok(()),
            // Shared only for the incoming end of a declared migration whose libvirt part has
            // begun: a plain `virsh start` in that window would run the VM twice.
            Held::Shared => match journal::incoming_declared(cfg, domain) {
                Some(m) if m.libvirt_began_unix.is_some() => Ok(()),
                _ => Err(format!(
                    "vmwarden refuses to start {domain} here: its lock is held shared on this node for a live migration in progress, and a start now would run it twice — wait for the migration to finish (`vmwarden ctl status {domain}`)"
                )),
            },
            Held::None => locks
                .apply(LockOp::AcquireExclusive)
                .await
                .map_err(|e| {
                    let why = crate::actions::name_holder(cfg, &e).unwrap_or_else(|| e.to_string());
                    format!("vmwarden refuses to start {domain} here: {why}")
                }),
        },
        ("migrate", "begin") => {
            // Only a migration vmwarden declared to this node gets in (the source's agent asked
            // this node's agent to join the lock): a lock that merely happens to be shared — the
            // source's own share during the window after libvirt's switchover, say — is not
            // a way in. Refused at once, naming who holds the lock.
            let Some(mut m) = journal::incoming_declared(cfg, domain) else {
                let holder = match locks.other_holder().await {
                    Some(h) => match crate::actions::node_of_host(cfg, h) {
                        Some(n) => format!("; its lock is held by host {h} (node {n})"),
                        None => format!("; its lock is held by host {h}"),
                    },
                    None => String::new(),
                };
                return Err(format!(
                    "vmwarden refuses this incoming migration of {domain}: no vmwarden migration of it to node {} was declared{holder} — live migrations must go through `vmwarden ctl migrate {domain} --to {}`, which hands the lock over",
                    cfg.node_name(),
                    cfg.node_name()
                ));
            };
            match locks.mode().await.map_err(|e| e.to_string())? {
                Held::Shared => {}
                Held::Exclusive => {
                    return Err(format!(
                        "vmwarden: {domain}'s lock is held exclusively on this node: it cannot be migrated in"
                    ))
                }
                Held::None => locks.apply(LockOp::AcquireShared).await.map_err(|e| {
                    format!(
                        "vmwarden refuses this incoming migration of {domain}: {e} — live migrations must go through `vmwarden ctl migrate {domain} --to NODE`, which hands the lock over"
                    )
                })?,
            }
            m.libvirt_began_unix = Some(crate::actions::journal::now_unix());
            journal::write_incoming(sd, domain, &m).map_err(|e| format!("vmwarden: {e}"))
        }
        ("started", "begin") => {
            if let Some(pid) = crate::actions::plan_qemu_pid(cfg, domain) {
                if let Err(e) = locks.attach_vm(pid).await {
                    eprintln!("vmwarden hook: could not tie {domain}'s lease to qemu {pid}: {e}");
                }
            }
            Ok(())
        }
        ("release", "end") => {
            // A declared incoming migration whose libvirt part has not begun owns this node's
            // share: the qemu that just went was a start refused above, not the migration's.
            if journal::incoming(sd, domain).is_some_and(|m| m.libvirt_began_unix.is_none()) {
                eprintln!("vmwarden hook: {domain}: keeping the shared lock of the migration declared to this node");
                return Ok(());
            }
            if let Err(e) = locks.apply(LockOp::Release).await {
                // Nothing to abort any more: say it loudly; `vmwarden check` shows the leak.
                eprintln!("vmwarden hook: {domain} stopped but its lock could not be released: {e}");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_of_disks_only() {
        let xml = "<domain><name>a</name><devices>
          <disk type='block' device='disk'><source dev='/dev/vg1/a'/><target dev='vda'/></disk>
          <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda'/></disk>
          <disk type='file' device='disk'><source file='/srv/b.raw'/><target dev='vdb'/></disk>
        </devices></domain>";
        assert_eq!(disk_sources(xml), vec!["/dev/vg1/a", "/srv/b.raw"]);
        assert!(disk_sources("not xml").is_empty());
    }
}
