//! sanlock probe: lockspaces (delta leases: our host_id, renewals), the hosts each lockspace sees
//! (LIVE/FAIL/DEAD...), and the resources (paxos leases) this host holds, exclusive or shared.
//!
//! Sources, all through `exec` (the daemon answers on /run/sanlock/sanlock.sock; root needed):
//! - `sanlock client status -D`: `daemon NAME`, `p PID NAME` (clients), `s LS:HOST_ID:PATH:OFFSET
//!   [ADD|REM]` (lockspaces), `r LS:NAME:PATH:OFFSET[:PATH:OFFSET...]:LVER|SH p PID [ADD|REM|ORPHAN]`
//!   (resources; `SH` instead of the lease version means shared), each followed by indented
//!   `key=value` detail lines. Colons inside paths are escaped as `\:`.
//! - `sanlock client gets -h 1`: per lockspace `s ...` then `h HOST_ID gen G timestamp T STATE`.
//! - `sanlock client renewal -s LS`: the daemon's renewal history (`timestamp= read_ms= write_ms=
//!   next_timeouts= next_errors=`), one call per joined lockspace, if time allows.
//!
//! sanlock timestamps are seconds of CLOCK_MONOTONIC (verified against the real daemon: they
//! match /proc/uptime on a host that never suspended). The daemon reports its own clock as
//! `monotime=` in the `daemon` details, so renewal ages are computed from the same clock the
//! timestamps come from; without it the probe reads this host's CLOCK_MONOTONIC.
//!
//! Formats checked against sanlock 3.8.5 (real captures in tests/fixtures/sanlock/) and sanlock's
//! `src/client_cmd.c` / `src/main.c`.

use std::time::{Duration, Instant};

use super::{cut_line_error, split_cut_line, Parsed, ProbeError};
use crate::config::SanlockConfig;
use crate::exec::{Cmd, Output};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SanlockSnapshot {
    pub daemon: Option<DaemonInfo>,
    pub clients: Vec<Client>,
    pub lockspaces: Vec<Lockspace>,
    pub resources: Vec<Resource>,
    /// The monotonic clock (seconds) the timestamps count in, at the time of the status: the
    /// daemon's `monotime`, or this host's CLOCK_MONOTONIC read by the probe.
    pub monotime: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonInfo {
    /// `our_host_name`: the name this daemon writes into its delta leases.
    pub host_name: String,
    pub version: Option<String>,
    pub monotime: Option<u64>,
}

/// A process registered with the daemon (`p PID NAME`); internal threads have pid -1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Client {
    pub pid: i64,
    pub name: String,
}

/// Where a lockspace or resource is in the daemon's lists (`list=` detail, `ADD`/`REM` suffix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ListState {
    /// Joined lockspace / held resource.
    #[default]
    Active,
    /// add_lockspace or acquire still in progress.
    Adding,
    /// rem_lockspace or release in progress.
    Removing,
    /// A resource kept by the daemon for a client that exited (SANLK_ACQUIRE_ORPHAN).
    Orphan,
}

