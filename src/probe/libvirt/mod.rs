//! libvirt probe: every domain, active and inactive, with its state *and reason*, configuration
//! (persistent, autostart, vCPUs, memory), disks (target + source, read from the domain XML) and
//! interfaces, plus CPU, block and interface counters for the active ones.
//!
//! How it talks to libvirt:
//! - State and interface counters of every domain in one `virConnectGetAllDomainStats` call
//!   (`bulk`, the one unsafe module: `virt` 0.5 exposes it only as raw records it never frees),
//!   the persistent and autostart sets in one list call each, then per domain its XML, info (CPU
//!   time, memory, vCPUs) and block stats per disk, on a few threads. The bulk call's cpu-total,
//!   balloon and block groups were measured slower in libvirtd than those per-domain calls, so
//!   they are not used (`docs/benchmarks.md` § libvirt round trips).
//! - The calls block, so they run on tokio's blocking pool. A blocked libvirt call cannot be
//!   cancelled: the collector's timeout abandons the wait, not the thread. So at most one probe is
//!   in flight: a scrape that finds the previous call still stuck past its timeout fails at once
//!   instead of piling up threads; a concurrent scrape (two Prometheus servers) waits its turn.
//! - One read-only connection is kept across scrapes (least privilege: an observer needs no
//!   write access, and libvirt's read-only socket needs no polkit). If libvirtd restarted, the
//!   first call on the old connection fails with the connection closed: the probe reopens and
//!   retries once within the same scrape, so a restart costs at most the scrapes during which
//!   libvirtd is actually down. The loss and the reconnection are logged once each.
//!
//! Failure classes: libvirtd unreachable → `Failed` with a hint to check the daemon; URI that
//! libvirt cannot open → `Failed` with libvirt's message; `Absent` only when there is clearly no
//! libvirt on the node: the URI is local (no host part), the socket directory `/run/libvirt` does
//! not exist and no libvirt daemon (libvirtd, virtqemud) is installed. A domain that vanishes
//! between the list and its own calls is skipped with a note in `Parsed::errors`.

mod bulk;
mod state;
pub mod xml;

pub use state::{
    BlockedReason, CrashedReason, DomainState, NoStateReason, PausedReason, PmSuspendedReason,
    RunningReason, ShutdownReason, ShutoffReason,
};
pub use xml::{parse_domain_xml, DomainDevices};

use std::path::Path;
use std::sync::{Arc, Mutex as StdMutex, Once};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::enumutil::Enum;
use virt::error::{Error as VirtError, ErrorDomain, ErrorNumber};
use virt::sys;

use super::{Parsed, ProbeError};
use crate::config::LibvirtConfig;

/// Everything the libvirt probe saw, domains sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LibvirtSnapshot {
    pub domains: Vec<LibvirtDomain>,
    /// Times this probe re-established a lost connection since it was created (libvirtd
    /// restarts seen by the agent).
    pub reconnects: u64,
    /// The libvirt daemon's version ("9.0.0"), when it could be read.
    pub libvirt_version: Option<String>,
    /// The hypervisor's (qemu's) version as libvirt reports it ("7.2.22").
    pub hypervisor_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LibvirtDomain {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    /// Defined (has a config that survives its stop), as opposed to transient.
    pub persistent: bool,
    pub autostart: bool,
    pub vcpus: u32,
    /// Current memory (balloon target for a running domain), bytes.
    pub memory_bytes: u64,
    pub max_memory_bytes: u64,
    /// CPU time used by the running domain, seconds; None when it is not running.
    pub cpu_seconds: Option<f64>,
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
    /// vmwarden's intent recorded in the domain's metadata (the watchdog's).
    pub intent: Option<crate::watchdog::intent::Intent>,
}

