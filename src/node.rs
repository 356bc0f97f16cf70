//! The node map: which libvirt domain uses which disk, and what each disk is on this host — an LV
//! (with the cluster lock this host holds on it) and/or a DRBD volume (with its local disk state).
//! Pure: built from a collected [`Snapshot`], no I/O. Consumers: `invariants`, metrics, `check`.
//!
//! A disk source resolves to an LV when it is `/dev/VG/LV`, `/dev/mapper/VG-LV` (device-mapper
//! name: each `-` inside a VG or LV name doubled), or equal to an LV's reported path or dm path.
//! It resolves to a DRBD volume when it is `/dev/drbdN`, `/dev/drbd/by-res/RES/VOL` or
//! `/dev/drbd/by-res/RES` (volume 0); an LV whose physical volumes are DRBD devices (a shared VG on
//! dual-primary DRBD) brings those DRBD volumes with it.

use std::collections::HashMap;

use crate::collect::{Outcome, Snapshot};
use crate::probe::drbd::{DiskState, DrbdSnapshot, DrbdVolume};
use crate::probe::libvirt::{DomainState, LibvirtSnapshot};
use crate::probe::lvm::{LvLock, LvmSnapshot};
use crate::probe::sanlock::LeaseMode;

/// Whether a source was observed for this map, and if not, why.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The collector succeeded; what the map holds from it is the truth of this scrape.
    Yes,
    /// The source does not exist on this node (no DRBD module, no lvm): nothing of it to judge.
    Absent(String),
    /// Failed or disabled: nothing may be concluded from its absence in the map.
    No(String),
}

impl Observed {
    fn of<T>(name: &str, o: &Outcome<T>) -> Observed {
        match o {
            Outcome::Ok(_) => Observed::Yes,
            Outcome::Absent(why) => Observed::Absent(format!("{name} is absent: {why}")),
            Outcome::Failed(why) => Observed::No(format!("the {name} collector failed: {why}")),
            Outcome::Disabled => Observed::No(format!("the {name} collector is disabled")),
        }
    }

    /// Usable for judging: observed, or known not to exist here.
    pub fn usable(&self) -> bool {
        !matches!(self, Observed::No(_))
    }

    pub fn why_not(&self) -> Option<&str> {
        match self {
            Observed::No(w) => Some(w),
            _ => None,
        }
    }
}

/// One LV as the map sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LvRef {
    pub vg: String,
    pub name: String,
    pub uuid: String,
    /// The VG is shared through lvmlockd.
    pub shared_vg: bool,
    pub lock: LvLock,
    /// DRBD minors among the LV's physical volumes.
    pub drbd_minors: Vec<u32>,
}

impl LvRef {
    /// `vg/lv`, as lvm commands take it.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.vg, self.name)
    }
}