impl ListState {
    fn from_list(v: &str) -> Option<ListState> {
        match v {
            "spaces" | "held" => Some(ListState::Active),
            "add" => Some(ListState::Adding),
            "rem" => Some(ListState::Removing),
            "orphan" => Some(ListState::Orphan),
            _ => None,
        }
    }
    fn from_flag(v: &str) -> Option<ListState> {
        match v {
            "ADD" => Some(ListState::Adding),
            "REM" => Some(ListState::Removing),
            "ORPHAN" => Some(ListState::Orphan),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lockspace {
    pub name: String,
    /// This host's id in the lockspace.
    pub host_id: u64,
    pub path: String,
    pub offset: u64,
    pub state: ListState,
    pub io_timeout: Option<u64>,
    /// This host's generation in the lockspace (bumped on every join).
    pub host_generation: Option<u64>,
    /// 1 once the daemon gave up on the lockspace (renewals failed too long).
    pub space_dead: Option<u64>,
    /// 1 while the daemon is killing the lockspace's lease holders.
    pub killing_pids: Option<u64>,
    pub renew_fail: Option<u64>,
    /// Result of the last renewal: 1 = success (SANLK_OK), negative = error code.
    pub renewal_last_result: Option<i64>,
    pub renewal_last_attempt: Option<u64>,
    pub renewal_last_success: Option<u64>,
    pub acquire_last_success: Option<u64>,
    /// From `gets -h 1`; None when the daemon did not list hosts ("hosts not ready", an error,
    /// or gets failed).
    pub hosts: Option<Vec<Host>>,
    /// From `renewal -s LS`; None when not fetched.
    pub renewal: Option<RenewalStats>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostState {
    Free,
    Live,
    Fail,
    Dead,
    Unknown,
    /// Anything else sanlock prints (its own fallback is "ERROR").
    Other(String),
}

impl HostState {
    /// Every state sanlock's `gets` can name, in sanlock's own spelling.
    pub const ALL: [&'static str; 5] = ["LIVE", "FAIL", "DEAD", "FREE", "UNKNOWN"];

    pub fn parse(s: &str) -> HostState {
        match s {
            "FREE" => HostState::Free,
            "LIVE" => HostState::Live,
            "FAIL" => HostState::Fail,
            "DEAD" => HostState::Dead,
            "UNKNOWN" => HostState::Unknown,
            other => HostState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            HostState::Free => "FREE",
            HostState::Live => "LIVE",
            HostState::Fail => "FAIL",
            HostState::Dead => "DEAD",
            HostState::Unknown => "UNKNOWN",
            HostState::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub host_id: u64,
    pub generation: u64,
    /// The host's own monotonic clock at its last renewal (not comparable across hosts).
    pub timestamp: u64,
    pub state: HostState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LeaseMode {
    #[default]
    Exclusive,
    Shared,
}

impl LeaseMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseMode::Exclusive => "ex",
            LeaseMode::Shared => "sh",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disk {
    pub path: String,
    pub offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    pub lockspace: String,
    /// For lvmlockd's lockspaces (`lvm_<vg>`) the resource name is the LV uuid.
    pub name: String,
    pub disks: Vec<Disk>,
    pub mode: LeaseMode,
    /// Lease version (exclusive leases only).
    pub lver: Option<u64>,
    /// The holder; lvmlockd holds LV leases for all LVs of this host.
    pub pid: i64,
    pub state: ListState,
}

/// A summary of the daemon's renewal history for one lockspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewalStats {
    pub entries: u64,
    pub last_timestamp: u64,
    pub last_read_ms: u64,
    pub last_write_ms: u64,
    /// Sums of next_timeouts / next_errors over the history kept (renewal_history_size, 180
    /// entries by default): failed attempts between successful renewals.
    pub timeouts: u64,
    pub errors: u64,
}

/// One lockspace as `gets` lists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetsLockspace {
    pub name: String,
    pub host_id: u64,
    pub hosts: Option<Vec<Host>>,
}

impl SanlockSnapshot {
    /// Seconds since the lockspace's delta lease was last written successfully (renewal, or the
    /// acquire at join), on the daemon's clock. None before the first success or without a clock.
    pub fn renewal_age_seconds(&self, ls: &Lockspace) -> Option<u64> {
        let now = self.monotime?;
        let last = ls
            .renewal_last_success
            .unwrap_or(0)
            .max(ls.acquire_last_success.unwrap_or(0));
        if last == 0 {
            return None;
        }
        Some(now.saturating_sub(last))
    }

    /// The registered name of a client pid ("" if unknown).
    pub fn client_name(&self, pid: i64) -> &str {
        self.clients
            .iter()
            .find(|c| c.pid == pid)
            .map(|c| c.name.as_str())
            .unwrap_or("")
    }
}

/// Split a sanlock spec on unescaped colons, unescaping `\x` to `x`.
fn split_spec(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if let Some(last) = parts.last_mut() {
                        last.push(n);
                    }
                }
            }
            ':' => parts.push(String::new()),
            c => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    parts
}

/// Split a trailing ` ADD`/` REM`/` ORPHAN` flag off a status line.
fn strip_flag(s: &str) -> (&str, Option<ListState>) {
    let t = s.trim_end();
    if let Some((head, last)) = t.rsplit_once(' ') {
        if let Some(st) = ListState::from_flag(last) {
            return (head.trim_end(), Some(st));
        }
    }
    (t, None)
}

/// `LS:HOST_ID:PATH:OFFSET` (a path with unescaped colons is rejoined).
fn parse_lockspace_spec(spec: &str) -> Result<(String, u64, String, u64), String> {
    let p = split_spec(spec);
    if p.len() < 4 {
        return Err(format!(
            "lockspace spec {spec:?}: expected LS:HOST_ID:PATH:OFFSET"
        ));
    }
    let name = p[0].clone();
    if name.is_empty() {
        return Err(format!("lockspace spec {spec:?}: empty lockspace name"));
    }
    let host_id = p[1].parse::<u64>().map_err(|_| {
        format!(
            "lockspace spec {spec:?}: host_id {:?} is not a number",
            p[1]
        )
    })?;
    let last = p.len() - 1;
    let offset = p[last].parse::<u64>().map_err(|_| {
        format!(
            "lockspace spec {spec:?}: offset {:?} is not a number",
            p[last]
        )
    })?;
    Ok((name, host_id, p[2..last].join(":"), offset))
}

fn parse_resource_line(rest: &str) -> Result<Resource, String> {
    let (rest, flag) = strip_flag(rest);
    let (spec, pid) = rest
        .rsplit_once(" p ")
        .ok_or_else(|| format!("resource {rest:?}: no \" p PID\""))?;
    let pid = pid
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("resource {rest:?}: pid {pid:?} is not a number"))?;
    let p = split_spec(spec);
    let n = p.len();
    if n < 5 {
        return Err(format!(
            "resource spec {spec:?}: expected LS:NAME:PATH:OFFSET:LVER|SH"
        ));
    }
    let (mode, lver) = match p[n - 1].as_str() {
        "SH" => (LeaseMode::Shared, None),
        v => match v.parse::<u64>() {
            Ok(l) => (LeaseMode::Exclusive, Some(l)),
            Err(_) => {
                return Err(format!(
                    "resource spec {spec:?}: last field {v:?} is neither SH nor a lease version"
                ))
            }
        },
    };
    let disk_parts = &p[2..n - 1];
    let parse_off = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("resource spec {spec:?}: offset {s:?} is not a number"))
    };
    let mut disks = Vec::new();
    if disk_parts.len() % 2 == 0 {
        for pair in disk_parts.chunks(2) {
            disks.push(Disk {
                path: pair[0].clone(),
                offset: parse_off(&pair[1])?,
            });
        }
    } else {
        // An odd count: one disk whose path has unescaped colons (older sanlock).
        let last = disk_parts.len() - 1;
        disks.push(Disk {
            path: disk_parts[..last].join(":"),
            offset: parse_off(&disk_parts[last])?,
        });
    }
    if p[0].is_empty() || p[1].is_empty() {
        return Err(format!(
            "resource spec {spec:?}: empty lockspace or resource name"
        ));
    }
    Ok(Resource {
        lockspace: p[0].clone(),
        name: p[1].clone(),
        disks,
        mode,
        lver,
        pid,
        state: flag.unwrap_or_default(),
    })
}

/// What the last top-level line was, for attaching `key=value` details.
enum Current {
    None,
    Daemon,
    Client,
    Lockspace(usize),
    Resource(usize),
    /// A top-level line that was skipped: its details are skipped silently.
    Skipped,
}

fn num<T: std::str::FromStr>(key: &str, v: &str, ctx: &str, errors: &mut Vec<String>) -> Option<T> {
    match v.parse::<T>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(format!(
                "sanlock status: {ctx}: {key}={v:?} is not a number"
            ));
            None
        }
    }
}

