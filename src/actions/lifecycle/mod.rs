//! The rest of a VM's life (issue 14): create, grow, disks activate/deactivate (maintenance),
//! remove — each a plan of steps in the same engine as start/stop/migrate (journal, dry run,
//! rollback, recovery from what libvirt, lvm and the locks show). docs/lifecycle.md.
//!
//! - create: preflight (name free in the cluster: definitions here and on every peer, the LV or
//!   file; room in the VG; the XML names the VM) → [lease slot initialised] → `lvcreate -an`
//!   (→ `lvremove`) → [lock ex → `qemu-img convert -n -O raw` → release] → define with intent
//!   stopped (→ undefine).
//! - grow: where the VM runs (asked of that agent when elsewhere): `lvextend` under the lock held
//!   for the running VM (commit), `virsh blockresize`; stopped: lock ex → lvextend → release.
//! - disks activate: lock ex here (= the LVs active here) → maintenance marker → partitions
//!   (kpartx); deactivate: the reverse.
//! - remove: lock ex here (proves it runs nowhere) → undefine here (→ define again) → undefine on
//!   peers → `lvremove` (commit) → release (or `--keep-disks`).

pub mod maintenance;
pub mod size;
pub mod storage;
pub mod xml;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{Journal, ReadJournal, Record};
use super::virsh::DomState;
use super::{state_refusal, ActionError, ActionKind, ActionReport, ActionRequest, Ctx, Engine};
use crate::api::peer::{PeerOp, PeerReply, PeerRequest};
use crate::exec::Cmd;
use crate::lock::{validate_name, LockError, LockOp, NameKind};
use size::{human, parse_growth, parse_size, Growth};
use storage::DiskRef;

/// What the lifecycle actions need beyond the VM's name (`ActionRequest::lifecycle`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// create: the disk's size (`8G`); grow: `+SIZE` or `SIZE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// create: the VG (else `[lifecycle] vg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vg: Option<String>,
    /// create: an image file on this node copied into the disk (raw, qcow2, anything qemu-img reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// create: the domain XML (its text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xml: Option<String>,
    /// grow: the disk, by target (`vda`) or source path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// remove: leave the disks in place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_disks: bool,
}

impl Params {
    pub fn is_empty(&self) -> bool {
        *self == Params::default()
    }
}

/// Worked out before planning (so `--dry-run` prints concrete commands).
#[derive(Debug, Clone, Default)]
pub struct Prep {
    pub params: Params,
    /// create: the disk to make; grow: the disk to grow.
    pub disk: Option<DiskRef>,
    /// create: bytes.
    pub size: u64,
    /// grow.
    pub growth: Option<Growth>,
    /// grow: the disk's target (`vda`).
    pub target: String,
}

pub fn is_lifecycle(k: ActionKind) -> bool {
    matches!(
        k,
        ActionKind::Create
            | ActionKind::Grow
            | ActionKind::ActivateDisks
            | ActionKind::DeactivateDisks
            | ActionKind::Remove
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LStep {
    CreatePreflight,
    LeaseInit,
    DiskCreate,
    ImageCopy,
    Define,
    GrowPreflight,
    ExtendDisk,
    BlockResize,
    DisksPreflight,
    ActivateLvs,
    MarkMaintenance,
    MapPartitions,
    UndisksPreflight,
    UnmapPartitions,
    DeactivateLvs,
    ClearMaintenance,
    RemovePreflight,
    Undefine,
    UndefinePeers,
    RemoveDisks,
    ReleaseAfterRemove,
}

impl LStep {
    pub fn name(self) -> &'static str {
        use LStep::*;
        match self {
            CreatePreflight => "create_preflight",
            LeaseInit => "lease_init",
            DiskCreate => "disk_create",
            ImageCopy => "image_copy",
            Define => "define",
            GrowPreflight => "grow_preflight",
            ExtendDisk => "extend_disk",
            BlockResize => "blockresize",
            DisksPreflight => "disks_preflight",
            ActivateLvs => "activate_lvs",
            MarkMaintenance => "mark_maintenance",
            MapPartitions => "map_partitions",
            UndisksPreflight => "deactivate_preflight",
            UnmapPartitions => "unmap_partitions",
            DeactivateLvs => "deactivate_lvs",
            ClearMaintenance => "clear_maintenance",
            RemovePreflight => "remove_preflight",
            Undefine => "undefine",
            UndefinePeers => "undefine_peers",
            RemoveDisks => "remove_disks",
            ReleaseAfterRemove => "release_after_remove",
        }
    }

    pub fn commits(self) -> bool {
        matches!(self, LStep::ExtendDisk | LStep::RemoveDisks)
    }

    pub fn forward_only(self) -> bool {
        matches!(self, LStep::BlockResize | LStep::ReleaseAfterRemove)
    }

    pub fn changes(self) -> bool {
        !matches!(
            self,
            LStep::CreatePreflight
                | LStep::GrowPreflight
                | LStep::DisksPreflight
                | LStep::UndisksPreflight
                | LStep::RemovePreflight
        )
    }

    pub fn has_undo(self) -> bool {
        matches!(
            self,
            LStep::DiskCreate
                | LStep::Define
                | LStep::ActivateLvs
                | LStep::MarkMaintenance
                | LStep::MapPartitions
                | LStep::Undefine
        )
    }

    pub fn cannot_undo(self) -> &'static str {
        match self {
            LStep::LeaseInit => "the lease slot was initialised (free, harmless)",
            LStep::ImageCopy => "the image was written into the new disk",
            LStep::UndefinePeers => "stale definitions on peers were undefined",
            LStep::UnmapPartitions => "the partition mappings were removed",
            _ => "it has no undo",
        }
    }
}

/// The steps of a lifecycle action.
pub(crate) fn plan(ctx: &Ctx<'_>, kind: ActionKind) -> Result<Vec<super::Step>, ActionError> {
    use super::Step::{Life as L, LockExclusive, ReleaseLock};
    use LStep::*;
    let cfg = &ctx.engine.cfg;
    let sanlock = cfg.lock.backend == "sanlock";
    let disks: Vec<DiskRef> = ctx.disks.iter().map(|d| DiskRef::of_path(d)).collect();
    let any_lv = disks.iter().any(|d| matches!(d, DiskRef::Lv { .. }));
    Ok(match kind {
        ActionKind::Create => {
            let mut s = vec![L(CreatePreflight)];
            if sanlock {
                s.push(L(LeaseInit));
            }
            s.push(L(DiskCreate));
            if ctx.life.params.from_image.is_some() {
                s.extend([LockExclusive, L(ImageCopy), ReleaseLock]);
            }
            s.push(L(Define));
            s
        }
        ActionKind::Grow => {
            let file = matches!(ctx.life.disk, Some(DiskRef::File(_)));
            match (ctx.state.active(), file) {
                // qemu grows a file itself.
                (true, true) => vec![L(GrowPreflight), L(BlockResize)],
                (true, false) => vec![L(GrowPreflight), L(ExtendDisk), L(BlockResize)],
                (false, _) => vec![L(GrowPreflight), LockExclusive, L(ExtendDisk), ReleaseLock],
            }
        }
        ActionKind::ActivateDisks => {
            let mut s = vec![L(DisksPreflight), LockExclusive];
            if sanlock && any_lv {
                s.push(L(ActivateLvs));
            }
            s.extend([L(MarkMaintenance), L(MapPartitions)]);
            s
        }
        ActionKind::DeactivateDisks => {
            let mut s = vec![L(UndisksPreflight), L(UnmapPartitions)];
            if sanlock && any_lv {
                s.push(L(DeactivateLvs));
            }
            s.extend([ReleaseLock, L(ClearMaintenance)]);
            s
        }
        ActionKind::Remove => {
            let mut s = vec![
                L(RemovePreflight),
                LockExclusive,
                L(Undefine),
                L(UndefinePeers),
            ];
            if ctx.life.params.keep_disks {
                s.push(ReleaseLock);
            } else {
                s.extend([L(RemoveDisks), L(ReleaseAfterRemove)]);
            }
            s
        }
        _ => {
            return Err(ActionError::Refused(format!(
                "{} is not a lifecycle action",
                kind.as_str()
            )))
        }
    })
}