/// One DRBD volume as the map sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DrbdRef {
    pub minor: u32,
    pub resource: String,
    pub volume: u32,
    pub disk_state: DiskState,
    /// DRBD 9 intentionally diskless client (reads and writes go to peers).
    pub client: bool,
    /// I/O to the device is suspended (no quorum, a fence handler running, `drbdadm suspend-io`).
    pub io_suspended: bool,
    /// Each peer: its name, whether the connection is up (`Connected`), and its disk state.
    pub peers: Vec<(String, bool, DiskState)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiskMap {
    pub target: String,
    pub source: Option<String>,
    /// Index into [`NodeMap::lvs`].
    pub lv: Option<usize>,
    /// The DRBD volumes under the disk: the disk itself, or the PVs of its LV.
    pub drbd: Vec<DrbdRef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DomainMap {
    pub name: String,
    pub state: DomainState,
    pub disks: Vec<DiskMap>,
}

impl DomainMap {
    /// A qemu process exists (running, paused, blocked, shutting down, crashed and kept,
    /// pmsuspended): it has its disks open.
    pub fn uses_disks(&self) -> bool {
        self.state.is_active()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeMap {
    pub domains: Vec<DomainMap>,
    pub lvs: Vec<LvRef>,
    pub libvirt: Observed,
    pub lvm: Observed,
    pub drbd: Observed,
    /// Why lvmlockd's lock modes are unknown, when a shared VG exists and lvmlockd did not answer.
    pub lockd_unknown: Option<String>,
    /// DRBD volumes with an unresolved split brain (reported by DRBD's handler).
    /// With the resource name DRBD's handler reported.
    pub drbd_split_brain: Vec<(DrbdRef, String)>,
    /// Under the sanlock lease backend (`[lock] backend = "sanlock"`): the VM leases this host
    /// holds. `None` with the lvmlockd backend.
    pub leases: Option<LeaseMap>,
    /// The VGs whose lvmlockd lockspace is started here (`lvmlockctl --info`); `None` when
    /// lvmlockd was not asked or did not answer.
    pub lockd_started: Option<Vec<String>>,
}

/// The per-VM sanlock leases this host holds (resource name = VM) in the lease lockspace.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseMap {
    pub lockspace: String,
    pub held: Vec<(String, LeaseMode)>,
    /// Whether sanlock was observed. Absent counts as observed: no daemon holds no lease.
    pub sanlock: Observed,
    /// The lease lockspace is joined and live here: listed, not being added or removed, not
    /// given up by the daemon, its last renewal a success. `false` also when sanlock was not
    /// observed.
    pub lockspace_live: bool,
}

impl LeaseMap {
    pub fn mode(&self, vm: &str) -> Option<LeaseMode> {
        self.held.iter().find(|(v, _)| v == vm).map(|(_, m)| *m)
    }

    /// `LOCKSPACE:VM`, as sanlock names the lease.
    pub fn subject(&self, vm: &str) -> String {
        format!("{}:{vm}", self.lockspace)
    }
}

impl NodeMap {
    pub fn build(snap: &Snapshot) -> NodeMap {
        fn ok<T>(o: &Outcome<T>) -> Option<&T> {
            match o {
                Outcome::Ok(v) => Some(v),
                _ => None,
            }
        }
        NodeMap::from_parts(
            ok(&snap.libvirt.outcome),
            ok(&snap.lvm.outcome),
            ok(&snap.drbd.outcome),
            Observed::of("libvirt", &snap.libvirt.outcome),
            Observed::of("lvm", &snap.lvm.outcome),
            Observed::of("drbd", &snap.drbd.outcome),
        )
    }

    /// [`NodeMap::build`], plus the VM leases held in `lease_lockspace` when the cluster uses
    /// the sanlock lease backend.
    pub fn build_with_leases(snap: &Snapshot, lease_lockspace: Option<&str>) -> NodeMap {
        let mut map = NodeMap::build(snap);
        if let Some(ls) = lease_lockspace {
            let held = match &snap.sanlock.outcome {
                Outcome::Ok(s) => s
                    .resources
                    .iter()
                    .filter(|r| r.lockspace == ls)
                    .map(|r| (r.name.clone(), r.mode))
                    .collect(),
                _ => Vec::new(),
            };
            let lockspace_live = match &snap.sanlock.outcome {
                Outcome::Ok(s) => s.lockspaces.iter().any(|l| {
                    l.name == ls
                        && l.state == crate::probe::sanlock::ListState::Active
                        && l.space_dead.unwrap_or(0) == 0
                        && l.killing_pids.unwrap_or(0) == 0
                        && l.renewal_last_result.map_or(true, |r| r == 1)
                }),
                _ => false,
            };
            map.leases = Some(LeaseMap {
                lockspace: ls.to_string(),
                held,
                lockspace_live,
                sanlock: Observed::of("sanlock", &snap.sanlock.outcome),
            });
        }
        map
    }

    fn from_parts(
        libvirt: Option<&LibvirtSnapshot>,
        lvm: Option<&LvmSnapshot>,
        drbd: Option<&DrbdSnapshot>,
        libvirt_obs: Observed,
        lvm_obs: Observed,
        drbd_obs: Observed,
    ) -> NodeMap {
        let by_minor: HashMap<u32, &DrbdVolume> = drbd
            .map(|d| d.volumes.iter().map(|v| (v.minor, v)).collect())
            .unwrap_or_default();
        let drbd_ref = |minor: u32| by_minor.get(&minor).map(|v| to_drbd_ref(v));
        let lv_index = lvm.map(LvIndex::new);
        let mut lvs = Vec::new();
        let mut lockd_unknown = None;
        if let Some(l) = lvm {
            for lv in &l.lvs {
                let lock = l.lv_lock(lv);
                if lock == LvLock::Unknown && lockd_unknown.is_none() {
                    lockd_unknown = Some(match &l.lockd {
                        crate::probe::lvm::LockdStatus::Unavailable(why) => {
                            format!("lvmlockd could not be asked: {why}")
                        }
                        _ => "lvmlockd was not asked".to_string(),
                    });
                }
                let drbd_minors = lv_drbd_minors(lv, drbd);
                lvs.push(LvRef {
                    vg: lv.vg.clone(),
                    name: lv.name.clone(),
                    uuid: lv.uuid.clone(),
                    shared_vg: l.vg(&lv.vg).is_some_and(|v| v.is_shared()),
                    lock,
                    drbd_minors,
                });
            }
        }
        let mut domains = Vec::new();
        if let Some(lv) = libvirt {
            for d in &lv.domains {
                let disks = d
                    .disks
                    .iter()
                    .map(|disk| {
                        let src = disk.source.as_deref();
                        let lv_idx = src.and_then(|s| lv_index.as_ref()?.resolve(s));
                        let mut refs: Vec<DrbdRef> = Vec::new();
                        let direct = match src.and_then(drbd_minor) {
                            Some(m) => drbd_ref(m),
                            None => src.and_then(|s| resolve_drbd(s, drbd)),
                        };
                        if let Some(r) = direct {
                            refs.push(r);
                        }
                        if let Some(i) = lv_idx {
                            for m in lvs.get(i).map(|l| l.drbd_minors.as_slice()).unwrap_or(&[]) {
                                if let Some(r) = drbd_ref(*m) {
                                    if !refs.iter().any(|x| x.minor == r.minor) {
                                        refs.push(r);
                                    }
                                }
                            }
                        }
                        DiskMap {
                            target: disk.target.clone(),
                            source: disk.source.clone(),
                            lv: lv_idx,
                            drbd: refs,
                        }
                    })
                    .collect();
                domains.push(DomainMap {
                    name: d.name.clone(),
                    state: d.state,
                    disks,
                });
            }
        }
        let drbd_split_brain = drbd
            .map(|d| {
                d.volumes
                    .iter()
                    .filter_map(|v| Some((to_drbd_ref(v), v.split_brain.clone()?)))
                    .collect()
            })
            .unwrap_or_default();
        NodeMap {
            domains,
            lvs,
            libvirt: libvirt_obs,
            lvm: lvm_obs,
            drbd: drbd_obs,
            lockd_unknown,
            drbd_split_brain,
            leases: None,
            lockd_started: lvm.and_then(|l| match &l.lockd {
                crate::probe::lvm::LockdStatus::Up(info) => Some(
                    // As vmwarden_lvm_vg_lockspace_started: lvmlockd lists the VG.
                    info.vgs.iter().map(|v| v.vg_name.clone()).collect(),
                ),
                _ => None,
            }),
        }
    }

    pub fn lv(&self, disk: &DiskMap) -> Option<&LvRef> {
        disk.lv.and_then(|i| self.lvs.get(i))
    }
}

/// The DRBD minors under an LV: its physical volumes (`lvs -o devices`: `/dev/drbd0(0),…`) that
/// are DRBD devices.
fn lv_drbd_minors(lv: &crate::probe::lvm::Lv, drbd: Option<&DrbdSnapshot>) -> Vec<u32> {
    lv.devices
        .split(',')
        .filter_map(|d| {
            let pv = d.split('(').next().unwrap_or("").trim();
            resolve_drbd(pv, drbd)
                .map(|r| r.minor)
                .or_else(|| drbd_minor(pv))
        })
        .collect()
}

/// What keeps the DRBD volumes under disk `paths` from serving I/O on this node, in words, for
/// disks of a VM that is not defined here yet (a live migration's target, asked by the source's
/// preflight). The paths resolve as a domain's disks do: a `/dev/drbd…` path, or an LV on DRBD
/// physical volumes. Empty: no problem, or not on DRBD as far as this node can tell (the DRBD
/// collector disabled, or no DRBD here and no disk on a DRBD path). DRBD's state not read while a
/// disk is known to be on DRBD is a problem, never a pass.
pub fn drbd_problems_under(
    drbd: &Outcome<DrbdSnapshot>,
    lvm: &Outcome<LvmSnapshot>,
    paths: &[String],
) -> Vec<String> {
    let d = match drbd {
        Outcome::Ok(d) => Some(d),
        _ => None,
    };
    let l = match lvm {
        Outcome::Ok(l) => Some(l),
        _ => None,
    };
    let index = l.map(LvIndex::new);
    let mut problems = Vec::new();
    for path in paths {
        let mut minors: Vec<u32> = Vec::new();
        let mut on_drbd = false;
        if path.starts_with("/dev/drbd") {
            on_drbd = true;
            match drbd_minor(path).or_else(|| resolve_drbd(path, d).map(|r| r.minor)) {
                Some(m) => minors.push(m),
                None if d.is_some() => {
                    problems.push(format!("{path}: no such DRBD device is configured here"))
                }
                None => {}
            }
        }
        if let (Some(l), Some(i)) = (l, index.as_ref().and_then(|x| x.resolve(path))) {
            let lv = &l.lvs[i];
            for m in lv_drbd_minors(lv, d) {
                on_drbd = true;
                if !minors.contains(&m) {
                    minors.push(m);
                }
            }
        }
        if !on_drbd {
            continue;
        }
        let Some(d) = d else {
            if !matches!(drbd, Outcome::Disabled) {
                let why = Observed::of("drbd", drbd);
                problems.push(format!(
                    "{path} is on DRBD but its state is not known here: {}",
                    why.why_not().unwrap_or("not collected")
                ));
            }
            continue;
        };
        for m in minors {
            match d.volumes.iter().find(|v| v.minor == m) {
                Some(v) => {
                    problems.extend(crate::watchdog::storage::drbd_ref_problems(&to_drbd_ref(v)))
                }
                None => problems.push(format!(
                    "{path} is on /dev/drbd{m}, which DRBD does not list here"
                )),
            }
        }
    }
    problems.dedup();
    problems
}

fn to_drbd_ref(v: &DrbdVolume) -> DrbdRef {
    DrbdRef {
        minor: v.minor,
        resource: v.resource.clone(),
        volume: v.volume,
        disk_state: v.disk_state.clone(),
        client: v.client == Some(true),
        io_suspended: v.io_suspended,
        peers: v
            .peers
            .iter()
            .map(|p| {
                (
                    p.name.to_string(),
                    p.connection == crate::probe::drbd::ConnState::Connected,
                    p.disk_state.clone(),
                )
            })
            .collect(),
    }
}

/// The LV (index into `lvm.lvs`, which is also the index into [`NodeMap::lvs`]) a path names.
pub fn resolve_lv(path: &str, lvm: Option<&LvmSnapshot>) -> Option<usize> {
    LvIndex::new(lvm?).resolve(path)
}

/// LV lookup by path and by name, built once per map (nodes carry thousands of LVs).
struct LvIndex<'a> {
    by_path: HashMap<&'a str, usize>,
    by_name: HashMap<(&'a str, &'a str), usize>,
}

impl<'a> LvIndex<'a> {
    fn new(lvm: &'a LvmSnapshot) -> Self {
        let mut by_path = HashMap::with_capacity(lvm.lvs.len() * 2);
        let mut by_name = HashMap::with_capacity(lvm.lvs.len());
        for (i, l) in lvm.lvs.iter().enumerate() {
            for p in [l.path.as_str(), l.dm_path.as_str()] {
                if !p.is_empty() {
                    by_path.entry(p).or_insert(i);
                }
            }
            by_name.entry((l.vg.as_str(), l.name.as_str())).or_insert(i);
        }
        LvIndex { by_path, by_name }
    }

    fn resolve(&self, path: &str) -> Option<usize> {
        if let Some(i) = self.by_path.get(path) {
            return Some(*i);
        }
        let (vg, lv) = if let Some(dm) = path.strip_prefix("/dev/mapper/") {
            split_dm_name(dm)?
        } else {
            let rest = path.strip_prefix("/dev/")?;
            let (vg, lv) = rest.split_once('/')?;
            if lv.contains('/') {
                return None;
            }
            (vg.to_string(), lv.to_string())
        };
        self.by_name.get(&(vg.as_str(), lv.as_str())).copied()
    }
}

/// Device-mapper name of an LV → (VG, LV): a single `-` separates them, `--` is a `-` in a name.
pub fn split_dm_name(dm: &str) -> Option<(String, String)> {
    let mut vg = String::new();
    let mut chars = dm.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' {
            if chars.peek() == Some(&'-') {
                chars.next();
                vg.push('-');
            } else {
                let rest: String = chars.collect();
                let lv = rest.replace("--", "-");
                if vg.is_empty() || lv.is_empty() {
                    return None;
                }
                return Some((vg, lv));
            }
        } else {
            vg.push(c);
        }
    }
    None
}