/// Parse `sanlock client status -D` (or without -D: then there are no details). Never panics;
/// lines it cannot read are skipped and reported in `errors`.
pub fn parse_status(text: &str) -> Parsed<SanlockSnapshot> {
    let mut snap = SanlockSnapshot::default();
    let mut errors = Vec::new();
    let mut cur = Current::None;
    // A last line without its newline is a cut output: skipped, not read as data.
    let (text, cut) = split_cut_line(text);
    if let Some(cut) = cut {
        errors.push(cut_line_error("sanlock status", cut));
    }
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        if raw.trim().is_empty() || raw.trim() == "-" {
            continue;
        }
        if raw.starts_with(char::is_whitespace) {
            let line = raw.trim();
            let Some((k, v)) = line.split_once('=') else {
                errors.push(format!(
                    "sanlock status line {lineno}: detail {line:?} is not key=value"
                ));
                continue;
            };
            match cur {
                Current::Daemon => {
                    if let Some(d) = snap.daemon.as_mut() {
                        match k {
                            "monotime" => d.monotime = num(k, v, "daemon", &mut errors),
                            "version_str" => d.version = Some(v.to_string()),
                            "our_host_name" if d.host_name.is_empty() => {
                                d.host_name = v.to_string()
                            }
                            _ => {}
                        }
                    }
                }
                Current::Lockspace(idx) => {
                    if let Some(ls) = snap.lockspaces.get_mut(idx) {
                        let ctx = format!("lockspace {}", ls.name);
                        match k {
                            "list" => match ListState::from_list(v) {
                                Some(st) => ls.state = st,
                                None => errors
                                    .push(format!("sanlock status: {ctx}: unknown list={v:?}")),
                            },
                            "io_timeout" => ls.io_timeout = num(k, v, &ctx, &mut errors),
                            "host_generation" => ls.host_generation = num(k, v, &ctx, &mut errors),
                            "space_dead" => ls.space_dead = num(k, v, &ctx, &mut errors),
                            "killing_pids" => ls.killing_pids = num(k, v, &ctx, &mut errors),
                            "renew_fail" => ls.renew_fail = num(k, v, &ctx, &mut errors),
                            "renewal_last_result" => {
                                ls.renewal_last_result = num(k, v, &ctx, &mut errors)
                            }
                            "renewal_last_attempt" => {
                                ls.renewal_last_attempt = num(k, v, &ctx, &mut errors)
                            }
                            "renewal_last_success" => {
                                ls.renewal_last_success = num(k, v, &ctx, &mut errors)
                            }
                            "acquire_last_success" => {
                                ls.acquire_last_success = num(k, v, &ctx, &mut errors)
                            }
                            _ => {}
                        }
                    }
                }
                Current::Resource(idx) => {
                    if let Some(r) = snap.resources.get_mut(idx) {
                        match k {
                            "list" => match ListState::from_list(v) {
                                Some(st) => r.state = st,
                                None => errors.push(format!(
                                    "sanlock status: resource {}: unknown list={v:?}",
                                    r.name
                                )),
                            },
                            "lver" if r.mode == LeaseMode::Exclusive && r.lver.is_none() => {
                                r.lver = num(k, v, "resource", &mut errors)
                            }
                            _ => {}
                        }
                    }
                }
                Current::Client | Current::Skipped => {}
                Current::None => errors.push(format!(
                    "sanlock status line {lineno}: detail {line:?} before any daemon/p/s/r line"
                )),
            }
            continue;
        }
        let line = raw.trim_end();
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "daemon" => {
                snap.daemon = Some(DaemonInfo {
                    host_name: rest.trim().to_string(),
                    ..Default::default()
                });
                cur = Current::Daemon;
            }
            "p" => {
                let (pid, name) = rest.split_once(' ').unwrap_or((rest, ""));
                match pid.parse::<i64>() {
                    Ok(pid) => {
                        snap.clients.push(Client {
                            pid,
                            name: name.trim().to_string(),
                        });
                        cur = Current::Client;
                    }
                    Err(_) => {
                        errors.push(format!(
                            "sanlock status line {lineno}: client pid {pid:?} is not a number"
                        ));
                        cur = Current::Skipped;
                    }
                }
            }
            "s" => {
                let (spec, flag) = strip_flag(rest);
                match parse_lockspace_spec(spec) {
                    Ok((name, host_id, path, offset)) => {
                        snap.lockspaces.push(Lockspace {
                            name,
                            host_id,
                            path,
                            offset,
                            state: flag.unwrap_or_default(),
                            ..Default::default()
                        });
                        cur = Current::Lockspace(snap.lockspaces.len() - 1);
                    }
                    Err(e) => {
                        errors.push(format!("sanlock status line {lineno}: {e}"));
                        cur = Current::Skipped;
                    }
                }
            }
            "r" => match parse_resource_line(rest) {
                Ok(r) => {
                    snap.resources.push(r);
                    cur = Current::Resource(snap.resources.len() - 1);
                }
                Err(e) => {
                    errors.push(format!("sanlock status line {lineno}: {e}"));
                    cur = Current::Skipped;
                }
            },
            _ => {
                errors.push(format!(
                    "sanlock status line {lineno}: unrecognized line {line:?}"
                ));
                cur = Current::Skipped;
            }
        }
    }
    snap.monotime = snap.daemon.as_ref().and_then(|d| d.monotime);
    Parsed {
        value: snap,
        errors,
    }
}