/// Work out the disk, sizes and image before planning. Refusals here change nothing.
pub(crate) async fn prepare(
    engine: &Engine,
    req: &ActionRequest,
    state: &DomState,
) -> Result<(Prep, Option<Vec<String>>), ActionError> {
    let p = req.lifecycle.clone();
    let mut prep = Prep {
        params: p.clone(),
        ..Default::default()
    };
    let cfg = &engine.cfg;
    match req.action {
        ActionKind::Create => {
            let size = p
                .size
                .as_deref()
                .ok_or_else(|| ActionError::Refused("create needs --size SIZE (e.g. 8G)".into()))?;
            prep.size = parse_size(size).map_err(ActionError::Refused)?;
            let xml = p.xml.as_deref().unwrap_or("");
            if xml.trim().is_empty() {
                return Err(ActionError::Refused(
                    "create needs the domain XML (--xml FILE)".into(),
                ));
            }
            let disk = new_disk(cfg, &req.vm, p.vg.as_deref())?;
            // The XML is checked now: a refusal before anything is made.
            xml::with_disk(xml, &req.vm, &xml_disk(&disk)).map_err(ActionError::Refused)?;
            if let Some(img) = &p.from_image {
                if !img.starts_with('/') || img.contains('\0') {
                    return Err(ActionError::Refused(format!(
                        "--from-image {img:?}: give an absolute path on {}",
                        engine.node
                    )));
                }
            }
            let path = disk.path();
            prep.disk = Some(disk);
            Ok((prep, Some(vec![path])))
        }
        ActionKind::Grow => {
            let which = p.disk.as_deref().ok_or_else(|| {
                ActionError::Refused("grow needs the disk (its target, e.g. vda)".into())
            })?;
            let g = p
                .size
                .as_deref()
                .ok_or_else(|| ActionError::Refused("grow needs +SIZE or SIZE".into()))?;
            prep.growth = Some(parse_growth(g).map_err(ActionError::Refused)?);
            if !state.defined() {
                return Err(ActionError::Refused(format!(
                    "{} is not defined on {} (nor running on a peer that could be asked): `vmwarden ctl status {}`",
                    req.vm, engine.node, req.vm
                )));
            }
            let virsh = engine.virsh();
            let mut args = vec!["dumpxml"];
            if !state.active() {
                args.push("--inactive");
            }
            args.push(&req.vm);
            let x = virsh.run(&args, virsh.timeout).await?;
            let (target, src) = xml::find_disk(&x, which)
                .map_err(|e| ActionError::Refused(format!("{}: {e}", req.vm)))?;
            prep.target = target;
            prep.disk = Some(DiskRef::of_path(&src));
            Ok((prep, None))
        }
        _ => Ok((prep, None)),
    }
}

/// The disk `create` makes: an LV named like the VM in `vg` (or `[lifecycle] vg`), or with the
/// lease backend and `[lifecycle] disk_dir`, a raw file there.
pub fn new_disk(
    cfg: &crate::config::Config,
    vm: &str,
    vg: Option<&str>,
) -> Result<DiskRef, ActionError> {
    validate_name(NameKind::Vm, vm)?;
    validate_name(NameKind::Lv, vm)?;
    let vg = vg
        .filter(|v| !v.is_empty())
        .or_else(|| (!cfg.lifecycle.vg.is_empty()).then_some(cfg.lifecycle.vg.as_str()));
    match vg {
        Some(vg) => {
            validate_name(NameKind::Vg, vg)?;
            Ok(DiskRef::Lv {
                vg: vg.to_string(),
                lv: vm.to_string(),
            })
        }
        None if cfg.lock.backend == "sanlock" && !cfg.lifecycle.disk_dir.is_empty() => Ok(
            DiskRef::File(format!("{}/{vm}.raw", cfg.lifecycle.disk_dir.trim_end_matches('/'))),
        ),
        None => Err(ActionError::Refused(
            "which VG? give --vg VG or set [lifecycle] vg (with the lease backend and no LVM: [lifecycle] disk_dir)".into(),
        )),
    }
}

fn xml_disk(d: &DiskRef) -> xml::NewDiskXml {
    match d {
        DiskRef::Lv { .. } => xml::NewDiskXml::Block(d.path()),
        DiskRef::File(p) => xml::NewDiskXml::File(p.clone()),
    }
}

fn created_xml_path(state_dir: &str, vm: &str) -> PathBuf {
    Path::new(state_dir)
        .join("create")
        .join(format!("{vm}.xml"))
}

fn removed_xml_path(state_dir: &str, vm: &str) -> PathBuf {
    Path::new(state_dir)
        .join("removed")
        .join(format!("{vm}.xml"))
}

fn qemu_img(cfg: &crate::config::Config) -> Cmd {
    Cmd::new(cfg.lifecycle.qemu_img.clone())
}

fn kpartx_available(cfg: &crate::config::Config) -> bool {
    let k = &cfg.lifecycle.kpartx;
    if k.contains('/') {
        return Path::new(k).exists();
    }
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(k).exists()))
}

async fn run_cmd(cmd: Cmd, limit: std::time::Duration) -> Result<String, ActionError> {
    let out = cmd.run(limit).await.map_err(LockError::from)?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(ActionError::Lock(LockError::CommandFailed {
            command: cmd.display(),
            stderr: out.summary(),
        }))
    }
}

/// An lvm change; its refusal in plain words.
async fn run_lvm(
    ctx: &Ctx<'_>,
    args: &[&str],
    vg: &str,
    lv: &str,
    want: Option<u64>,
) -> Result<(), ActionError> {
    let cfg = &ctx.engine.cfg;
    let cmd = storage::lvm(cfg, args);
    let out = cmd
        .run(storage::timeout(cfg))
        .await
        .map_err(LockError::from)?;
    if out.success() {
        return Ok(());
    }
    let free = match want {
        Some(w) => storage::report(cfg)
            .await
            .ok()
            .and_then(|r| storage::vg_free(&r, vg))
            .map(|f| (w, f)),
        None => None,
    };
    let e = storage::explain_lvm(&out.stderr, vg, lv, &cmd.display(), free);
    // Name the holder when the lock manager can.
    if let ActionError::Lock(LockError::HeldByOtherHost { .. }) = &e {
        if let Some(l) = &ctx.locks {
            if let Some(h) = l.other_holder().await {
                return Err(ActionError::Lock(LockError::HeldByOtherHost {
                    target: format!("{}'s LV {vg}/{lv}", ctx.vm),
                    vm: ctx.vm.clone(),
                    host_id: Some(h),
                }));
            }
        }
    }
    Err(e)
}

/// Every peer's view of the VM; `Err` names a peer that cannot be asked.
async fn peers_status(ctx: &Ctx<'_>) -> Result<Vec<PeerReply>, ActionError> {
    let e = ctx.engine;
    let mut out = Vec::new();
    for p in &e.cfg.cluster.peers {
        let r = e
            .call_peer(p, PeerOp::Status, &ctx.vm, &ctx.disks, &ctx.id)
            .await
            .map_err(|err| {
                ActionError::Refused(format!(
                    "node {} cannot be asked about {} ({err}); vmwarden cannot tell whether it is defined or runs there — bring its agent back, or remove the node from [cluster] peers",
                    p.name, ctx.vm
                ))
            })?;
        out.push(r);
    }
    Ok(out)
}

fn refuse_if_active_on_peer(vm: &str, rs: &[PeerReply], what: &str) -> Result<(), ActionError> {
    for r in rs {
        if r.active {
            return Err(ActionError::HeldElsewhere {
                node: r.node.clone(),
                message: format!(
                    "{vm} runs on node {} ({}): {what} — stop it first (`vmwarden ctl stop {vm}` there)",
                    r.node, r.state
                ),
            });
        }
        if let Some(m) = &r.maintenance {
            return Err(ActionError::HeldElsewhere {
                node: r.node.clone(),
                message: m.clone(),
            });
        }
    }
    Ok(())
}

