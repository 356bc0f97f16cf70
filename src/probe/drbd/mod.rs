//! DRBD probe: `/proc/drbd` for DRBD 8.x, `drbdsetup status --json` for DRBD 9. Both map into one
//! [`DrbdSnapshot`] so that metrics and invariants never care which version a node runs.
//!
//! Mapping decisions (also in `docs/metrics.md`):
//! - 8.x `/proc/drbd` has no resource names, volume numbers or peer names. A minor becomes
//!   `resource = "drbd<minor>"` (its kernel device name), `volume = 0`, and exactly one peer
//!   named `"peer"`.
//! - 8.x `cs:` mixes connection and replication states. It is split the DRBD 9 way: a `cs:` that
//!   is a replication state (SyncSource, VerifyS, …) gives connection `Connected` plus that
//!   replication state; `cs:Connected` gives `Connected`/`Established`; any other `cs:` (StandAlone,
//!   WFConnection, …) is the connection state as printed, with replication `Off`. A split brain on
//!   8.x shows as `StandAlone` and is exported as such.
//! - `cs:Unconfigured` is kept as connection state `Unconfigured`; the kernel prints it for a
//!   minor that is Secondary, Diskless and StandAlone, so role and disk state say exactly that.

mod gen;
mod json9;
mod proc8;
pub mod split_brain;

use std::borrow::Cow;
use std::time::Duration;

use smallvec::SmallVec;

pub use gen::generate_proc_drbd;
pub use json9::parse_status_json;
pub use proc8::parse_proc_drbd;

use super::{Parsed, ProbeError};
use crate::config::DrbdConfig;
use crate::exec::{Cmd, ExecError};

/// Declares a DRBD state enum: known states in DRBD's own spelling plus `Other(String)` for
/// anything a newer DRBD may print. `ALL` lists the known spellings (tests, generators).
macro_rules! drbd_states {
    ($(#[$meta:meta])* $name:ident, default = $default:ident, { $($var:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($var,)+
            /// A state this build does not know, as DRBD printed it.
            Other(String),
        }

        impl $name {
            /// Every known state, in DRBD's spelling.
            pub const ALL: &'static [&'static str] = &[$($s),+];

            /// Parse DRBD's spelling; unknown words are kept in `Other`.
            pub fn from_drbd(s: &str) -> Self {
                match s {
                    $($s => Self::$var,)+
                    other => Self::Other(other.to_string()),
                }
            }

            /// DRBD's own spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$var => $s,)+
                    Self::Other(s) => s,
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::$default
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

drbd_states!(
    /// Connection state of one peer (DRBD 9 `connection-state`; 8.x `cs:` split as described
    /// in the module docs, hence the 8.x-only `WFConnection`, `WFReportParams`, `Unconfigured`).
    ConnState, default = StandAlone, {
        StandAlone = "StandAlone",
        Disconnecting = "Disconnecting",
        Unconnected = "Unconnected",
        Timeout = "Timeout",
        BrokenPipe = "BrokenPipe",
        NetworkFailure = "NetworkFailure",
        ProtocolError = "ProtocolError",
        TearDown = "TearDown",
        WFConnection = "WFConnection",
        WFReportParams = "WFReportParams",
        Connecting = "Connecting",
        Connected = "Connected",
        Unconfigured = "Unconfigured",
    }
);

drbd_states!(
    /// Replication state of one peer device (DRBD 9 `replication-state`; on 8.x derived from `cs:`).
    ReplState, default = Off, {
        Off = "Off",
        Established = "Established",
        StartingSyncS = "StartingSyncS",
        StartingSyncT = "StartingSyncT",
        WFBitMapS = "WFBitMapS",
        WFBitMapT = "WFBitMapT",
        WFSyncUUID = "WFSyncUUID",
        SyncSource = "SyncSource",
        SyncTarget = "SyncTarget",
        VerifyS = "VerifyS",
        VerifyT = "VerifyT",
        PausedSyncS = "PausedSyncS",
        PausedSyncT = "PausedSyncT",
        Ahead = "Ahead",
        Behind = "Behind",
    }
);

drbd_states!(
    /// Role of a node for a resource.
    Role, default = Unknown, {
        Primary = "Primary",
        Secondary = "Secondary",
        Unknown = "Unknown",
    }
);

drbd_states!(
    /// Disk state of a local or peer disk.
    DiskState, default = DUnknown, {
        Diskless = "Diskless",
        Attaching = "Attaching",
        Detaching = "Detaching",
        Failed = "Failed",
        Negotiating = "Negotiating",
        Inconsistent = "Inconsistent",
        Outdated = "Outdated",
        DUnknown = "DUnknown",
        Consistent = "Consistent",
        UpToDate = "UpToDate",
    }
);

drbd_states!(
    /// How DRBD orders writes on the backing device (8.x `wo:` letter b/f/d/n, 9 `write-ordering`).
    WriteOrdering, default = Flush, {
        None = "none",
        Drain = "drain",
        Flush = "flush",
        Barrier = "barrier",
    }
);

impl ReplState {
    /// A resync or online verify is running (DRBD prints progress for these).
    pub fn is_resync(&self) -> bool {
        matches!(
            self,
            ReplState::SyncSource
                | ReplState::SyncTarget
                | ReplState::PausedSyncS
                | ReplState::PausedSyncT
                | ReplState::VerifyS
                | ReplState::VerifyT
        )
    }

    pub fn is_verify(&self) -> bool {
        matches!(self, ReplState::VerifyS | ReplState::VerifyT)
    }
}

/// Where the snapshot came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DrbdSource {
    /// `/proc/drbd` of DRBD 8.x.
    #[default]
    Proc8,
    /// `drbdsetup status --json` of DRBD 9.
    Json9,
}

impl DrbdSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            DrbdSource::Proc8 => "proc",
            DrbdSource::Json9 => "drbdsetup-json",
        }
    }
}