/// Parse `sanlock client gets -h 1`.
pub fn parse_gets(text: &str) -> Parsed<Vec<GetsLockspace>> {
    let mut out: Vec<GetsLockspace> = Vec::new();
    let mut errors = Vec::new();
    let (text, cut) = split_cut_line(text);
    if let Some(cut) = cut {
        errors.push(cut_line_error("sanlock gets", cut));
    }
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("s ") {
            let (spec, _flag) = strip_flag(rest);
            match parse_lockspace_spec(spec) {
                Ok((name, host_id, _, _)) => out.push(GetsLockspace {
                    name,
                    host_id,
                    hosts: Some(Vec::new()),
                }),
                Err(e) => errors.push(format!("sanlock gets line {lineno}: {e}")),
            }
        } else if let Some(rest) = line.strip_prefix("h ") {
            let Some(ls) = out.last_mut() else {
                errors.push(format!(
                    "sanlock gets line {lineno}: host line before any lockspace"
                ));
                continue;
            };
            match parse_host(rest) {
                Ok(h) => ls.hosts.get_or_insert_with(Vec::new).push(h),
                Err(e) => errors.push(format!("sanlock gets line {lineno}: {e}")),
            }
        } else if line == "hosts not ready" || line.starts_with("hosts error ") {
            // Real answers for a lockspace still being added: its hosts are unknown.
            if let Some(ls) = out.last_mut() {
                ls.hosts = None;
            }
        } else {
            errors.push(format!(
                "sanlock gets line {lineno}: unrecognized line {line:?}"
            ));
        }
    }
    Parsed { value: out, errors }
}