fn sd<'a>(ctx: &'a Ctx<'_>) -> &'a str {
    &ctx.engine.cfg.cluster.state_dir
}

fn io_err(what: &str, e: std::io::Error) -> ActionError {
    ActionError::Refused(format!(
        "{what}: {e} — check that the state directory is writable"
    ))
}

impl LStep {
    pub(crate) async fn run(self, ctx: &Ctx<'_>) -> Result<(), ActionError> {
        use LStep::*;
        let e = ctx.engine;
        let cfg = &e.cfg;
        let virsh = e.virsh();
        let vm = ctx.vm.as_str();
        let lt = storage::timeout(cfg);
        match self {
            CreatePreflight => {
                if ctx.state.defined() {
                    return Err(ActionError::Refused(format!(
                        "{vm} is already defined on {} ({}): pick another name, or `vmwarden ctl remove {vm}` first",
                        e.node, ctx.state
                    )));
                }
                for r in peers_status(ctx).await? {
                    if r.state != "undefined" {
                        return Err(ActionError::Refused(format!(
                            "{vm} is already defined on node {} ({}): names are unique in the cluster — pick another name",
                            r.node, r.state
                        )));
                    }
                }
                let disk = ctx
                    .life
                    .disk
                    .clone()
                    .ok_or_else(|| ActionError::Refused("no disk".into()))?;
                match &disk {
                    DiskRef::Lv { vg, lv } => {
                        let rep = storage::report(cfg).await?;
                        storage::check_new_lv(
                            &rep,
                            vg,
                            lv,
                            ctx.life.size,
                            cfg.lock.backend == "lvmlockd",
                        )
                        .map_err(ActionError::Refused)?;
                    }
                    DiskRef::File(p) => {
                        if Path::new(p).exists() {
                            return Err(ActionError::Refused(format!(
                                "{p} exists: the disk file of {vm} is taken — if it is an old VM's disk, remove it, or pick another VM name"
                            )));
                        }
                        let dir = Path::new(p).parent().unwrap_or(Path::new("/"));
                        if !dir.is_dir() {
                            return Err(ActionError::Refused(format!(
                                "[lifecycle] disk_dir {} is not a directory on {}",
                                dir.display(),
                                e.node
                            )));
                        }
                    }
                }
                if let Some(img) = &ctx.life.params.from_image {
                    let (_, vsize) = image_info(cfg, img).await?;
                    if vsize > ctx.life.size {
                        return Err(ActionError::Refused(format!(
                            "the image {img} is {} (virtual size), larger than the disk asked ({}): give --size {} or more",
                            human(vsize),
                            human(ctx.life.size),
                            human(vsize)
                        )));
                    }
                }
                if cfg.lock.backend == "sanlock" && ctx.locks.is_none() {
                    return Err(ActionError::Refused(format!("{vm} has no lease slot")));
                }
                Ok(())
            }
            LeaseInit => {
                let Some(crate::lock::VolumeLock::Sanlock(l)) =
                    ctx.locks.as_ref().and_then(|l| l.locks.first())
                else {
                    return Ok(());
                };
                // Never over a lease somebody holds: read its leader first.
                let s = &cfg.sanlock.sanlock;
                let offset = lease_offset(cfg, vm);
                let dump = Cmd::new(s.clone())
                    .args([
                        "direct",
                        "dump",
                        &format!("{}:{}:1048576", cfg.lock.sanlock.lease_path, offset),
                    ])
                    .run(lt)
                    .await
                    .map_err(LockError::from)?;
                if let Some(o) = crate::lock::sanlock::parse_direct_dump(&dump.stdout) {
                    if o.exclusive.is_some() || !o.shared.is_empty() {
                        return Err(ActionError::Refused(format!(
                            "the lease slot of {vm} (offset {}) is held by host {:?}{}: it is in use — check [lock.sanlock] leases for a slot shared by two VMs",
                            offset, o.exclusive, if o.shared.is_empty() { String::new() } else { format!(" / shared by {:?}", o.shared) }
                        )));
                    }
                }
                let out = Cmd::new(s.clone())
                    .args(["client", "init", "-r", &l.resource(false)])
                    .run(lt)
                    .await
                    .map_err(LockError::from)?;
                let rv = crate::lock::sanlock::parse_done(&out.stdout);
                if !out.success() || rv.is_some_and(|r| r != 0) {
                    return Err(ActionError::Lock(LockError::CommandFailed {
                        command: format!("{s} client init -r {}", l.resource(false)),
                        stderr: format!("{} {}", out.stdout.trim(), out.summary()),
                    }));
                }
                Ok(())
            }
            DiskCreate => match disk_of(ctx)? {
                DiskRef::Lv { vg, lv } => {
                    let size = format!("{}b", ctx.life.size);
                    run_lvm(
                        ctx,
                        &["lvcreate", "-an", "-Zn", "-L", &size, "-n", &lv, &vg],
                        &vg,
                        &lv,
                        Some(ctx.life.size),
                    )
                    .await
                }
                DiskRef::File(p) => {
                    let size = ctx.life.size.to_string();
                    run_cmd(
                        qemu_img(cfg).args(["create", "-q", "-f", "raw", &p, &size]),
                        lt,
                    )
                    .await?;
                    Ok(())
                }
            },
            ImageCopy => {
                let img = ctx.life.params.from_image.clone().unwrap_or_default();
                let (fmt, _) = image_info(cfg, &img).await?;
                let target = disk_of(ctx)?.path();
                let limit =
                    std::time::Duration::from_secs_f64(cfg.lifecycle.image_copy_timeout_seconds);
                run_cmd(
                    qemu_img(cfg).args(["convert", "-n", "-f", &fmt, "-O", "raw", &img, &target]),
                    limit,
                )
                .await?;
                Ok(())
            }
            Define => {
                let disk = disk_of(ctx)?;
                let text = xml::with_disk(
                    ctx.life.params.xml.as_deref().unwrap_or(""),
                    vm,
                    &xml_disk(&disk),
                )
                .map_err(ActionError::Refused)?;
                let p = created_xml_path(sd(ctx), vm);
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d).map_err(|er| io_err("create/", er))?;
                }
                std::fs::write(&p, text).map_err(|er| io_err(&p.display().to_string(), er))?;
                let ps = p.display().to_string();
                virsh.run(&["define", &ps], virsh.timeout).await?;
                let intent = crate::watchdog::intent::Intent::new(
                    crate::watchdog::intent::Want::Stop,
                    "ctl",
                );
                if let Err(er) = crate::watchdog::intent::record(&virsh, vm, &intent, false).await {
                    // Defined without its intent: the watchdog could adopt it later. Undo here.
                    let _ = virsh
                        .run(&["undefine", "--keep-nvram", vm], virsh.timeout)
                        .await;
                    return Err(er.into());
                }
                Ok(())
            }
            GrowPreflight => {
                let disk = disk_of(ctx)?;
                let growth = ctx
                    .life
                    .growth
                    .ok_or_else(|| ActionError::Refused("no size".into()))?;
                if ctx.state.active() {
                    if let Some(l) = &ctx.locks {
                        let held = l.mode().await?;
                        if held != crate::lock::Held::Exclusive {
                            return Err(ActionError::Refused(format!(
                                "{vm} runs here but its lock ({}) is {} here, not exclusive: fix that first (`vmwarden check`)",
                                l.targets(), held.as_str()
                            )));
                        }
                    }
                } else {
                    refuse_if_active_on_peer(
                        vm,
                        &peers_status(ctx).await?,
                        "grow it on the node where it runs",
                    )?;
                    if let Some(m) = maintenance::read(sd(ctx), vm) {
                        return Err(ActionError::Refused(m.refusal(maintenance::now_unix())));
                    }
                }
                let label = format!("{vm}'s disk {} ({})", ctx.life.target, disk.describe());
                match &disk {
                    DiskRef::Lv { vg, lv } => {
                        let rep = storage::report(cfg).await?;
                        let cur = storage::lv_size(&rep, vg, lv).ok_or_else(|| {
                            ActionError::Lock(LockError::NotFound {
                                what: "LV",
                                name: format!("{vg}/{lv}"),
                            })
                        })?;
                        let to = growth.target(&label, cur).map_err(ActionError::Refused)?;
                        if let Some(free) = storage::vg_free(&rep, vg) {
                            if free < to - cur {
                                return Err(ActionError::Refused(storage::vg_full(
                                    vg,
                                    to - cur,
                                    Some(free),
                                )));
                            }
                        }
                    }
                    DiskRef::File(p) => {
                        let cur = std::fs::metadata(p)
                            .map_err(|er| ActionError::Refused(format!("{p}: {er}")))?
                            .len();
                        growth.target(&label, cur).map_err(ActionError::Refused)?;
                    }
                }
                Ok(())
            }
            ExtendDisk => {
                let growth = ctx
                    .life
                    .growth
                    .ok_or_else(|| ActionError::Refused("no size".into()))?;
                match disk_of(ctx)? {
                    DiskRef::Lv { vg, lv } => {
                        let arg = growth.lvm_arg();
                        let want = match growth {
                            Growth::By(d) => Some(d),
                            Growth::To(_) => None,
                        };
                        run_lvm(
                            ctx,
                            &["lvextend", "-L", &arg, &format!("{vg}/{lv}")],
                            &vg,
                            &lv,
                            want,
                        )
                        .await
                    }
                    DiskRef::File(p) => {
                        let cur = std::fs::metadata(&p)
                            .map_err(|er| ActionError::Refused(format!("{p}: {er}")))?
                            .len();
                        let to = growth.target(&p, cur).map_err(ActionError::Refused)?;
                        run_cmd(
                            qemu_img(cfg).args(["resize", "-q", "-f", "raw", &p, &to.to_string()]),
                            lt,
                        )
                        .await?;
                        Ok(())
                    }
                }
            }
            BlockResize => {
                let disk = disk_of(ctx)?;
                let bytes = match &disk {
                    DiskRef::Lv { vg, lv } => {
                        storage::lv_size(&storage::report(cfg).await?, vg, lv).ok_or_else(|| {
                            ActionError::Lock(LockError::NotFound {
                                what: "LV",
                                name: format!("{vg}/{lv}"),
                            })
                        })?
                    }
                    DiskRef::File(p) => {
                        let cap = domblk_capacity(ctx, &ctx.life.target).await?;
                        let growth = ctx
                            .life
                            .growth
                            .ok_or_else(|| ActionError::Refused("no size".into()))?;
                        let _ = p;
                        growth
                            .target(&ctx.life.target, cap)
                            .map_err(ActionError::Refused)?
                    }
                };
                let size = format!("{bytes}B");
                virsh
                    .run(&["blockresize", vm, &ctx.life.target, &size], virsh.timeout)
                    .await?;
                let cap = domblk_capacity(ctx, &ctx.life.target).await?;
                if let Ok(mut n) = ctx.notes.lock() {
                    n.push(format!(
                        "the running guest sees {} on {} now (`virsh domblkinfo {vm} {}`); inside the guest, grow its partition and filesystem: e.g. `growpart /dev/{} 1` then `resize2fs /dev/{}1` (ext4) or `xfs_growfs /` (xfs)",
                        human(cap), ctx.life.target, ctx.life.target, ctx.life.target, ctx.life.target
                    ));
                }
                Ok(())
            }
            DisksPreflight => {
                if !ctx.state.defined() {
                    return Err(ActionError::Refused(format!(
                        "{vm} is not defined on {}: activate its disks where it is defined",
                        e.node
                    )));
                }
                if ctx.state.active() {
                    return Err(state_refusal(
                        vm,
                        &e.node,
                        &ctx.state,
                        "its disks are in use by the VM itself; stop it first",
                    ));
                }
                if let Some(m) = maintenance::read(sd(ctx), vm) {
                    return Err(ActionError::Refused(format!(
                        "{} already",
                        m.refusal(maintenance::now_unix())
                    )));
                }
                // The lock decides; a peer's answer words the refusal better.
                let rs: Vec<PeerReply> = peers_status(ctx).await.unwrap_or_default();
                refuse_if_active_on_peer(
                    vm,
                    &rs,
                    "its disks cannot be activated for maintenance while it runs",
                )?;
                if ctx.locks.is_none() {
                    return Err(ActionError::Refused(format!(
                        "{vm} has no disk vmwarden can lock ({:?})",
                        ctx.disks
                    )));
                }
                Ok(())
            }
            ActivateLvs | DeactivateLvs => {
                let flag = if self == ActivateLvs { "-ay" } else { "-an" };
                for d in &ctx.disks {
                    if let DiskRef::Lv { vg, lv } = DiskRef::of_path(d) {
                        run_lvm(
                            ctx,
                            &["lvchange", flag, &format!("{vg}/{lv}")],
                            &vg,
                            &lv,
                            None,
                        )
                        .await?;
                    }
                }
                Ok(())
            }
            MarkMaintenance => {
                let m = maintenance::Marker {
                    vm: vm.to_string(),
                    node: e.node.clone(),
                    since_unix: maintenance::now_unix(),
                    action_id: ctx.id.clone(),
                    devices: ctx.disks.clone(),
                };
                maintenance::write(sd(ctx), &m).map_err(|er| io_err("maintenance marker", er))
            }
            MapPartitions => {
                let mut devices = ctx.disks.clone();
                let mut note = String::new();
                if kpartx_available(cfg) {
                    for d in ctx.disks.iter().filter(|d| d.starts_with("/dev/")) {
                        let out = run_cmd(
                            Cmd::new(cfg.lifecycle.kpartx.clone()).args(["-a", "-v", "-s", d]),
                            lt,
                        )
                        .await?;
                        devices.extend(parse_kpartx(&out));
                    }
                } else {
                    note = format!(
                        " ({} not installed: partitions not mapped)",
                        cfg.lifecycle.kpartx
                    );
                }
                if let Some(mut m) = maintenance::read(sd(ctx), vm) {
                    m.devices = devices.clone();
                    let _ = maintenance::write(sd(ctx), &m);
                }
                if let Ok(mut n) = ctx.notes.lock() {
                    for d in &devices {
                        n.push(format!("device: {d}"));
                    }
                    n.push(format!(
                        "{vm}'s disks are active for maintenance on {} with its lock held here{note}; it cannot start anywhere until `vmwarden ctl disks deactivate {vm}`",
                        e.node
                    ));
                }
                Ok(())
            }
            UndisksPreflight => {
                if ctx.state.active() {
                    return Err(state_refusal(
                        vm,
                        &e.node,
                        &ctx.state,
                        "its disks stay active while it runs",
                    ));
                }
                if maintenance::read(sd(ctx), vm).is_none() {
                    if let Ok(mut n) = ctx.notes.lock() {
                        n.push(format!(
                            "{vm} had no maintenance marker on {}: deactivating anyway",
                            e.node
                        ));
                    }
                }
                if ctx.locks.is_none() {
                    return Err(ActionError::Refused(format!(
                        "{vm} has no disk vmwarden can lock ({:?})",
                        ctx.disks
                    )));
                }
                Ok(())
            }
            UnmapPartitions => unmap(ctx).await,
            ClearMaintenance => {
                maintenance::clear(sd(ctx), vm).map_err(|er| io_err("maintenance marker", er))
            }
            RemovePreflight => {
                if !ctx.state.defined() {
                    let rs = peers_status(ctx).await.unwrap_or_default();
                    let there: Vec<&str> = rs
                        .iter()
                        .filter(|r| r.state != "undefined")
                        .map(|r| r.node.as_str())
                        .collect();
                    return Err(ActionError::Refused(if there.is_empty() {
                        format!("{vm} is not defined on {} nor on any peer: nothing to remove (its disk, if any, is not vmwarden's to guess)", e.node)
                    } else {
                        format!("{vm} is not defined on {} but on {}: run `vmwarden ctl remove {vm}` there", e.node, there.join(", "))
                    }));
                }
                if ctx.state.active() {
                    return Err(state_refusal(
                        vm,
                        &e.node,
                        &ctx.state,
                        "stop it first (`vmwarden ctl stop`)",
                    ));
                }
                if let Some(m) = maintenance::read(sd(ctx), vm) {
                    return Err(ActionError::Refused(m.refusal(maintenance::now_unix())));
                }
                if super::journal::incoming(sd(ctx), vm).is_some() {
                    return Err(ActionError::Refused(format!(
                        "{vm} has an incoming migration declared here: wait for it"
                    )));
                }
                let rs = peers_status(ctx).await?;
                refuse_if_active_on_peer(vm, &rs, "refusing to remove it")?;
                if let Some(r) = rs.iter().find(|r| r.owned_by_action) {
                    return Err(ActionError::Refused(format!(
                        "an action on {vm} is running or unfinished on node {}: wait for it (`vmwarden ctl status {vm}`)",
                        r.node
                    )));
                }
                if ctx.locks.is_none() {
                    return Err(ActionError::Refused(format!(
                        "{vm} has no disk vmwarden can lock ({:?}): vmwarden cannot prove it runs nowhere",
                        ctx.disks
                    )));
                }
                Ok(())
            }
            Undefine => {
                let x = virsh
                    .run(
                        &["dumpxml", "--inactive", "--security-info", vm],
                        virsh.timeout,
                    )
                    .await?;
                let p = removed_xml_path(sd(ctx), vm);
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d).map_err(|er| io_err("removed/", er))?;
                }
                std::fs::write(&p, x).map_err(|er| io_err(&p.display().to_string(), er))?;
                virsh
                    .run(&["undefine", "--keep-nvram", vm], virsh.timeout)
                    .await?;
                Ok(())
            }
            UndefinePeers => {
                for p in &cfg.cluster.peers {
                    let r = e
                        .call_peer(p, PeerOp::Status, vm, &ctx.disks, &ctx.id)
                        .await?;
                    if r.state != "undefined" {
                        e.call_peer(p, PeerOp::Undefine, vm, &ctx.disks, &ctx.id)
                            .await?;
                        if let Ok(mut n) = ctx.notes.lock() {
                            n.push(format!(
                                "undefined {vm} on node {} too ({})",
                                p.name, r.state
                            ));
                        }
                    }
                }
                Ok(())
            }
            RemoveDisks => {
                for d in &ctx.disks {
                    remove_disk(ctx, &DiskRef::of_path(d)).await?;
                }
                Ok(())
            }
            ReleaseAfterRemove => {
                if cfg.lock.backend == "sanlock" {
                    if let Some(l) = &ctx.locks {
                        l.apply(LockOp::Release).await?;
                    }
                }
                Ok(())
            }
        }
    }

    pub(crate) async fn undo(self, ctx: &Ctx<'_>) -> Result<(), ActionError> {
        use LStep::*;
        let e = ctx.engine;
        let virsh = e.virsh();
        let vm = ctx.vm.as_str();
        match self {
            DiskCreate => remove_disk(ctx, &disk_of(ctx)?).await,
            Define => {
                if !virsh.state(vm).await?.active() {
                    virsh
                        .run(&["undefine", "--keep-nvram", vm], virsh.timeout)
                        .await?;
                }
                Ok(())
            }
            ActivateLvs => Box::pin(DeactivateLvs.run(ctx)).await,
            MarkMaintenance => {
                maintenance::clear(sd(ctx), vm).map_err(|er| io_err("maintenance marker", er))
            }
            MapPartitions => unmap(ctx).await,
            Undefine => {
                let p = removed_xml_path(sd(ctx), vm).display().to_string();
                virsh.run(&["define", &p], virsh.timeout).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// (does, undo) for the plan printout: the concrete commands.
    pub(crate) fn describe(self, ctx: &Ctx<'_>) -> (Vec<String>, Vec<String>) {
        use LStep::*;
        let e = ctx.engine;
        let cfg = &e.cfg;
        let v = e.virsh();
        let vm = ctx.vm.as_str();
        let virsh = |a: &[&str]| v.cmd(a).display();
        let disk = ctx
            .life
            .disk
            .clone()
            .unwrap_or_else(|| DiskRef::File("?".into()));
        let lvm = |a: &[&str]| storage::lvm(cfg, a).display();
        let qi = |a: &[&str]| qemu_img(cfg).args(a.iter().copied()).display();
        let peers = cfg
            .cluster
            .peers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let sdir = sd(ctx);
        let remove_cmd = |d: &DiskRef| match d {
            DiskRef::Lv { vg, lv } => lvm(&["lvremove", "-y", &format!("{vg}/{lv}")]),
            DiskRef::File(p) => format!("remove the file {p}"),
        };
        match self {
            CreatePreflight => (
                vec![
                    virsh(&["domstate", "--reason", vm]),
                    format!("ask every peer ({peers}) that {vm} is not defined there"),
                    match &disk {
                        DiskRef::Lv { vg, lv } => format!(
                            "{} — VG {vg} exists{}, LV name {lv} free, {} free",
                            fullreport_display(cfg),
                            if cfg.lock.backend == "lvmlockd" {
                                " and is shared"
                            } else {
                                ""
                            },
                            human(ctx.life.size)
                        ),
                        DiskRef::File(p) => format!("{p} does not exist"),
                    },
                    ctx.life
                        .params
                        .from_image
                        .as_ref()
                        .map(|i| qi(&["info", "--output=json", i]) + " (its virtual size fits)")
                        .unwrap_or_else(|| {
                            "the domain XML names the VM (checked while planning)".into()
                        }),
                ],
                vec![],
            ),
            LeaseInit => {
                let r = ctx
                    .locks
                    .as_ref()
                    .and_then(|l| l.locks.first())
                    .and_then(|l| match l {
                        crate::lock::VolumeLock::Sanlock(s) => Some(s.resource(false)),
                        _ => None,
                    })
                    .unwrap_or_default();
                (
                    vec![
                        format!(
                            "{} direct dump LEASE_PATH:OFFSET:1048576 (refused if held)",
                            cfg.sanlock.sanlock
                        ),
                        format!("{} client init -r {r}", cfg.sanlock.sanlock),
                    ],
                    vec![],
                )
            }
            DiskCreate => match &disk {
                DiskRef::Lv { vg, lv } => (
                    vec![lvm(&[
                        "lvcreate",
                        "-an",
                        "-Zn",
                        "-L",
                        &format!("{}b", ctx.life.size),
                        "-n",
                        lv,
                        vg,
                    ])],
                    vec![remove_cmd(&disk)],
                ),
                DiskRef::File(p) => (
                    vec![qi(&[
                        "create",
                        "-q",
                        "-f",
                        "raw",
                        p,
                        &ctx.life.size.to_string(),
                    ])],
                    vec![remove_cmd(&disk)],
                ),
            },
            ImageCopy => {
                let img = ctx.life.params.from_image.clone().unwrap_or_default();
                (
                    vec![
                        qi(&["info", "--output=json", &img]),
                        qi(&[
                            "convert",
                            "-n",
                            "-f",
                            "FORMAT_FROM_INFO",
                            "-O",
                            "raw",
                            &img,
                            &disk.path(),
                        ]),
                    ],
                    vec![],
                )
            }
            Define => (
                vec![
                    format!(
                        "write {} (the XML with its disk on {})",
                        created_xml_path(sdir, vm).display(),
                        disk.path()
                    ),
                    virsh(&["define", &created_xml_path(sdir, vm).display().to_string()]),
                    super::plan::intent_cmd(&v, vm, crate::watchdog::intent::Want::Stop, false),
                ],
                vec![virsh(&["undefine", "--keep-nvram", vm])],
            ),
            GrowPreflight => (
                vec![
                    format!(
                        "{} ({} {})",
                        virsh(&["dumpxml", vm]),
                        ctx.life.target,
                        disk.describe()
                    ),
                    if ctx.state.active() {
                        "its lock is held exclusively here".into()
                    } else {
                        format!("ask every peer ({peers}) that it does not run there")
                    },
                    format!("{} — no shrink, room in the VG", fullreport_display(cfg)),
                ],
                vec![],
            ),
            ExtendDisk => match &disk {
                DiskRef::Lv { vg, lv } => (
                    vec![lvm(&[
                        "lvextend",
                        "-L",
                        &ctx.life.growth.map(|g| g.lvm_arg()).unwrap_or_default(),
                        &format!("{vg}/{lv}"),
                    ])],
                    vec!["none: a disk is never shrunk".into()],
                ),
                DiskRef::File(p) => (
                    vec![qi(&["resize", "-q", "-f", "raw", p, "NEW_SIZE"])],
                    vec![],
                ),
            },
            BlockResize => (
                vec![
                    virsh(&["blockresize", vm, &ctx.life.target, "NEW_SIZE_OF_THE_LV_B"]),
                    virsh(&["domblkinfo", vm, &ctx.life.target]),
                ],
                vec![],
            ),
            DisksPreflight => (
                vec![
                    virsh(&["domstate", "--reason", vm]),
                    format!("ask every peer ({peers}) that it does not run there"),
                ],
                vec![],
            ),
            ActivateLvs | DeactivateLvs => {
                let flag = if self == ActivateLvs { "-ay" } else { "-an" };
                let cmds = ctx
                    .disks
                    .iter()
                    .filter_map(|d| match DiskRef::of_path(d) {
                        DiskRef::Lv { vg, lv } => {
                            Some(lvm(&["lvchange", flag, &format!("{vg}/{lv}")]))
                        }
                        _ => None,
                    })
                    .collect();
                (cmds, vec![])
            }
            MarkMaintenance => (
                vec![format!(
                    "write {}",
                    maintenance::dir(sdir).join(format!("{vm}.json")).display()
                )],
                vec![format!(
                    "remove {}",
                    maintenance::dir(sdir).join(format!("{vm}.json")).display()
                )],
            ),
            MapPartitions | UnmapPartitions => {
                let f = if self == MapPartitions { "-a" } else { "-d" };
                let cmds = ctx
                    .disks
                    .iter()
                    .filter(|d| d.starts_with("/dev/"))
                    .map(|d| {
                        Cmd::new(cfg.lifecycle.kpartx.clone())
                            .args([f, "-v", "-s", d.as_str()])
                            .display()
                            + " (if kpartx is installed)"
                    })
                    .collect();
                let undo = if self == MapPartitions {
                    ctx.disks
                        .iter()
                        .filter(|d| d.starts_with("/dev/"))
                        .map(|d| {
                            Cmd::new(cfg.lifecycle.kpartx.clone())
                                .args(["-d", "-v", d.as_str()])
                                .display()
                        })
                        .collect()
                } else {
                    vec![]
                };
                (cmds, undo)
            }
            UndisksPreflight => (vec![virsh(&["domstate", "--reason", vm])], vec![]),
            ClearMaintenance => (
                vec![format!(
                    "remove {}",
                    maintenance::dir(sdir).join(format!("{vm}.json")).display()
                )],
                vec![],
            ),
            RemovePreflight => (
                vec![
                    virsh(&["domstate", "--reason", vm]),
                    format!(
                        "ask every peer ({peers}): not running, no action on it, no maintenance"
                    ),
                ],
                vec![],
            ),
            Undefine => (
                vec![
                    format!(
                        "{} > {}",
                        virsh(&["dumpxml", "--inactive", "--security-info", vm]),
                        removed_xml_path(sdir, vm).display()
                    ),
                    virsh(&["undefine", "--keep-nvram", vm]),
                ],
                vec![virsh(&[
                    "define",
                    &removed_xml_path(sdir, vm).display().to_string(),
                ])],
            ),
            UndefinePeers => (
                vec![format!(
                    "on every peer ({peers}) where {vm} is defined: POST /v1/peer undefine {vm}"
                )],
                vec![],
            ),
            RemoveDisks => (
                ctx.disks
                    .iter()
                    .map(|d| remove_cmd(&DiskRef::of_path(d)))
                    .collect(),
                vec![],
            ),
            ReleaseAfterRemove => (
                vec![if cfg.lock.backend == "sanlock" {
                    ctx.locks
                        .as_ref()
                        .map(|l| l.describe(LockOp::Release).join("; "))
                        .unwrap_or_default()
                } else {
                    "nothing: lvremove took the LVs' locks with them".into()
                }],
                vec![],
            ),
        }
    }
}

fn fullreport_display(cfg: &crate::config::Config) -> String {
    format!(
        "{} fullreport --reportformat json … (VGs and LVs)",
        cfg.lvm.lvm
    )
}

fn disk_of(ctx: &Ctx<'_>) -> Result<DiskRef, ActionError> {
    ctx.life
        .disk
        .clone()
        .or_else(|| ctx.disks.first().map(|d| DiskRef::of_path(d)))
        .ok_or_else(|| ActionError::Refused(format!("{}: no disk", ctx.vm)))
}

async fn image_info(cfg: &crate::config::Config, img: &str) -> Result<(String, u64), ActionError> {
    if !Path::new(img).is_file() {
        return Err(ActionError::Refused(format!(
            "--from-image {img}: no such file on this node (the image is read by the agent here)"
        )));
    }
    let out = run_cmd(
        qemu_img(cfg).args(["info", "--output=json", img]),
        storage::timeout(cfg),
    )
    .await?;
    storage::parse_qemu_img_info(&out).map_err(ActionError::Refused)
}

async fn domblk_capacity(ctx: &Ctx<'_>, target: &str) -> Result<u64, ActionError> {
    let v = ctx.engine.virsh();
    let out = v.run(&["domblkinfo", &ctx.vm, target], v.timeout).await?;
    parse_domblkinfo_capacity(&out).ok_or_else(|| {
        ActionError::Refused(format!(
            "`virsh domblkinfo {} {target}`: no Capacity line",
            ctx.vm
        ))
    })
}

/// `Capacity:       1073741824` of `virsh domblkinfo`.
pub fn parse_domblkinfo_capacity(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Capacity").then(|| v.trim().parse().ok())?
    })
}