/// The host paths of the disks vmwarden locks (device `disk` or `lun` with an absolute source):
/// the one rule the hook, the watchdog and the actions share for "a VM's disks".
pub fn lockable_sources<'a>(disks: impl IntoIterator<Item = &'a Disk>) -> Vec<String> {
    disks
        .into_iter()
        .filter(|d| d.device == "disk" || d.device == "lun")
        .filter_map(|d| d.source.clone())
        .filter(|s| s.starts_with('/'))
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disk {
    /// Target device name in the guest: `vda`, `sdb`.
    pub target: String,
    /// `disk`, `cdrom`, `floppy` or `lun`.
    pub device: String,
    /// The `<disk type=...>`: `file`, `block`, `network`, `volume`, `dir`, ...
    pub source_type: String,
    /// Host path (`/dev/vg/vm1`, `/var/lib/libvirt/images/a.qcow2`), `pool/volume`, or
    /// `protocol:name` for network disks; None for an empty CD-ROM.
    pub source: Option<String>,
    /// I/O counters, for disks of running domains that have a source.
    pub stats: Option<BlockStats>,
}

/// Block I/O counters; None where the hypervisor does not report a field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockStats {
    pub read_bytes: Option<u64>,
    pub written_bytes: Option<u64>,
    pub read_requests: Option<u64>,
    pub write_requests: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interface {
    /// Host-side device (`vnet0`); only while the domain runs.
    pub target: Option<String>,
    pub mac: Option<String>,
    /// The `<interface type=...>`: `bridge`, `network`, `ethernet`, `direct`, ...
    pub if_type: String,
    pub stats: Option<InterfaceStats>,
}

/// Interface counters as the host sees the guest's NIC; None where not reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterfaceStats {
    pub rx_bytes: Option<u64>,
    pub rx_packets: Option<u64>,
    pub rx_drops: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub tx_packets: Option<u64>,
    pub tx_drops: Option<u64>,
}

/// The connection kept across scrapes.
#[derive(Default)]
struct ConnState {
    conn: Option<Connect>,
    /// A connection was lost and not yet re-established (to log the recovery once).
    lost: bool,
    reconnects: u64,
    /// libvirt's and the hypervisor's versions, read once per connection (an upgrade restarts
    /// libvirtd, which makes a new connection).
    versions: Option<(Option<String>, Option<String>)>,
}

pub struct LibvirtProbe {
    cfg: LibvirtConfig,
    /// Held by the blocking task for its whole run, so a stuck call keeps it.
    conn: Arc<AsyncMutex<ConnState>>,
    /// When the blocking task in flight started; None when none is.
    busy_since: Arc<StdMutex<Option<Instant>>>,
}

static QUIET_LIBVIRT: Once = Once::new();

impl LibvirtProbe {
    pub fn new(cfg: LibvirtConfig) -> Self {
        // libvirt's default error handler prints every error to stderr; we report them ourselves.
        QUIET_LIBVIRT.call_once(virt::error::clear_error_callback);
        LibvirtProbe {
            cfg,
            conn: Arc::new(AsyncMutex::new(ConnState::default())),
            busy_since: Arc::new(StdMutex::new(None)),
        }
    }

    /// Probe once. `timeout` is the caller's bound on the wait; a call still running after it
    /// makes later probes fail fast until it returns.
    pub async fn probe(&self, timeout: Duration) -> Result<Parsed<LibvirtSnapshot>, ProbeError> {
        let guard = match self.conn.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                let since = lock(&self.busy_since).map(|t| t.elapsed());
                match since {
                    Some(s) if s >= timeout => {
                        return Err(ProbeError::Failed(format!(
                            "previous libvirt call still hung after {:.0}s; not starting another \
                             (libvirtd not answering? `systemctl status libvirtd`, \
                             `virsh -c {} list --all`)",
                            s.as_secs_f64(),
                            self.cfg.uri
                        )))
                    }
                    // Another scrape's probe is running normally: wait for it (the caller's
                    // timeout bounds this wait; no thread is started meanwhile).
                    _ => self.conn.clone().lock_owned().await,
                }
            }
        };
        store(&self.busy_since, Some(Instant::now()));
        let busy = BusyGuard(self.busy_since.clone());
        let uri = self.cfg.uri.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _busy = busy; // cleared when the blocking work ends, not when the caller gives up
            let mut guard: OwnedMutexGuard<ConnState> = guard;
            fetch(&uri, &mut guard)
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(ProbeError::Failed(format!(
                "libvirt probe task failed: {e}"
            ))),
        }
    }
}