/// `/dev/drbdN` → N.
pub fn drbd_minor(path: &str) -> Option<u32> {
    let n = path.strip_prefix("/dev/drbd")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The DRBD volume a path names, if DRBD knows it.
pub fn resolve_drbd(path: &str, drbd: Option<&DrbdSnapshot>) -> Option<DrbdRef> {
    let drbd = drbd?;
    if let Some(m) = drbd_minor(path) {
        return drbd.volumes.iter().find(|v| v.minor == m).map(to_drbd_ref);
    }
    let rest = path.strip_prefix("/dev/drbd/by-res/")?;
    let (res, vol) = match rest.split_once('/') {
        Some((r, v)) => (r, v.parse::<u32>().ok()?),
        None => (rest, 0),
    };
    drbd.volumes
        .iter()
        .find(|v| v.resource == res && v.volume == vol)
        .map(to_drbd_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_names_split_on_single_dashes() {
        assert_eq!(split_dm_name("vg1-vm1"), Some(("vg1".into(), "vm1".into())));
        assert_eq!(
            split_dm_name("my--vg-vm--disk--0"),
            Some(("my-vg".into(), "vm-disk-0".into()))
        );
        assert_eq!(split_dm_name("novg"), None);
        assert_eq!(split_dm_name("-lv"), None);
        assert_eq!(split_dm_name("vg-"), None);
    }

    #[test]
    fn drbd_minors_parse() {
        assert_eq!(drbd_minor("/dev/drbd0"), Some(0));
        assert_eq!(drbd_minor("/dev/drbd1003"), Some(1003));
        assert_eq!(drbd_minor("/dev/drbd"), None);
        assert_eq!(drbd_minor("/dev/drbd/by-res/r0/0"), None);
        assert_eq!(drbd_minor("/dev/drbd1p1"), None);
    }
}