/// `add map vg1-vm1p1 (253:3): 0 2048 linear 253:2 2048` → `/dev/mapper/vg1-vm1p1`.
pub fn parse_kpartx(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let name = l.strip_prefix("add map ")?.split_whitespace().next()?;
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
                .then(|| format!("/dev/mapper/{name}"))
        })
        .collect()
}

async fn unmap(ctx: &Ctx<'_>) -> Result<(), ActionError> {
    let cfg = &ctx.engine.cfg;
    if !kpartx_available(cfg) {
        return Ok(());
    }
    for d in ctx.disks.iter().filter(|d| d.starts_with("/dev/")) {
        if Path::new(d).exists() {
            run_cmd(
                Cmd::new(cfg.lifecycle.kpartx.clone()).args(["-d", "-v", d.as_str()]),
                storage::timeout(cfg),
            )
            .await?;
        }
    }
    Ok(())
}

async fn remove_disk(ctx: &Ctx<'_>, d: &DiskRef) -> Result<(), ActionError> {
    match d {
        DiskRef::Lv { vg, lv } => {
            run_lvm(
                ctx,
                &["lvremove", "-y", &format!("{vg}/{lv}")],
                vg,
                lv,
                None,
            )
            .await
        }
        DiskRef::File(p) => match std::fs::remove_file(p) {
            Err(er) if er.kind() != std::io::ErrorKind::NotFound => {
                Err(ActionError::Refused(format!("removing {p}: {er}")))
            }
            _ => Ok(()),
        },
    }
}