/// `HOST_ID gen G timestamp T STATE`
fn parse_host(rest: &str) -> Result<Host, String> {
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() != 6 || f[1] != "gen" || f[3] != "timestamp" {
        return Err(format!(
            "host line {rest:?}: expected HOST_ID gen G timestamp T STATE"
        ));
    }
    let n = |s: &str, what: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("host line {rest:?}: {what} {s:?} is not a number"))
    };
    Ok(Host {
        host_id: n(f[0], "host_id")?,
        generation: n(f[2], "generation")?,
        timestamp: n(f[4], "timestamp")?,
        state: HostState::parse(f[5]),
    })
}

/// Parse `sanlock client renewal -s LS`. None when the history is empty.
pub fn parse_renewal(text: &str) -> Parsed<Option<RenewalStats>> {
    let mut stats = RenewalStats::default();
    let mut errors = Vec::new();
    let (text, cut) = split_cut_line(text);
    if let Some(cut) = cut {
        errors.push(cut_line_error("sanlock renewal", cut));
    }
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let mut ts = None;
        let mut read = None;
        let mut write = None;
        let mut timeouts = 0;
        let mut errs = 0;
        let mut bad = None;
        for field in line.split_whitespace() {
            let Some((k, v)) = field.split_once('=') else {
                bad = Some(format!("field {field:?} is not key=value"));
                break;
            };
            let Ok(n) = v.parse::<u64>() else {
                bad = Some(format!("{k}={v:?} is not a number"));
                break;
            };
            match k {
                "timestamp" => ts = Some(n),
                "read_ms" => read = Some(n),
                "write_ms" => write = Some(n),
                "next_timeouts" => timeouts = n,
                "next_errors" => errs = n,
                _ => {}
            }
        }
        match (bad, ts, read, write) {
            (None, Some(ts), Some(read), Some(write)) => {
                stats.entries += 1;
                stats.last_timestamp = ts;
                stats.last_read_ms = read;
                stats.last_write_ms = write;
                stats.timeouts = stats.timeouts.saturating_add(timeouts);
                stats.errors = stats.errors.saturating_add(errs);
            }
            (Some(why), ..) => errors.push(format!("sanlock renewal line {}: {why}", i + 1)),
            _ => errors.push(format!(
                "sanlock renewal line {}: {line:?} lacks timestamp/read_ms/write_ms",
                i + 1
            )),
        }
    }
    let value = (stats.entries > 0).then_some(stats);
    Parsed { value, errors }
}

/// Attach the hosts `gets` listed to the lockspaces of `snap`, by lockspace name.
pub fn merge_gets(snap: &mut SanlockSnapshot, gets: Vec<GetsLockspace>, errors: &mut Vec<String>) {
    for g in gets {
        match snap.lockspaces.iter_mut().find(|l| l.name == g.name) {
            Some(ls) => ls.hosts = g.hosts,
            // A lockspace added between the two commands: it shows up at the next scrape.
            None => errors.push(format!(
                "sanlock gets lists lockspace {:?} that status did not show",
                g.name
            )),
        }
    }
}

