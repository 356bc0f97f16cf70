//! LVM metrics. An LV's `vmwarden_lvm_lv_active` state says `exclusive`/`shared` only when
//! lvmlockd said so (see `LvmSnapshot::lv_state`); `vmwarden_lvm_lv_lock_info` tells where the
//! knowledge came from (`mode="unknown"` when lvmlockd could not be asked).

use super::Registry;

use super::gauge;
use crate::probe::lvm::{LockdStatus, LvLock, LvState, LvmSnapshot};

fn bool_label(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

pub fn encode(reg: &mut Registry, snap: &LvmSnapshot) {
    let vg_info = gauge(
        reg,
        "vmwarden_lvm_vg_info",
        "A volume group: value 1; lock type (sanlock, dlm, none), lock args and whether it is shared in labels",
    );
    let vg_size = gauge(
        reg,
        "vmwarden_lvm_vg_size_bytes",
        "Size of the volume group",
    );
    let vg_free = gauge(
        reg,
        "vmwarden_lvm_vg_free_bytes",
        "Unallocated space in the volume group",
    );
    let ls_started = gauge(
        reg,
        "vmwarden_lvm_vg_lockspace_started",
        "Shared VGs: 1 if lvmlockd has the VG's lockspace (LVs can be locked here), 0 if not (vgchange --lock-start)",
    );
    let lockd_up = gauge(
        reg,
        "vmwarden_lvm_lockd_up",
        "1 if lvmlockd answered lvmlockctl --info, else 0 (it is needed only where a VG is shared)",
    );
    let lv_info = gauge(
        reg,
        "vmwarden_lvm_lv_info",
        "A logical volume: value 1; uuid (the sanlock resource name of its lock), attributes, paths, lock args and devices in labels",
    );
    let lv_size = gauge(
        reg,
        "vmwarden_lvm_lv_size_bytes",
        "Size of the logical volume",
    );
    let lv_active = gauge(
        reg,
        "vmwarden_lvm_lv_active",
        "Always 1; state: exclusive/shared = this host holds the LV lock in that mode (from lvmlockd); local = active without a known cluster lock; inactive",
    );
    let lv_lock = gauge(
        reg,
        "vmwarden_lvm_lv_lock_info",
        "LVs of shared VGs: value 1; the lock mode this host holds per lvmlockd (ex, sh, un), or unknown when lvmlockd could not be asked",
    );

    for vg in &snap.vgs {
        let lock_type = if vg.lock_type.is_empty() {
            "none"
        } else {
            vg.lock_type.as_str()
        };
        vg_info.set(
            &[
                ("vg", vg.name.as_str()),
                ("vg_uuid", vg.uuid.as_str()),
                ("lock_type", lock_type),
                ("lock_args", vg.lock_args.as_str()),
                ("shared", bool_label(vg.is_shared())),
                ("clustered", bool_label(vg.clustered)),
            ],
            1.0,
        );
        let l = [("vg", vg.name.as_str())];
        if let Some(b) = vg.size_bytes {
            vg_size.set(&l, b as f64);
        }
        if let Some(b) = vg.free_bytes {
            vg_free.set(&l, b as f64);
        }
        if vg.is_shared() {
            if let LockdStatus::Up(info) = &snap.lockd {
                let started = info.vgs.iter().any(|v| v.vg_name == vg.name);
                ls_started.set(&l, if started { 1.0 } else { 0.0 });
            }
        }
    }

    lockd_up.set(
        &[],
        if matches!(snap.lockd, LockdStatus::Up(_)) {
            1.0
        } else {
            0.0
        },
    );

    for lv in &snap.lvs {
        let l = [("vg", lv.vg.as_str()), ("lv", lv.name.as_str())];
        lv_info.set(
            &[
                ("vg", lv.vg.as_str()),
                ("lv", lv.name.as_str()),
                ("lv_uuid", lv.uuid.as_str()),
                ("attr", lv.attr.as_str()),
                ("path", lv.path.as_str()),
                ("dm_path", lv.dm_path.as_str()),
                ("lock_args", lv.lock_args.as_str()),
                ("devices", lv.devices.as_str()),
            ],
            1.0,
        );
        if let Some(b) = lv.size_bytes {
            lv_size.set(&l, b as f64);
        }
        let state: LvState = snap.lv_state(lv);
        lv_active.set(&[l[0], l[1], ("state", state.as_str())], 1.0);
        let lock = snap.lv_lock(lv);
        if lock != LvLock::NotShared {
            lv_lock.set(
                &[
                    ("vg", lv.vg.as_str()),
                    ("lv", lv.name.as_str()),
                    ("mode", lock.as_str()),
                ],
                1.0,
            );
        }
    }
}