/// Whether the disk exists (lvm knows the LV / the file is there).
async fn disk_exists(cfg: &crate::config::Config, d: &DiskRef) -> Result<bool, ActionError> {
    match d {
        DiskRef::Lv { vg, lv } => {
            Ok(storage::lv_size(&storage::report(cfg).await?, vg, lv).is_some())
        }
        DiskRef::File(p) => Ok(Path::new(p).exists()),
    }
}

/// What the report says when the action completed.
pub(crate) fn success_message(ctx: &Ctx<'_>, kind: ActionKind) -> String {
    let vm = &ctx.vm;
    let node = &ctx.engine.node;
    let disks = ctx
        .disks
        .iter()
        .map(|d| DiskRef::of_path(d).describe())
        .collect::<Vec<_>>()
        .join(", ");
    match kind {
        ActionKind::Create => format!(
            "{vm} is defined on {node} (stopped; intent: stopped) with its disk on {disks}; start it with `vmwarden ctl start {vm}`"
        ),
        ActionKind::Grow => format!(
            "{vm}'s disk {} grew ({}); {}",
            ctx.life.target,
            ctx.life.disk.as_ref().map(|d| d.describe()).unwrap_or_default(),
            if ctx.state.active() {
                "the running guest sees the new size now; grow its partition and filesystem inside the guest"
            } else {
                "it sees the new size at its next start; then grow its partition and filesystem inside the guest"
            }
        ),
        ActionKind::ActivateDisks => format!(
            "{vm}'s disks are active on {node} for maintenance ({disks}); `vmwarden ctl disks deactivate {vm}` when done"
        ),
        ActionKind::DeactivateDisks => {
            format!("{vm}'s disks are deactivated on {node} and its lock released")
        }
        ActionKind::Remove if ctx.life.params.keep_disks => format!(
            "{vm} is removed (undefined everywhere); its disks are kept: {disks} (inactive, unlocked){}",
            lease_note(ctx)
        ),
        ActionKind::Remove => format!(
            "{vm} is removed: undefined everywhere, disks removed ({disks}){}",
            lease_note(ctx)
        ),
        _ => String::new(),
    }
}