/// Everything DRBD said on this node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrbdSnapshot {
    pub source: DrbdSource,
    /// Kernel module version (`8.4.11`, `9.2.8`), from `/proc/drbd` when it was readable.
    pub version: Option<String>,
    /// The build line of `/proc/drbd` (`GIT-hash: …` or `srcversion: …`).
    pub build: Option<String>,
    pub volumes: Vec<DrbdVolume>,
}

/// One DRBD device (a minor): a volume of a resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrbdVolume {
    pub minor: u32,
    /// DRBD 9 resource name; on 8.x `drbd<minor>`.
    pub resource: String,
    /// DRBD 9 volume number; 0 on 8.x.
    pub volume: u32,
    pub role: Role,
    pub disk_state: DiskState,
    /// DRBD 9 only.
    pub quorum: Option<bool>,
    /// DRBD 9 `client` (intentionally diskless).
    pub client: Option<bool>,
    /// I/O to this device is suspended (8.x flag `s`, 9 resource `suspended`).
    pub io_suspended: bool,
    /// Activity-log updates suspended (8.x 6th flag); not reported by DRBD 9 JSON.
    pub al_suspended: Option<bool>,
    /// 8.x congestion flag as printed (`n` network, `b` backing device, `a` both, `d` DRBD
    /// itself, …); `None` when `-` or not reported.
    pub congestion: Option<char>,
    pub write_ordering: Option<WriteOrdering>,
    /// Device size (DRBD 9 only).
    pub size_bytes: Option<u64>,
    /// Data read from the local backing disk (8.x `dr`, 9 `read`).
    pub read_bytes: Option<u64>,
    /// Data written to the local backing disk (8.x `dw`, 9 `written`).
    pub written_bytes: Option<u64>,
    /// Activity log metadata updates (8.x `al`).
    pub al_writes: Option<u64>,
    /// Bitmap metadata updates (8.x `bm`).
    pub bm_writes: Option<u64>,
    /// Requests open to the local backing disk (8.x `lo`).
    pub lower_pending: Option<u64>,
    /// Application requests accepted but not completed (8.x `ap`).
    pub upper_pending: Option<u64>,
    /// DRBD's split-brain handler reported a split brain on this volume and the peers have not
    /// been connected since ([`split_brain`]): the resource name DRBD gave its handler (on 8.x
    /// the real name, where the probe only knows `drbd<minor>`).
    pub split_brain: Option<String>,
    pub peers: Peers,
}

/// The peers of a volume. Inline for one peer (every 8.x minor, most DRBD 9 two-node setups):
/// a heap allocation per minor was most of the parser's cost at 1,000 minors.
pub type Peers = SmallVec<[DrbdPeer; 1]>;

/// Which resync suspensions are in force for a peer device (8.x flags `a`, `p`, `u`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncSuspended {
    pub user: bool,
    pub peer: bool,
    pub dependency: bool,
}

impl ResyncSuspended {
    pub fn any(&self) -> bool {
        self.user || self.peer || self.dependency
    }
}