fn lock<T: Copy>(m: &StdMutex<T>) -> T {
    match m.lock() {
        Ok(g) => *g,
        Err(p) => *p.into_inner(),
    }
}

struct BusyGuard(Arc<StdMutex<Option<Instant>>>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        store(&self.0, None);
    }
}

fn store<T>(m: &StdMutex<T>, v: T) {
    match m.lock() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

/// Why a libvirt call failed, as far as the probe cares.
#[derive(Debug)]
enum CallError {
    /// The connection is gone (libvirtd stopped or restarted).
    Lost(String),
    /// The domain no longer exists.
    Vanished(String),
    /// The domain stopped: runtime stats are no longer available.
    NotRunning(String),
    Other(String),
}

fn classify(conn: &Connect, e: &VirtError) -> CallError {
    let msg = e.message().to_string();
    if !matches!(conn.is_alive(), Ok(true)) {
        return CallError::Lost(msg);
    }
    match e.code() {
        Enum::Known(ErrorNumber::NoDomain) => CallError::Vanished(msg),
        Enum::Known(ErrorNumber::OperationInvalid) => CallError::NotRunning(msg),
        Enum::Known(ErrorNumber::NoConnect | ErrorNumber::InvalidConn) => CallError::Lost(msg),
        _ => CallError::Other(msg),
    }
}

/// One probe on the blocking pool: (re)connect, collect, retry once on a stale connection.
fn fetch(uri: &str, st: &mut ConnState) -> Result<Parsed<LibvirtSnapshot>, ProbeError> {
    if let Some(c) = &st.conn {
        if !matches!(c.is_alive(), Ok(true)) {
            tracing::warn!(
                "libvirt connection to {uri} closed (libvirtd restarted?); reconnecting"
            );
            st.conn = None;
            st.lost = true;
        }
    }
    let reused = st.conn.is_some();
    let conn = match st.conn.take() {
        Some(c) => c,
        None => open(uri, st)?,
    };
    match collect(&conn) {
        Ok(mut p) => {
            versions(&conn, st, &mut p.value);
            st.conn = Some(conn);
            p.value.reconnects = st.reconnects;
            Ok(p)
        }
        Err(CallError::Lost(msg)) if reused => {
            drop(conn);
            tracing::warn!(
                "libvirt connection to {uri} lost ({msg}; libvirtd restarted?); reconnecting"
            );
            st.lost = true;
            let conn = open(uri, st)?;
            match collect(&conn) {
                Ok(mut p) => {
                    versions(&conn, st, &mut p.value);
                    st.conn = Some(conn);
                    p.value.reconnects = st.reconnects;
                    Ok(p)
                }
                Err(e) => Err(collect_failed(uri, e)),
            }
        }
        Err(e @ CallError::Lost(_)) => Err(collect_failed(uri, e)),
        Err(e) => {
            // The connection still works; keep it.
            st.conn = Some(conn);
            Err(collect_failed(uri, e))
        }
    }
}

/// libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release.
pub fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

/// Fill in the versions, read on the first probe of a connection.
fn versions(conn: &Connect, st: &mut ConnState, snap: &mut LibvirtSnapshot) {
    let (lib, hyp) = st
        .versions
        .get_or_insert_with(|| {
            (
                conn.lib_version().ok().map(version_string),
                conn.hyp_version()
                    .ok()
                    .filter(|v| *v > 0)
                    .map(version_string),
            )
        })
        .clone();
    snap.libvirt_version = lib;
    snap.hypervisor_version = hyp;
}

fn collect_failed(uri: &str, e: CallError) -> ProbeError {
    ProbeError::Failed(match e {
        CallError::Lost(m) => format!(
            "libvirt connection to {uri} lost: {m} — is libvirtd running? `systemctl status libvirtd`"
        ),
        CallError::Vanished(m) | CallError::NotRunning(m) | CallError::Other(m) => {
            format!("listing libvirt domains at {uri} failed: {m}")
        }
    })
}

fn open(uri: &str, st: &mut ConnState) -> Result<Connect, ProbeError> {
    match Connect::open_read_only(Some(uri)) {
        Ok(c) => {
            st.versions = None;
            if st.lost {
                tracing::info!("reconnected to libvirt at {uri}");
                st.lost = false;
                st.reconnects += 1;
            }
            Ok(c)
        }
        Err(e) => Err(open_error(uri, &e)),
    }
}

fn open_error(uri: &str, e: &VirtError) -> ProbeError {
    let msg = e.message();
    if no_libvirt_here(uri) {
        return ProbeError::Absent(format!(
            "no libvirt on this node (no /run/libvirt, no libvirtd or virtqemud installed): {msg}"
        ));
    }
    // Socket errors (no daemon, refused) come as system or RPC errors; "no connection driver
    // available for <uri>" is NoConnect and is about the URI, not the daemon.
    let unreachable = matches!(e.code(), Enum::Known(ErrorNumber::SystemError))
        || (matches!(e.domain(), Enum::Known(ErrorDomain::Rpc))
            && !matches!(e.code(), Enum::Known(ErrorNumber::NoConnect)));
    if unreachable {
        ProbeError::Failed(format!(
            "cannot connect to libvirt at {uri}: {msg} — is libvirtd running? `systemctl status libvirtd`"
        ))
    } else {
        ProbeError::Failed(format!(
            "libvirt cannot open {uri}: {msg} (check libvirt.uri in the vmwarden config)"
        ))
    }
}

/// Clearly no libvirt on this node: a local URI, no socket directory, no daemon installed.
fn no_libvirt_here(uri: &str) -> bool {
    no_libvirt_in(
        uri,
        Path::new("/run/libvirt"),
        &["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"],
    )
}

fn no_libvirt_in(uri: &str, run_dir: &Path, bin_dirs: &[&str]) -> bool {
    // `qemu:///system` is local; `qemu+ssh://host/system` names a host and says nothing about us.
    let local = uri
        .split_once("://")
        .map(|(_, rest)| rest.starts_with('/'))
        .unwrap_or(false);
    local
        && !run_dir.exists()
        && !bin_dirs.iter().any(|d| {
            let d = Path::new(d);
            d.join("libvirtd").exists() || d.join("virtqemud").exists()
        })
}

/// The stats groups read in the bulk call: only those libvirtd answers without the domain's
/// qemu monitor. Measured with 10 idle guests (docs/benchmarks.md § libvirt round trips), the
/// cpu-total, balloon and block groups cost libvirtd 3.5-5 ms per domain each, more than
/// `virDomainGetInfo` (CPU time, memory, vCPUs) plus `virDomainBlockStats` per disk, so those
/// stay per-domain calls.
const STATS: u32 = sys::VIR_DOMAIN_STATS_STATE | sys::VIR_DOMAIN_STATS_INTERFACE;

/// Threads for the per-domain calls (at most; fewer for fewer domains).
const WORKERS: usize = 4;

/// One scrape: 3 + N·(2 + disks) round trips for N domains (the bulk state and interface
/// stats of every domain, the persistent and the autostart lists, then per domain its XML, its
/// info and one block-stats call per disk), where the per-domain path took N·(7 + disks).
fn collect(conn: &Connect) -> Result<Parsed<LibvirtSnapshot>, CallError> {
    // NOWAIT: never wait for a domain's qemu job (a migration, a snapshot, a hung monitor) in
    // the one call that serves every domain; the groups read here need none today.
    let records =
        bulk::all_domain_stats(conn, STATS, sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
            .map_err(|e| classify(conn, &e))?;
    let uuids = |flag: u32| -> Result<std::collections::HashSet<String>, CallError> {
        let doms = conn
            .list_all_domains(flag)
            .map_err(|e| classify(conn, &e))?;
        Ok(doms.iter().filter_map(|d| d.uuid_string().ok()).collect())
    };
    let persistent = uuids(sys::VIR_CONNECT_LIST_DOMAINS_PERSISTENT)?;
    let autostart = uuids(sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART)?;
    // The per-domain calls mostly wait: on libvirtd, and through it on each qemu monitor. A few
    // threads on the one connection (libvirt multiplexes concurrent calls) overlap those waits.
    let per_thread = records.len().div_ceil(WORKERS).max(1);
    let results: Vec<(String, Result<LibvirtDomain, CallError>, Vec<String>)> =
        std::thread::scope(|sc| {
            let (persistent, autostart) = (&persistent, &autostart);
            let handles: Vec<_> = records
                .chunks(per_thread)
                .map(|part| {
                    sc.spawn(move || {
                        part.iter()
                            .map(|rec| {
                                let label = rec.domain.name().unwrap_or_else(|_| "?".to_string());
                                let mut notes = Vec::new();
                                let r = domain(conn, rec, persistent, autostart, &mut notes);
                                (label, r, notes)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![(
                            "?".to_string(),
                            Err(CallError::Other("libvirt worker thread panicked".into())),
                            Vec::new(),
                        )]
                    })
                })
                .collect()
        });
    let mut out = Parsed::new(LibvirtSnapshot::default());
    for (label, r, notes) in results {
        out.errors.extend(notes);
        match r {
            Ok(d) => out.value.domains.push(d),
            Err(CallError::Lost(m)) => return Err(CallError::Lost(m)),
            Err(CallError::Vanished(_)) | Err(CallError::NotRunning(_)) => out.errors.push(
                format!("domain {label} vanished during the probe (skipped)"),
            ),
            Err(CallError::Other(m)) => out
                .errors
                .push(format!("domain {label}: cannot read it (skipped): {m}")),
        }
    }
    out.value.domains.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One domain from its stats record plus its XML.
fn domain(
    conn: &Connect,
    rec: &bulk::Record,
    persistent: &std::collections::HashSet<String>,
    autostart: &std::collections::HashSet<String>,
    notes: &mut Vec<String>,
) -> Result<LibvirtDomain, CallError> {
    let err = |e: VirtError| classify(conn, &e);
    let dom = &rec.domain;
    // Name and UUID are held by the handle: no round trip.
    let name = dom.name().map_err(err)?;
    let uuid = dom.uuid_string().map_err(err)?;
    let int = |k: &str| rec.get(k).and_then(bulk::Value::as_i64);
    let uint = |k: &str| rec.get(k).and_then(bulk::Value::as_u64);
    let state = match (int("state.state"), int("state.reason")) {
        (Some(s), Some(r)) => match (i32::try_from(s), i32::try_from(r)) {
            (Ok(s), Ok(r)) => DomainState::from_raw(s, r),
            _ => return Err(CallError::Other(format!("state {s}/{r} out of range"))),
        },
        _ => return Err(CallError::Other("libvirt sent no state".to_string())),
    };
    let xml = dom.xml_desc(0).map_err(err)?;
    let devices = parse_domain_xml(&xml);
    notes.extend(devices.errors);
    let DomainDevices {
        mut disks,
        mut interfaces,
        intent,
    } = devices.value;

    let info = dom.info().map_err(err)?;
    let active = state.is_active();
    if active {
        for d in disks.iter_mut().filter(|d| d.source.is_some()) {
            match dom.block_stats(&d.target) {
                Ok(b) => {
                    d.stats = Some(BlockStats {
                        read_bytes: non_neg(b.rd_bytes),
                        written_bytes: non_neg(b.wr_bytes),
                        read_requests: non_neg(b.rd_req),
                        write_requests: non_neg(b.wr_req),
                    })
                }
                Err(e) => stat_failed(conn, dom, &e, &name, &d.target, notes)?,
            }
        }
        // net.N.name ties the record's numbered entries to the XML's interfaces (vnet0).
        let n = uint("net.count").unwrap_or(0);
        let nets: Vec<(String, String)> = (0..n)
            .filter_map(|i| {
                let prefix = format!("net.{i}.");
                let dev = rec.get(&format!("{prefix}name"))?.as_str()?.to_string();
                Some((dev, prefix))
            })
            .collect();
        for i in interfaces.iter_mut() {
            let Some(t) = &i.target else { continue };
            if let Some((_, p)) = nets.iter().find(|(dev, _)| dev == t) {
                i.stats = Some(InterfaceStats {
                    rx_bytes: uint(&format!("{p}rx.bytes")),
                    rx_packets: uint(&format!("{p}rx.pkts")),
                    rx_drops: uint(&format!("{p}rx.drop")),
                    tx_bytes: uint(&format!("{p}tx.bytes")),
                    tx_packets: uint(&format!("{p}tx.pkts")),
                    tx_drops: uint(&format!("{p}tx.drop")),
                });
            }
        }
    }
    Ok(LibvirtDomain {
        persistent: persistent.contains(&uuid),
        autostart: autostart.contains(&uuid),
        name,
        uuid,
        state,
        vcpus: info.nr_virt_cpu,
        memory_bytes: info.memory.saturating_mul(1024),
        max_memory_bytes: info.max_mem.saturating_mul(1024),
        cpu_seconds: active.then(|| info.cpu_time as f64 / 1e9),
        disks,
        interfaces,
        intent,
    })
}

/// A stats call failed: the connection or the domain being gone ends this domain's probe; a
/// domain that stopped meanwhile or a device libvirt cannot report on only costs its counters.
/// Errors for a domain that stops under us vary ("domain is not running", "Interface not found"),
/// so libvirt is asked again whether the domain still runs before calling it anything else.
fn stat_failed(
    conn: &Connect,
    dom: &Domain,
    e: &VirtError,
    domain: &str,
    device: &str,
    notes: &mut Vec<String>,
) -> Result<(), CallError> {
    let c = match classify(conn, e) {
        CallError::Other(m) => match dom.is_active() {
            Ok(true) => CallError::Other(m),
            Ok(false) => CallError::NotRunning(m),
            Err(e2) => classify(conn, &e2),
        },
        c => c,
    };
    match c {
        c @ (CallError::Lost(_) | CallError::Vanished(_)) => Err(c),
        CallError::NotRunning(_) => {
            notes.push(format!(
                "domain {domain} stopped during the probe: no stats for {device}"
            ));
            Ok(())
        }
        CallError::Other(m) => {
            notes.push(format!("domain {domain}: no stats for {device}: {m}"));
            Ok(())
        }
    }
}

/// libvirt reports -1 for a counter the hypervisor does not provide.
fn non_neg(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_version_numbers() {
        assert_eq!(version_string(9_000_000), "9.0.0");
        assert_eq!(version_string(7_002_022), "7.2.22");
        assert_eq!(version_string(10_010_000), "10.10.0");
    }

    #[test]
    fn absent_only_when_clearly_no_libvirt() {
        let empty = tempfile::tempdir().unwrap();
        let e = empty.path().to_str().unwrap();
        let gone = empty.path().join("run-libvirt");
        assert!(no_libvirt_in("qemu:///system", &gone, &[e]));
        // A remote URI: the local node's libvirt is irrelevant.
        assert!(!no_libvirt_in("qemu+ssh://h/system", &gone, &[e]));
        // The socket directory exists (libvirtd ran since boot): a failure, not absence.
        assert!(!no_libvirt_in("qemu:///system", empty.path(), &[e]));
        // A daemon is installed but not started: a failure too.
        let bin = tempfile::tempdir().unwrap();
        std::fs::write(bin.path().join("virtqemud"), "").unwrap();
        assert!(!no_libvirt_in(
            "qemu:///system",
            &gone,
            &[bin.path().to_str().unwrap()]
        ));
    }
}