fn lease_offset(cfg: &crate::config::Config, vm: &str) -> u64 {
    cfg.lock
        .sanlock
        .leases
        .iter()
        .find(|l| l.vm == vm)
        .map(|l| l.offset)
        .unwrap_or(0)
}

fn lease_note(ctx: &Ctx<'_>) -> String {
    let cfg = &ctx.engine.cfg;
    if cfg.lock.backend != "sanlock" {
        return String::new();
    }
    let off = lease_offset(cfg, &ctx.vm);
    format!(
        "; its lease is released — remove {{ vm = \"{}\", offset = {off} }} from [lock.sanlock] leases on every node (the slot on disk stays initialised and free, ready for another VM)",
        ctx.vm
    )
}

/// grow asked on a node where the VM does not run: ask the agent where it runs.
pub(crate) async fn forward_grow(engine: &Engine, req: &ActionRequest) -> Option<ActionReport> {
    if req.action != ActionKind::Grow {
        return None;
    }
    let (_, active) = engine.active_here(&req.vm).await.ok()?;
    if active {
        return None;
    }
    for p in &engine.cfg.cluster.peers {
        let Ok(r) = engine.call_peer(p, PeerOp::Status, &req.vm, &[], "").await else {
            continue;
        };
        if !r.active {
            continue;
        }
        let preq = PeerRequest {
            op: PeerOp::Act,
            vm: req.vm.clone(),
            disks: Vec::new(),
            action_id: String::new(),
            platform: None,
            action: Some(Box::new(req.clone())),
            drbd: false,
        };
        let limit = std::time::Duration::from_secs_f64(
            engine.cfg.actions.virsh_timeout_seconds * 4.0
                + engine.cfg.lock.command_timeout_seconds * 4.0
                + 30.0,
        );
        let rep = match crate::api::peer::call::<_, PeerReply>(
            &p.url,
            "/v1/peer",
            engine.secret(),
            &preq,
            limit,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                return Some(ActionReport {
                    action: req.action.as_str().into(),
                    vm: req.vm.clone(),
                    node: engine.node.clone(),
                    result: "refused".into(),
                    message: format!(
                        "{} runs on node {}, whose agent could not be asked to grow it: {e}",
                        req.vm, p.name
                    ),
                    held_by_node: Some(p.name.clone()),
                    ..Default::default()
                })
            }
        };
        return Some(match rep.report {
            Some(mut r) => {
                r.notes.insert(
                    0,
                    format!(
                        "{} runs on node {}: asked its agent to grow it there",
                        req.vm, p.name
                    ),
                );
                *r
            }
            None => ActionReport {
                action: req.action.as_str().into(),
                vm: req.vm.clone(),
                node: p.name.clone(),
                result: "refused".into(),
                message: format!(
                    "node {}: {}",
                    p.name,
                    rep.error.unwrap_or_else(|| "refused".into())
                ),
                ..Default::default()
            },
        });
    }
    None
}