/// This volume as seen through one connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrbdPeer {
    /// DRBD 9 connection name; `"peer"` on 8.x (borrowed: no allocation per minor).
    pub name: Cow<'static, str>,
    pub node_id: Option<u32>,
    pub connection: ConnState,
    pub replication: ReplState,
    pub role: Role,
    pub disk_state: DiskState,
    /// Replication protocol letter (8.x only; blank while StandAlone).
    pub protocol: Option<char>,
    /// The peer is intentionally diskless (DRBD 9 `peer-client`).
    pub client: Option<bool>,
    /// The network to this peer is congested (9 `congested`; 8.x congestion flag `n` or `a`).
    pub congested: Option<bool>,
    pub resync_suspended: ResyncSuspended,
    /// 8.x `ns`, 9 `sent`.
    pub sent_bytes: Option<u64>,
    /// 8.x `nr`, 9 `received`.
    pub received_bytes: Option<u64>,
    /// 8.x `oos`, 9 `out-of-sync`.
    pub out_of_sync_bytes: Option<u64>,
    /// Requests sent to the peer and not yet answered (8.x `pe`).
    pub pending: Option<u64>,
    /// Requests received from the peer and not yet answered (8.x `ua`).
    pub unacked: Option<u64>,
    /// 8.x `ep`: epochs in flight.
    pub epochs: Option<u64>,
    /// DRBD 9 `ap-in-flight`, as printed (application data in flight).
    pub ap_in_flight: Option<u64>,
    /// DRBD 9 `rs-in-flight`, as printed (resync data in flight).
    pub rs_in_flight: Option<u64>,
    /// Present while a resync or online verify runs and DRBD reports progress (boxed: rare,
    /// and it keeps the per-peer struct small at thousands of minors).
    pub resync: Option<Box<Resync>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResyncKind {
    #[default]
    Sync,
    /// Online verify (`drbdadm verify`).
    Verify,
}

/// Progress of a resync or online verify.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resync {
    pub kind: ResyncKind,
    /// 0..=1; `None` when DRBD gave no figure to compute it from (no series, never a made-up 0).
    pub done_ratio: Option<f64>,
    pub remaining_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// DRBD's estimate of the time left.
    pub finish_seconds: Option<u64>,
    /// Recent speed (8.x first `speed:` figure, 9 `db1/dt1`).
    pub speed_bytes_per_second: Option<u64>,
    /// Mean speed since the resync started (8.x figure in parentheses, 9 `db/dt`).
    pub average_speed_bytes_per_second: Option<u64>,
    /// Target rate of the dynamic resync controller (8.x `want:`, 9 `want`).
    pub want_bytes_per_second: Option<u64>,
    /// 8.x prints `(stalled)` when no progress was made for a while.
    pub stalled: bool,
}

/// Major version number of a DRBD version string (`8.4.11` → 8).
fn major_version(v: &str) -> Option<u32> {
    v.split('.').next().and_then(|m| m.parse().ok())
}

/// Observe DRBD on this node. See the module docs and `docs/metrics.md` for the source choice:
/// `/proc/drbd` with device lines or a version 8.x → 8.x parser; otherwise (DRBD 9, or no proc
/// file) → `drbdsetup status --json`; neither → [`ProbeError::Absent`].
pub async fn probe(
    cfg: &DrbdConfig,
    timeout: Duration,
) -> Result<Parsed<DrbdSnapshot>, ProbeError> {
    let mut parsed = probe_status(cfg, timeout).await?;
    split_brain::apply(&cfg.split_brain_dir, &mut parsed);
    Ok(parsed)
}