/// This host's CLOCK_MONOTONIC in whole seconds (the clock sanlock's timestamps use).
pub fn local_monotonic_seconds() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we own and pass by valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc == 0 {
        u64::try_from(ts.tv_sec).ok()
    } else {
        None
    }
}

fn status_text(out: &Output) -> String {
    match out.status {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    }
}

pub async fn probe(
    cfg: &SanlockConfig,
    timeout: Duration,
) -> Result<Parsed<SanlockSnapshot>, ProbeError> {
    let start = Instant::now();
    let status_cmd = Cmd::new(cfg.sanlock.as_str()).args(["client", "status", "-D"]);
    let gets_cmd = Cmd::new(cfg.sanlock.as_str()).args(["client", "gets", "-h", "1"]);
    let (status, gets) = tokio::join!(status_cmd.run(timeout), gets_cmd.run(timeout));
    let status = status.map_err(ProbeError::from_exec)?;
    if !status.success() || status.stdout.trim().is_empty() {
        let detail = status.summary();
        let detail = if detail.is_empty() {
            "no output".to_string()
        } else {
            detail
        };
        return Err(ProbeError::Failed(format!(
            "the sanlock daemon did not answer `{}` ({}, {detail}): is the sanlock daemon running? `systemctl status sanlock`",
            status_cmd.display(),
            status_text(&status)
        )));
    }
    let mut parsed = parse_status(&status.stdout);
    // Output that yields no daemon, client, lockspace or resource is not "zero lockspaces": the
    // daemon always prints its own `daemon` line, so this is output vmwarden cannot read.
    let v = &parsed.value;
    if v.daemon.is_none()
        && v.clients.is_empty()
        && v.lockspaces.is_empty()
        && v.resources.is_empty()
    {
        let seen = match parsed.errors.first() {
            Some(first) => format!("{} problem(s), first: {first}", parsed.errors.len()),
            None => "no daemon, client, lockspace or resource line".to_string(),
        };
        return Err(ProbeError::Failed(format!(
            "`{}` printed nothing vmwarden can read ({seen}); run it by hand: a sanlock whose \
             output format vmwarden does not know (checked against sanlock 3.8's `daemon`/`p`/`s`/`r` \
             lines)?",
            status_cmd.display()
        )));
    }
    match gets {
        Ok(out) if out.success() => {
            let g = parse_gets(&out.stdout);
            parsed.errors.extend(g.errors);
            merge_gets(&mut parsed.value, g.value, &mut parsed.errors);
        }
        Ok(out) => parsed.errors.push(format!(
            "`{}` failed ({}: {}); host states unknown this scrape",
            gets_cmd.display(),
            status_text(&out),
            out.summary()
        )),
        Err(e) => parsed
            .errors
            .push(format!("{e}; host states unknown this scrape")),
    }
    // Renewal history is a nice-to-have: only with time left, and never fatal.
    for i in 0..parsed.value.lockspaces.len() {
        if parsed.value.lockspaces[i].state != ListState::Active {
            continue;
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left < Duration::from_millis(50) {
            break;
        }
        let name = parsed.value.lockspaces[i].name.clone();
        let cmd = Cmd::new(cfg.sanlock.as_str()).args(["client", "renewal", "-s", name.as_str()]);
        if let Ok(out) = cmd.run(left).await {
            if out.success() {
                let r = parse_renewal(&out.stdout);
                parsed.errors.extend(r.errors);
                parsed.value.lockspaces[i].renewal = r.value;
            }
        }
    }
    if parsed.value.monotime.is_none() {
        parsed.value.monotime = local_monotonic_seconds();
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_unescapes_colons() {
        assert_eq!(split_spec(r"LS:1:/a\:b:0"), vec!["LS", "1", "/a:b", "0"]);
        assert_eq!(split_spec("trailing\\"), vec!["trailing"]);
    }

    #[test]
    fn resource_with_two_disks_and_flag() {
        let r = parse_resource_line("LS:r1:/d1:0:/d2:1048576:7 p 42 REM").unwrap();
        assert_eq!(r.disks.len(), 2);
        assert_eq!(r.disks[1].offset, 1048576);
        assert_eq!(r.lver, Some(7));
        assert_eq!(r.pid, 42);
        assert_eq!(r.state, ListState::Removing);
    }

    #[test]
    fn local_clock_reads() {
        assert!(local_monotonic_seconds().is_some());
    }
}