/// A peer asks this agent to run an action (only grow: it runs where the VM runs).
pub(crate) async fn peer_act(engine: &Engine, req: PeerRequest, mut rep: PeerReply) -> PeerReply {
    match req.action {
        Some(a) if a.action == ActionKind::Grow && a.vm == req.vm => {
            let (_, active) = match engine.active_here(&a.vm).await {
                Ok(s) => s,
                Err(e) => {
                    rep.error = Some(e.to_string());
                    return rep;
                }
            };
            if !active {
                rep.error = Some(format!("{} does not run on {}", a.vm, engine.node));
                return rep;
            }
            let r = engine.run(*a).await;
            rep.ok = true;
            rep.report = Some(Box::new(r));
        }
        _ => {
            rep.error =
                Some("act: only grow is asked of a peer, for the VM named in the request".into())
        }
    }
    rep
}

/// Undefine a (stopped) VM here, for a remove run on another node.
pub(crate) async fn peer_undefine(
    engine: &Engine,
    vm: &str,
    active: bool,
) -> Result<(), ActionError> {
    if active {
        return Err(ActionError::Refused(format!(
            "{vm} runs on {}: it stays defined",
            engine.node
        )));
    }
    let v = engine.virsh();
    if v.state(vm).await?.defined() {
        v.run(&["undefine", "--keep-nvram", vm], v.timeout).await?;
    }
    Ok(())
}

/// The maintenance refusal of a start here or elsewhere (None: no marker here).
pub fn maintenance_refusal(state_dir: &str, vm: &str) -> Option<String> {
    maintenance::read(state_dir, vm).map(|m| m.refusal(maintenance::now_unix()))
}

/// Recovery of an unfinished lifecycle journal, from what libvirt, lvm and the locks show; None
/// for other actions. Writes its Recovery record before it changes anything.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn recover(
    engine: &Engine,
    action: &str,
    vm: &str,
    disks: &[String],
    read: &ReadJournal,
    here: &DomState,
    here_active: bool,
    locks: Option<&super::VmLocks>,
    j: &mut Journal,
) -> Option<Result<(String, String, &'static str), ActionError>> {
    let kind = match action {
        "create" => ActionKind::Create,
        "grow" => ActionKind::Grow,
        "activate-disks" => ActionKind::ActivateDisks,
        "deactivate-disks" => ActionKind::DeactivateDisks,
        "remove" => ActionKind::Remove,
        _ => return None,
    };
    Some(recover_kind(engine, kind, vm, disks, read, here, here_active, locks, j).await)
}