async fn probe_status(
    cfg: &DrbdConfig,
    timeout: Duration,
) -> Result<Parsed<DrbdSnapshot>, ProbeError> {
    // procfs reads do not block in practice; doing it inside this future keeps it under the
    // collector's timeout anyway.
    let proc_read = tokio::fs::read(&cfg.proc_path).await;
    // A proc file that exists but cannot be read still means DRBD is here: a failure to report,
    // never an absence.
    let drbd_present = !matches!(&proc_read, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    let (proc_parsed, proc_problem) = match proc_read {
        Ok(bytes) => (
            Some(parse_proc_drbd(&String::from_utf8_lossy(&bytes))),
            None,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            None,
            Some(format!(
                "{} does not exist (DRBD module not loaded)",
                cfg.proc_path
            )),
        ),
        Err(e) => (None, Some(format!("cannot read {}: {e}", cfg.proc_path))),
    };

    if let Some(p) = &proc_parsed {
        let major = p.value.version.as_deref().and_then(major_version);
        let is_8x = !p.value.volumes.is_empty() || matches!(major, Some(m) if m < 9);
        if is_8x {
            // A DRBD 8 file whose every device block was unreadable yields nothing usable:
            // reporting "no devices" would be a confident wrong answer.
            if p.value.volumes.is_empty() && !p.errors.is_empty() {
                return Err(ProbeError::Failed(format!(
                    "{} reports DRBD {} but nothing in it could be read ({} problem{}, first: {}); \
                     look at `cat {}`",
                    cfg.proc_path,
                    p.value.version.as_deref().unwrap_or("8"),
                    p.errors.len(),
                    if p.errors.len() == 1 { "" } else { "s" },
                    p.errors[0],
                    cfg.proc_path
                )));
            }
            return Ok(proc_parsed.unwrap_or_default());
        }
    }
    // Readable, but neither a version line nor a device line: not DRBD's proc file at all (a
    // wrong `proc_path`, a damaged read). Hints about drbd-utils would send the operator the
    // wrong way.
    let proc_unknown_format = proc_parsed
        .as_ref()
        .is_some_and(|p| p.value.version.is_none() && p.value.volumes.is_empty());

    let proc_version = proc_parsed.as_ref().and_then(|p| p.value.version.clone());
    let proc_build = proc_parsed.as_ref().and_then(|p| p.value.build.clone());
    let proc_desc = match (&proc_problem, &proc_version) {
        (Some(problem), _) => problem.clone(),
        (None, Some(v)) => format!("{} reports DRBD {v}", cfg.proc_path),
        (None, None) => match proc_parsed.as_ref().and_then(|p| p.errors.first()) {
            Some(first) => format!(
                "{} is not in DRBD's format (no version line, no device line; {first})",
                cfg.proc_path
            ),
            None => format!("{} is empty", cfg.proc_path),
        },
    };

    let cmd = Cmd::new(cfg.drbdsetup.clone()).args(["status", "--json"]);
    let out = match cmd.run(timeout).await {
        Ok(out) => out,
        Err(ExecError::NotFound { program }) => {
            return Err(if proc_unknown_format {
                ProbeError::Failed(format!(
                    "{proc_desc}, and `{program}` is not installed, so nothing could be read: check \
                     that `proc_path` in the [drbd] config names DRBD's proc file (`cat {}`)",
                    cfg.proc_path
                ))
            } else if drbd_present {
                ProbeError::Failed(format!(
                    "{proc_desc}, but `{program}` is not installed: install drbd-utils (9.x) so \
                     `drbdsetup status --json` can be read"
                ))
            } else {
                ProbeError::Absent(format!(
                    "no DRBD on this node: {proc_desc} and `{program}` is not installed"
                ))
            });
        }
        Err(e) => return Err(ProbeError::from_exec(e)),
    };

    if !out.success() {
        let said = first_line(if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        });
        // drbd-utils dispatching to the 8.4 tools reject --json: this is an 8.x-only node.
        if said.contains("unrecognized option") || said.contains("unknown option") {
            return match proc_parsed {
                Some(_) if proc_unknown_format => Err(ProbeError::Failed(format!(
                    "{proc_desc}; `{}` is the DRBD 8.4 tool (no --json), so nothing else can be \
                     read: check that `proc_path` in the [drbd] config names DRBD's proc file",
                    cfg.drbdsetup
                ))),
                Some(p) => Ok(p),
                None if drbd_present => Err(ProbeError::Failed(format!(
                    "{proc_desc}; `{}` is the DRBD 8.4 tool (no --json), so nothing else can be read",
                    cfg.drbdsetup
                ))),
                None => Err(ProbeError::Absent(format!(
                    "no DRBD on this node: {proc_desc}; `{}` is the DRBD 8.4 tool (no --json)",
                    cfg.drbdsetup
                ))),
            };
        }
        if !drbd_present {
            // No module loaded: drbdsetup cannot talk to the kernel either.
            return Err(ProbeError::Absent(format!(
                "no DRBD on this node: {proc_desc}; `{}` failed: {said}",
                cmd.display()
            )));
        }
        if proc_unknown_format {
            return Err(ProbeError::Failed(format!(
                "{proc_desc}, and `{}` exited with {:?}: {said}",
                cmd.display(),
                out.status
            )));
        }
        return Err(ProbeError::Failed(format!(
            "`{}` exited with {:?}: {said} (check that drbd-utils matches the DRBD {} kernel module)",
            cmd.display(),
            out.status,
            proc_version.as_deref().unwrap_or("9")
        )));
    }

    let mut parsed = parse_status_json(&out.stdout).map_err(|e| {
        ProbeError::Failed(format!(
            "`{}` printed something that is not its JSON: {e}",
            cmd.display()
        ))
    })?;
    parsed.value.version = proc_version;
    parsed.value.build = proc_build;
    if let Some(p) = proc_parsed {
        parsed.errors.extend(p.errors);
    }
    Ok(parsed)
}

fn first_line(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)");
    truncate(line, 200).to_string()
}

/// At most `max` bytes of `s`, cut on a char boundary (for error messages).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_keep_unknown_words() {
        for s in ConnState::ALL {
            assert_eq!(ConnState::from_drbd(s).as_str(), *s);
        }
        for s in ReplState::ALL {
            assert_eq!(ReplState::from_drbd(s).as_str(), *s);
        }
        assert_eq!(
            DiskState::from_drbd("Frobbing"),
            DiskState::Other("Frobbing".into())
        );
        assert_eq!(Role::from_drbd("Frobbing").as_str(), "Frobbing");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn major_version_parses() {
        assert_eq!(major_version("8.4.11"), Some(8));
        assert_eq!(major_version("9.2.8"), Some(9));
        assert_eq!(major_version("x"), None);
    }
}