#[allow(clippy::too_many_arguments)]
async fn recover_kind(
    engine: &Engine,
    kind: ActionKind,
    vm: &str,
    disks: &[String],
    read: &ReadJournal,
    here: &DomState,
    here_active: bool,
    locks: Option<&super::VmLocks>,
    j: &mut Journal,
) -> Result<(String, String, &'static str), ActionError> {
    let cfg = &engine.cfg;
    let sdir = cfg.cluster.state_dir.as_str();
    let progress = read.progress();
    let began = |s: LStep| {
        read.records
            .iter()
            .any(|r| matches!(r, Record::Begin { step } if step == s.name()))
    };
    let done = read.done_steps();
    let mut note = |observed: &str, decision: &str| {
        j.write(&Record::Recovery {
            observed: observed.to_string(),
            decision: decision.to_string(),
        })
    };
    let release = || async {
        if let Some(l) = locks {
            l.apply(LockOp::Release).await?;
        }
        Ok::<(), ActionError>(())
    };
    let refs: Vec<DiskRef> = disks.iter().map(|d| DiskRef::of_path(d)).collect();
    if here_active && kind != ActionKind::Grow {
        // Only grow runs beside a running VM; anything else found running is not ours to touch.
        let observed = format!("{vm} {here} on {}; {progress}", engine.node);
        let decision = "the VM runs here: keep its lock exclusive, change nothing else".to_string();
        note(&observed, &decision)?;
        super::recover::keep_exclusive(engine, locks, vm).await?;
        return Ok((observed, decision, "failed"));
    }
    match kind {
        ActionKind::Create => {
            let disk = refs.first().cloned();
            let exists = match &disk {
                Some(d) => disk_exists(cfg, d).await?,
                None => false,
            };
            let observed = format!(
                "{vm} {here} on {}, disk {} {}; {progress}",
                engine.node,
                disk.as_ref().map(|d| d.describe()).unwrap_or_default(),
                if exists { "exists" } else { "absent" }
            );
            if here.defined() && done.iter().any(|s| s == LStep::Define.name()) {
                let decision =
                    "defined with its disk: the create is finished (lock released)".to_string();
                note(&observed, &decision)?;
                release().await?;
                return Ok((observed, decision, "completed"));
            }
            let decision = if here.defined() {
                "defined, but the journal does not show the definition done: undefine, release, remove the disk it made".to_string()
            } else {
                "not defined: release the lock and remove the disk this create made".to_string()
            };
            note(&observed, &decision)?;
            let v = engine.virsh();
            if here.defined() {
                v.run(&["undefine", "--keep-nvram", vm], v.timeout).await?;
            }
            release().await?;
            // Only a disk this action began to make: the preflight saw the name free.
            if exists && began(LStep::DiskCreate) {
                if let Some(d) = &disk {
                    recover_remove_disk(cfg, d).await?;
                }
            }
            Ok((observed, decision, "rolled_back"))
        }
        ActionKind::Grow => {
            let observed = format!("{vm} {here} on {}; {progress}", engine.node);
            // The grow happened with `extend_disk` (an LV, a stopped VM's file) or, for a running
            // VM's file disk, with `blockresize` (qemu grows the file itself).
            let result = if done
                .iter()
                .any(|s| s == LStep::ExtendDisk.name() || s == LStep::BlockResize.name())
            {
                "completed"
            } else {
                "failed"
            };
            if here_active {
                let decision = "the VM runs here: keep its lock exclusive; the guest sees the new size after `virsh blockresize` (run `vmwarden ctl grow` again with the size to finish)".to_string();
                note(&observed, &decision)?;
                super::recover::keep_exclusive(engine, locks, vm).await?;
                Ok((observed, decision, result))
            } else {
                let decision = "the VM does not run here: release its lock".to_string();
                note(&observed, &decision)?;
                release().await?;
                Ok((observed, decision, result))
            }
        }
        ActionKind::ActivateDisks | ActionKind::DeactivateDisks => {
            let observed = format!("{vm} {here} on {}; {progress}", engine.node);
            let decision =
                "unmap partitions, deactivate, release the lock, clear the maintenance marker"
                    .to_string();
            note(&observed, &decision)?;
            if kpartx_available(cfg) {
                for d in disks
                    .iter()
                    .filter(|d| d.starts_with("/dev/") && Path::new(d).exists())
                {
                    let _ = Cmd::new(cfg.lifecycle.kpartx.clone())
                        .args(["-d", d.as_str()])
                        .run(storage::timeout(cfg))
                        .await;
                }
            }
            release().await?;
            maintenance::clear(sdir, vm).map_err(|e| io_err("maintenance marker", e))?;
            Ok((
                observed,
                decision,
                if kind == ActionKind::ActivateDisks {
                    "rolled_back"
                } else {
                    "completed"
                },
            ))
        }
        ActionKind::Remove => {
            let observed = format!("{vm} {here} on {}; {progress}", engine.node);
            if here.defined() {
                let decision =
                    "still defined here: nothing was removed; release the lock".to_string();
                note(&observed, &decision)?;
                release().await?;
                return Ok((observed, decision, "rolled_back"));
            }
            let remove = read.records.iter().any(|r| matches!(r, Record::Header { steps, .. } if steps.iter().any(|s| s == LStep::RemoveDisks.name())));
            let decision = if remove {
                "undefined here: finish — remove the disks left, release".to_string()
            } else {
                "undefined here (--keep-disks): finish — release".to_string()
            };
            note(&observed, &decision)?;
            // Undefined here, so the remove is past its point of no return: the stale
            // definitions on peers go too (else a crash between `undefine` and `undefine_peers`
            // left the VM defined on a peer with its disks removed — a definition that cannot
            // start). Before the disks and the release: the lock held here is what keeps every
            // peer from starting it meanwhile; a peer that cannot be asked makes this pass fail
            // and recovery retry.
            if !done.iter().any(|s| s == LStep::UndefinePeers.name()) {
                let id = match read.header() {
                    Some(Record::Header { id, .. }) => id.clone(),
                    _ => String::new(),
                };
                for p in &cfg.cluster.peers {
                    let r = engine.call_peer(p, PeerOp::Status, vm, disks, &id).await?;
                    if r.state != "undefined" {
                        engine
                            .call_peer(p, PeerOp::Undefine, vm, disks, &id)
                            .await?;
                    }
                }
            }
            if remove && done.iter().any(|s| s == LStep::Undefine.name()) {
                for d in &refs {
                    if disk_exists(cfg, d).await? {
                        recover_remove_disk(cfg, d).await?;
                    }
                }
                if cfg.lock.backend == "sanlock" {
                    release().await?;
                }
            } else {
                release().await?;
            }
            Ok((observed, decision, "completed"))
        }
        _ => Err(ActionError::Refused("not a lifecycle action".into())),
    }
}

async fn recover_remove_disk(cfg: &crate::config::Config, d: &DiskRef) -> Result<(), ActionError> {
    match d {
        DiskRef::Lv { vg, lv } => {
            let cmd = storage::lvm(cfg, &["lvremove", "-y", &format!("{vg}/{lv}")]);
            let out = cmd
                .run(storage::timeout(cfg))
                .await
                .map_err(LockError::from)?;
            if !out.success() {
                return Err(storage::explain_lvm(
                    &out.stderr,
                    vg,
                    lv,
                    &cmd.display(),
                    None,
                ));
            }
            Ok(())
        }
        DiskRef::File(p) => match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ActionError::Refused(format!("removing {p}: {e}")))
            }
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpartx_and_domblkinfo() {
        let k = "add map vg1-vm1p1 (253:3): 0 2048 linear 253:2 2048\nadd map vg1-vm1p2 (253:4): 0 4096 linear 253:2 4096\nodd line\n";
        assert_eq!(
            parse_kpartx(k),
            vec!["/dev/mapper/vg1-vm1p1", "/dev/mapper/vg1-vm1p2"]
        );
        let d = "Capacity:       2147483648\nAllocation:     0\nPhysical:       2147483648\n";
        assert_eq!(parse_domblkinfo_capacity(d), Some(2 << 30));
        assert_eq!(parse_domblkinfo_capacity("nothing"), None);
    }

    #[test]
    fn new_disk_choice() {
        let cfg = crate::config::Config::from_toml_str("", "t").unwrap();
        assert_eq!(
            new_disk(&cfg, "vm1", Some("vg1")).unwrap().path(),
            "/dev/vg1/vm1"
        );
        assert!(new_disk(&cfg, "vm1", None)
            .unwrap_err()
            .to_string()
            .contains("--vg"));
        assert!(new_disk(&cfg, "-x", Some("vg1")).is_err());
        assert!(new_disk(&cfg, "vm1", Some("v/g")).is_err());
        let cfg =
            crate::config::Config::from_toml_str("[lifecycle]\nvg = \"shared\"\n", "t").unwrap();
        assert_eq!(
            new_disk(&cfg, "vm1", None).unwrap().path(),
            "/dev/shared/vm1"
        );
        let cfg = crate::config::Config::from_toml_str(
            "[lock]\nbackend = \"sanlock\"\n[lifecycle]\ndisk_dir = \"/srv/shared/\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            new_disk(&cfg, "vm1", None).unwrap().path(),
            "/srv/shared/vm1.raw"
        );
    }
}
