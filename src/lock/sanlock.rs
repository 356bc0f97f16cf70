//! sanlock lease backend (clusters without lvmlockd): one sanlock resource per VM,
//! `LOCKSPACE:VM:LEASE_PATH:OFFSET`, held by a *holder process*.
//!
//! sanlock ties every lease to a registered process and frees it when that process exits. The
//! holder is `sanlock client command -c HOLDER ...`: sanlock registers the process, which then
//! execs `HOLDER` (by default `tail --pid=QEMU_PID -f /dev/null`; before qemu exists,
//! `vmwarden lease-holder`, which waits for qemu's pid file and then becomes that — follow.rs —
//! or `tail -f /dev/null` outside the vmwarden binary). The agent then acquires/converts/releases on the holder's behalf with
//! `sanlock client acquire|convert|release -r RES -p HOLDER_PID`, so every refusal comes back
//! synchronously with sanlock's return code. Consequences (docs/locking.md):
//! - the holder is not the agent's child in any way that matters (own process group): an agent
//!   restart does not touch it, and the agent finds it again in `sanlock client status`;
//! - it exits when the watched VM process exits, and sanlock frees the lease with it: the lease
//!   cannot outlive the VM.

use std::time::Duration;

use crate::config::Config;
use crate::exec::Cmd;

use super::lvmlockd::failed;
use super::{validate_name, with_retry, Held, LockError, NameKind, Tuning};

/// One VM's sanlock lease.
#[derive(Debug, Clone)]
pub struct SanlockLease {
    vm: String,
    lockspace: String,
    path: String,
    offset: u64,
    sanlock: String,
    holder: String,
    watch_pid: Option<u32>,
    /// The vmwarden binary and the VM's qemu pid file, when holders that follow qemu from the
    /// start can be used (`follow.rs`): only when this process is the vmwarden binary, which has
    /// the `lease-holder` subcommand (the library's own tests run in other binaries).
    follow: Option<(String, std::path::PathBuf)>,
    tuning: Tuning,
}

/// The other host holding a lease, from the lease's on-disk leader (`sanlock direct dump`) and
/// that host's liveness (`sanlock client gets -h 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub host_id: u64,
    /// sanlock sees its delta lease no longer renewed (FAIL): the lock stays until it is DEAD.
    pub failing: bool,
}

/// Who holds a lease, from `sanlock direct dump PATH:OFFSET:1M` (tests/fixtures/lock/sanlock-direct-dump-*).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseOwners {
    /// Leader owner while the lease is held exclusively (timestamp non-zero).
    pub exclusive: Option<u64>,
    /// Hosts holding it shared (`own gen SH` lines).
    pub shared: Vec<u64>,
}

/// The first `N` whitespace-separated fields of `line` and whether more follow. The look-ups
/// below run once per line of listings that can be long; collecting every field of every line
/// into a `Vec` was most of their time.
fn fields<const N: usize>(line: &str) -> ([Option<&str>; N], bool) {
    let mut it = line.split_whitespace();
    let f = std::array::from_fn(|_| it.next());
    (f, it.next().is_some())
}

/// The return value of a `sanlock client` verb: `acquire done -243` → `-243`.
pub fn parse_done(stdout: &str) -> Option<i32> {
    stdout.lines().rev().find_map(|l| match fields::<3>(l) {
        ([Some(_), Some("done"), Some(rv)], false) => rv.parse().ok(),
        _ => None,
    })
}

pub fn parse_direct_dump(text: &str) -> Option<LeaseOwners> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("offset"));
    lines.next()?;
    let first: Vec<&str> = lines.next()?.split_whitespace().collect();
    // offset lockspace resource timestamp own gen lver
    if first.len() < 7 {
        return None;
    }
    let timestamp: u64 = first[3].parse().ok()?;
    let own: u64 = first[4].parse().ok()?;
    let mut owners = LeaseOwners {
        exclusive: (timestamp != 0 && own != 0).then_some(own),
        shared: Vec::new(),
    };
    for l in lines {
        if let ([Some(host), Some(_gen), Some("SH")], false) = fields::<3>(l) {
            if let Ok(h) = host.parse() {
                owners.shared.push(h);
            }
        }
    }
    Some(owners)
}

/// `s LS:HOST_ID:PATH:OFFSET` in `sanlock client status` → (our host id, lockspace path).
pub fn parse_status_lockspace(text: &str, lockspace: &str) -> Option<(u64, String)> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("s ")?.split_whitespace().next()?;
        let rest = rest.strip_prefix(lockspace)?.strip_prefix(':')?;
        let (id, rest) = rest.split_once(':')?;
        let (path, _offset) = rest.rsplit_once(':')?;
        Some((id.parse().ok()?, path.to_string()))
    })
}

/// `r LS:NAME:PATH:OFFSET:SH p PID` (shared) or `...:OFFSET:LVER p PID` (exclusive) in
/// `sanlock client status` → (mode, holder pid).
pub fn parse_status_resource(text: &str, lockspace: &str, name: &str) -> Option<(Held, u32)> {
    let prefix = format!("{lockspace}:{name}:");
    text.lines().find_map(|l| {
        let ([Some("r"), Some(res), Some("p"), Some(pid)], false) = fields::<4>(l) else {
            return None;
        };
        let res = res.strip_prefix(&prefix)?;
        let mode = if res.ends_with(":SH") {
            Held::Shared
        } else {
            Held::Exclusive
        };
        Some((mode, pid.parse().ok()?))
    })
}

/// Whether `pid` is a registered sanlock client (`p PID` in `sanlock client status`).
pub fn status_has_client(text: &str, pid: u32) -> bool {
    let pid = pid.to_string();
    text.lines()
        .any(|l| fields::<2>(l).0 == [Some("p"), Some(pid.as_str())])
}

/// `h 2 gen 1 timestamp 2536 FAIL` under `s LS:...` in `sanlock client gets -h 1` → `FAIL`.
pub fn parse_gets_state(text: &str, lockspace: &str, host: u64) -> Option<String> {
    let mut inside = false;
    for l in text.lines() {
        if let Some(s) = l.strip_prefix("s ") {
            inside = s.starts_with(&format!("{lockspace}:"));
            continue;
        }
        if let (
            [Some("h"), Some(id), Some("gen"), Some(_), Some("timestamp"), Some(_), Some(state)],
            _,
        ) = fields::<7>(l)
        {
            if inside && id.parse::<u64>().ok() == Some(host) {
                return Some(state.to_string());
            }
        }
    }
    None
}

/// Another host holding the lease at `offset` in `lockspace` (a lockspace this host has joined),
/// or `None` if sanlock cannot tell. Best effort: only used to word a refusal.
pub(crate) async fn who_holds(
    sanlock: &str,
    timeout: Duration,
    lockspace: &str,
    offset: u64,
) -> Option<Holder> {
    let status = Cmd::new(sanlock)
        .args(["client", "status"])
        .run(timeout)
        .await
        .ok()?;
    let (me, path) = parse_status_lockspace(&status.stdout, lockspace)?;
    let dump = Cmd::new(sanlock)
        .args(["direct", "dump", &format!("{path}:{offset}:1048576")])
        .run(timeout)
        .await
        .ok()?;
    let owners = parse_direct_dump(&dump.stdout)?;
    let host_id = owners
        .exclusive
        .filter(|h| *h != me)
        .or_else(|| owners.shared.iter().copied().find(|h| *h != me))?;
    let gets = Cmd::new(sanlock)
        .args(["client", "gets", "-h", "1"])
        .run(timeout)
        .await
        .ok();
    let failing = gets
        .and_then(|g| parse_gets_state(&g.stdout, lockspace, host_id))
        .is_some_and(|s| s == "FAIL");
    Some(Holder { host_id, failing })
}

/// Whether the holder process `holder` (a `sanlock client command ... --pid=P` we started) watches
/// `vm_pid`, from its command line in /proc.
fn holder_watches(holder: u32, vm_pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{holder}/cmdline")) else {
        return false;
    };
    cmdline_watches(&cmdline, vm_pid)
}

/// Whether the holder process `holder` is a follower of `pid_file` (`follow.rs`) still waiting.
fn follower_for(holder: u32, pid_file: &std::path::Path) -> bool {
    std::fs::read(format!("/proc/{holder}/cmdline"))
        .is_ok_and(|c| super::follow::holder_follows(&c, pid_file))
}

/// This program, when it is the vmwarden binary (it has the `lease-holder` subcommand).
fn follower_exe() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()? == "vmwarden").then(|| exe.to_str().map(str::to_string))?
}

/// Whether `/proc/PID/cmdline` (NUL-separated argv) is still `sanlock client command ...`: a
/// holder that has not exec'd its HOLDER yet (its own acquire may still be in the daemon).
pub fn is_sanlock_command(cmdline: &[u8]) -> bool {
    let a: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    a.get(1) == Some(&&b"client"[..]) && a.get(2) == Some(&&b"command"[..])
}

/// [`is_sanlock_command`] of a live process; a process that cannot be read is not (its
/// liveness is checked apart).
fn still_sanlock_command(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_sanlock_command(&c))
}

/// Whether the holder process `holder` watches a process (`--pid=P`) that no longer exists.
fn holder_watches_dead(holder: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{holder}/cmdline")) else {
        return false;
    };
    match watched_pid(&cmdline) {
        Some(p) => !std::path::Path::new(&format!("/proc/{p}")).exists(),
        None => false,
    }
}

/// The `--pid=P` a holder's argv names.
pub fn watched_pid(cmdline: &[u8]) -> Option<u32> {
    cmdline.split(|b| *b == 0).find_map(|a| {
        std::str::from_utf8(a)
            .ok()?
            .strip_prefix("--pid=")?
            .parse()
            .ok()
    })
}

/// `/proc/PID/cmdline` (NUL-separated argv) of a holder → whether it has `--pid=vm_pid`.
pub fn cmdline_watches(cmdline: &[u8], vm_pid: u32) -> bool {
    let want = format!("--pid={vm_pid}");
    cmdline.split(|b| *b == 0).any(|a| a == want.as_bytes())
}

/// What a sanlock return value means (tests/fixtures/lock/sanlock-*: real ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanlockRefusal {
    /// -243 held by a live host, -244 owned (liveness not settled), -245 other, -11 convert
    /// refused (another host holds it shared), -246 shared retry, -16 busy (an earlier acquire
    /// of ours, given up by timeout, is still waiting in the daemon for the owner).
    HeldByOther,
    /// -28: lockspace not joined here.
    NoLockspace,
    /// -202: I/O timeout on the lease storage.
    IoTimeout,
    /// -223: no lease written at this offset (`sanlock client init -r` missing).
    Uninitialised,
    /// -17: already held by this process.
    AlreadyHeld,
    /// -2 (convert) / -1 (release): not held by this process.
    NotHeld,
    Other(i32),
}

pub fn classify_rv(rv: i32) -> SanlockRefusal {
    match rv {
        -243 | -244 | -245 | -246 | -11 | -16 => SanlockRefusal::HeldByOther,
        -28 => SanlockRefusal::NoLockspace,
        -202 => SanlockRefusal::IoTimeout,
        -223 => SanlockRefusal::Uninitialised,
        -17 => SanlockRefusal::AlreadyHeld,
        -2 | -1 => SanlockRefusal::NotHeld,
        other => SanlockRefusal::Other(other),
    }
}

impl SanlockLease {
    /// The lease of `vm`, at its configured offset (`[lock.sanlock] leases`).
    pub fn new(cfg: &Config, vm: &str) -> Result<SanlockLease, LockError> {
        validate_name(NameKind::Vm, vm)?;
        let s = &cfg.lock.sanlock;
        validate_name(NameKind::Lockspace, &s.lockspace)?;
        if s.lease_path.contains(':') || s.lease_path.starts_with('-') || s.lease_path.is_empty() {
            return Err(LockError::Config(format!(
                "lock.sanlock.lease_path = {:?}: must be a path without ':'",
                s.lease_path
            )));
        }
        let offset = s
            .leases
            .iter()
            .find(|l| l.vm == vm)
            .map(|l| l.offset)
            .ok_or_else(|| {
                LockError::Config(format!(
                    "VM {vm} has no lease slot: add {{ vm = \"{vm}\", offset = N }} to [lock.sanlock] leases \
                     and initialise it once with `sanlock client init -r {}:{vm}:{}:N`",
                    s.lockspace, s.lease_path
                ))
            })?;
        Ok(SanlockLease {
            vm: vm.to_string(),
            lockspace: s.lockspace.clone(),
            path: s.lease_path.clone(),
            offset,
            sanlock: cfg.sanlock.sanlock.clone(),
            holder: s.holder.clone(),
            watch_pid: None,
            follow: follower_exe().map(|exe| {
                (
                    exe,
                    std::path::Path::new(&cfg.actions.qemu_pid_dir).join(format!("{vm}.pid")),
                )
            }),
            tuning: Tuning::from_config(cfg),
        })
    }

    /// Holders started before qemu exists follow `pid_file` with the vmwarden binary `exe`
    /// (`follow.rs`). The vmwarden binary chooses this by itself; tests running the library in
    /// another binary name the binary here.
    pub fn following(mut self, exe: &str, pid_file: std::path::PathBuf) -> SanlockLease {
        self.follow = Some((exe.to_string(), pid_file));
        self
    }

    /// The pid of this host's holder of the lease, if it holds it (diagnostics, tests).
    pub async fn holder_pid(&self) -> Result<Option<u32>, LockError> {
        Ok(self.local().await?.map(|(_, p)| p))
    }

    /// Holders started by this lease exit when `pid` (the VM's qemu) exits, freeing the lease.
    pub fn watching(mut self, pid: u32) -> SanlockLease {
        self.watch_pid = Some(pid);
        self
    }

    /// The sanlock calls `op` makes, for `--dry-run` plans.
    pub fn describe(&self, op: super::LockOp) -> String {
        use super::LockOp::*;
        let s = &self.sanlock;
        match op {
            AcquireExclusive | AcquireShared => format!(
                "{s} client command -c {} (lease holder); {s} client acquire -r {} -p HOLDER",
                match &self.follow {
                    Some((exe, pid_file)) => format!(
                        "{exe} {} --pid-file {} --vm {} --holder {}",
                        super::follow::SUBCOMMAND,
                        pid_file.display(),
                        self.vm,
                        self.holder
                    ),
                    None => format!("{} -f /dev/null", self.holder),
                },
                self.resource(op == AcquireShared)
            ),
            ConvertToShared | ConvertToExclusive => format!(
                "{s} client convert -r {} -p HOLDER",
                self.resource(op == ConvertToShared)
            ),
            Release => format!(
                "{s} client release -r {} -p HOLDER; end the holder",
                self.resource(false)
            ),
        }
    }

    pub fn target(&self) -> String {
        format!("{}'s lease {}:{}", self.vm, self.lockspace, self.vm)
    }

    /// `LS:VM:PATH:OFFSET[:SH]`
    pub fn resource(&self, shared: bool) -> String {
        let r = format!(
            "{}:{}:{}:{}",
            self.lockspace, self.vm, self.path, self.offset
        );
        if shared {
            r + ":SH"
        } else {
            r
        }
    }

    pub async fn acquire_exclusive(&self) -> Result<(), LockError> {
        self.acquire(false).await
    }

    /// Retried like convert_to_exclusive: right after the holder's ex→sh the first shared
    /// acquire can still be refused (seen in the lab).
    pub async fn acquire_shared(&self) -> Result<(), LockError> {
        with_retry(&self.tuning, || self.acquire(true)).await
    }

    pub async fn convert_to_shared(&self) -> Result<(), LockError> {
        match self.local().await? {
            Some((Held::Shared, _)) => Ok(()),
            Some((_, pid)) => self.verb("convert", true, pid).await,
            None => Err(self.incompatible(Held::None, "shared", "acquire it first")),
        }
    }

    pub async fn convert_to_exclusive(&self) -> Result<(), LockError> {
        match self.local().await? {
            Some((Held::Exclusive, _)) => Ok(()),
            Some((_, pid)) => with_retry(&self.tuning, || self.verb("convert", false, pid)).await,
            None => Err(self.incompatible(Held::None, "exclusive", "acquire it first")),
        }
    }

    pub async fn release(&self) -> Result<(), LockError> {
        let Some((_, pid)) = self.local().await? else {
            return Ok(());
        };
        match self.verb("release", false, pid).await {
            Ok(()) | Err(LockError::IncompatibleMode { .. }) => {}
            Err(e) => return Err(e),
        }
        // The holder has nothing left to hold. It was found in sanlock's client list holding our
        // resource, so this pid is ours to end.
        self.stop_holder(pid).await;
        Ok(())
    }

    /// Tie the lease held here to the VM process `vm_pid` (start: acquire first, start qemu,
    /// then attach). A new holder watching `vm_pid` joins the lease shared, the old holder leaves,
    /// and an exclusive lease is converted back to exclusive, so the lease is never free in
    /// between. If the final conversion is refused, the old mode is restored when possible.
    pub async fn attach_vm(&self, vm_pid: u32) -> Result<(), LockError> {
        let Some((mode, old)) = self.local().await? else {
            return Err(self.incompatible(Held::None, "attached", "acquire it first"));
        };
        // Already tied to this qemu (the hook's `started begin` did it): sanlock lists `old` as
        // the holder of our lease and its own argv says it watches `vm_pid` — nothing to move.
        if holder_watches(old, vm_pid) {
            return Ok(());
        }
        // A holder following the pid file that names this qemu becomes its watcher by itself
        // within a few ms: wait for that rather than hand the lease over (the slow path, kept
        // for plain holders and for a follower that does not get there).
        if let Some((_, pid_file)) = &self.follow {
            if follower_for(old, pid_file) {
                let until = std::time::Instant::now() + Duration::from_secs(1);
                while std::time::Instant::now() < until {
                    if holder_watches(old, vm_pid) {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tracing::warn!(lease = %self.target(), "the lease's holder {old} did not start following qemu {vm_pid} within 1 s: handing the lease over instead");
            }
        }
        let new_lease = self.clone().watching(vm_pid);
        if mode == Held::Exclusive {
            self.verb("convert", true, old).await?;
        }
        let new = match new_lease.spawn_holder().await {
            Ok(p) => p,
            Err(e) => return Err(self.restore(mode, old, e).await),
        };
        if let Err(e) = self.acquire_on_new_holder(true, new).await {
            self.stop_holder(new).await;
            return Err(self.restore(mode, old, e).await);
        }
        let _ = self.verb("release", false, old).await;
        self.stop_holder(old).await;
        if mode == Held::Exclusive {
            with_retry(&self.tuning, || self.verb("convert", false, new)).await?;
        }
        Ok(())
    }

    /// Undo the ex -> sh step of `attach_vm` after a failure; returns the original error.
    async fn restore(&self, mode: Held, old: u32, e: LockError) -> LockError {
        if mode == Held::Exclusive {
            if let Err(e2) = self.verb("convert", false, old).await {
                tracing::warn!(error = %e2, "could not restore the exclusive lease after a failed attach");
            }
        }
        e
    }

    pub async fn mode(&self) -> Result<Held, LockError> {
        Ok(self.local().await?.map_or(Held::None, |(m, _)| m))
    }

    /// This host's hold on the lease: (mode, holder pid), from `sanlock client status`.
    async fn local(&self) -> Result<Option<(Held, u32)>, LockError> {
        let cmd = Cmd::new(&self.sanlock).args(["client", "status"]);
        let out = cmd.run(self.tuning.command_timeout).await?;
        if !out.success() {
            return Err(failed(&cmd, &format!("{}{}", out.stdout, out.stderr)));
        }
        Ok(parse_status_resource(
            &out.stdout,
            &self.lockspace,
            &self.vm,
        ))
    }

    async fn acquire(&self, shared: bool) -> Result<(), LockError> {
        let wanted = if shared {
            Held::Shared
        } else {
            Held::Exclusive
        };
        let mut held = self.local().await?;
        if let Some((_, old)) = held {
            // A holder whose qemu is gone (killed, crashed) gives the lease up by itself a moment
            // later: that hold is no lock for a new start. End it now and take the lease anew.
            if holder_watches_dead(old) {
                tracing::info!(lease = %self.target(), "the lease's holder {old} watches a qemu that is gone: ending it before taking the lease again");
                self.stop_holder(old).await;
                let until = std::time::Instant::now() + self.tuning.command_timeout;
                while std::time::Instant::now() < until {
                    held = self.local().await?;
                    if held.is_none() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        match held {
            Some((m, _)) if m == wanted => return Ok(()),
            Some((m, _)) => {
                return Err(self.incompatible(
                    m,
                    wanted.as_str(),
                    "use convert_to_shared/convert_to_exclusive to change the mode of a held lease",
                ))
            }
            None => {}
        }
        // sanlock's acquire of a lease whose owner stopped renewing blocks until that host is
        // DEAD (≈140 s by default; measured 60 s with io_timeout 1): say so now instead.
        if let Some(h) = self.holder().await {
            if h.failing {
                return Err(LockError::HostNotDeadYet {
                    target: self.target(),
                    host_id: h.host_id,
                });
            }
        }
        let pid = self.spawn_holder().await?;
        let r = self.acquire_on_new_holder(shared, pid).await;
        if r.is_err() {
            self.stop_holder(pid).await;
        }
        r
    }

    /// `acquire -p HOLDER` for a holder [`spawn_holder`] just started. sanlock answers -16
    /// (EBUSY) while a command of that client is still active in the daemon; a new holder's only
    /// command is its own (empty) acquire of `sanlock client command`, so -16 here means "not
    /// yet", never "held elsewhere": asked again a few times. (The namespace lab caught it
    /// under load: the daemon logged `process_cmd_thread_reg failed ... cmd 7` right before the
    /// holder's own `cmd_acquire ... count 0`, and the create was refused as "locked by another
    /// host".)
    async fn acquire_on_new_holder(&self, shared: bool, pid: u32) -> Result<(), LockError> {
        let mut r = self.verb_rv("acquire", shared, pid).await;
        for attempt in 1..=5u32 {
            if !matches!(r, Err((Some(-16), _))) {
                break;
            }
            tracing::debug!(lease = %self.target(), "sanlock: holder {pid} still busy with its own registration (-16): asking again");
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            r = self.verb_rv("acquire", shared, pid).await;
        }
        r.map_err(|(_, e)| e)
    }

    /// Start `sanlock client command -c HOLDER ...` in its own process group (an agent restart or
    /// a Ctrl-C to the agent does not reach it) and wait until sanlock lists it as a client.
    async fn spawn_holder(&self) -> Result<u32, LockError> {
        let mut args: Vec<String> = vec!["client".into(), "command".into(), "-c".into()];
        match (self.watch_pid, &self.follow) {
            (Some(p), _) => {
                args.push(self.holder.clone());
                args.push(format!("--pid={p}"));
                args.extend(["-f".to_string(), "/dev/null".to_string()]);
            }
            (None, Some((exe, pid_file))) => args.extend([
                exe.clone(),
                super::follow::SUBCOMMAND.to_string(),
                "--pid-file".into(),
                pid_file.display().to_string(),
                "--vm".into(),
                self.vm.clone(),
                "--holder".into(),
                self.holder.clone(),
            ]),
            (None, None) => {
                args.push(self.holder.clone());
                args.extend(["-f".to_string(), "/dev/null".to_string()]);
            }
        }
        // Outlives this call and the agent: exec.rs starts it detached, argv only.
        let pid = Cmd::new(&self.sanlock)
            .args(args.iter().cloned())
            .spawn_detached()
            .map_err(|e| LockError::CommandFailed {
                command: format!("{} {}", self.sanlock, args.join(" ")),
                stderr: e.to_string(),
            })?;
        let deadline =
            std::time::Instant::now() + self.tuning.command_timeout.min(Duration::from_secs(10));
        let mut poll = Duration::from_millis(5);
        loop {
            let out = Cmd::new(&self.sanlock)
                .args(["client", "status"])
                .run(self.tuning.command_timeout)
                .await?;
            // Registered is not enough: `sanlock client command` registers, then sends its own
            // acquire (of no resources), then execs HOLDER. Until the exec an acquire on its
            // behalf meets that command still active in the daemon (-16).
            if status_has_client(&out.stdout, pid) && !still_sanlock_command(pid) {
                return Ok(pid);
            }
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            if !alive || std::time::Instant::now() > deadline {
                self.stop_holder(pid).await;
                return Err(LockError::CommandFailed {
                    command: format!("{} {}", self.sanlock, args.join(" ")),
                    stderr: "the lease holder did not register with sanlock (is the sanlock daemon running? `sanlock client status`)".into(),
                });
            }
            // It registers within a few ms: look again soon, then back off.
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(50));
        }
    }

    async fn stop_holder(&self, pid: u32) {
        let _ = Cmd::new("kill")
            .args(["-TERM", &pid.to_string()])
            .run(self.tuning.command_timeout)
            .await;
    }

    /// `sanlock client VERB -r RES[:SH] -p PID`, its return value mapped to a `LockError`.
    async fn verb(&self, verb: &str, shared: bool, pid: u32) -> Result<(), LockError> {
        self.verb_rv(verb, shared, pid).await.map_err(|(_, e)| e)
    }

    /// [`verb`](Self::verb) with sanlock's return value kept beside the error (None: it
    /// printed none).
    async fn verb_rv(
        &self,
        verb: &str,
        shared: bool,
        pid: u32,
    ) -> Result<(), (Option<i32>, LockError)> {
        let cmd = Cmd::new(&self.sanlock).args([
            "client",
            verb,
            "-r",
            &self.resource(shared),
            "-p",
            &pid.to_string(),
        ]);
        let out = match cmd.run(self.tuning.command_timeout).await {
            Ok(out) => out,
            // A holder that failed while we waited: the refusal that explains the wait.
            Err(e) => {
                return Err((
                    None,
                    match self.holder().await {
                        Some(h) if h.failing => LockError::HostNotDeadYet {
                            target: self.target(),
                            host_id: h.host_id,
                        },
                        _ => e.into(),
                    },
                ))
            }
        };
        let rv = parse_done(&out.stdout);
        if out.success() && rv == Some(0) {
            return Ok(());
        }
        let Some(rv) = rv else {
            return Err((None, failed(&cmd, &format!("{}{}", out.stdout, out.stderr))));
        };
        Err((Some(rv), match classify_rv(rv) {
            SanlockRefusal::HeldByOther => {
                LockError::held_elsewhere(self.target(), &self.vm, self.holder().await)
            }
            SanlockRefusal::NoLockspace => LockError::LeaseLockspaceMissing {
                lockspace: self.lockspace.clone(),
            },
            SanlockRefusal::IoTimeout => LockError::IoTimeout {
                target: self.target(),
            },
            SanlockRefusal::AlreadyHeld | SanlockRefusal::NotHeld => self.incompatible(
                Held::None,
                if shared { "shared" } else { "exclusive" },
                "sanlock's view changed under us (holder exited?) — check `sanlock client status`",
            ),
            SanlockRefusal::Uninitialised => LockError::CommandFailed {
                command: cmd.display(),
                stderr: format!(
                    "sanlock {rv}: no lease is initialised at offset {} of {} — run once: `sanlock client init -r {}`",
                    self.offset,
                    self.path,
                    self.resource(false)
                ),
            },
            SanlockRefusal::Other(rv) => LockError::CommandFailed {
                command: cmd.display(),
                stderr: format!("sanlock returned {rv} {}", out.stderr.trim()),
            },
        }))
    }

    /// The sanlock host id of another host holding this lease, if sanlock can tell.
    pub async fn other_holder(&self) -> Option<u64> {
        self.holder().await.map(|h| h.host_id)
    }

    /// Another host holding this lease, if sanlock can tell.
    async fn holder(&self) -> Option<Holder> {
        who_holds(
            &self.sanlock,
            self.tuning.command_timeout,
            &self.lockspace,
            self.offset,
        )
        .await
    }

    fn incompatible(&self, held: Held, wanted: &'static str, hint: &'static str) -> LockError {
        LockError::IncompatibleMode {
            target: self.target(),
            held: held.as_str(),
            wanted,
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{classify_rv, cmdline_watches, is_sanlock_command, SanlockRefusal};

    #[test]
    fn a_holder_is_ready_once_it_exec_d_its_command() {
        // Before the exec: sanlock's own argv (its empty acquire may still be in the daemon).
        assert!(is_sanlock_command(
            b"sanlock\0client\0command\0-c\0/usr/bin/vmwarden\0lease-holder\0--vm\0vm1\0"
        ));
        // After: the holder's.
        assert!(!is_sanlock_command(
            b"/usr/bin/vmwarden\0lease-holder\0--pid-file\0/run/libvirt/qemu/vm1.pid\0"
        ));
        assert!(!is_sanlock_command(b"tail\0--pid=42\0-f\0/dev/null\0"));
        assert!(!is_sanlock_command(b""));
        // -16 stays a refusal in general (an earlier timed-out acquire of ours still waiting);
        // only a holder just started retries it (acquire_on_new_holder).
        assert_eq!(classify_rv(-16), SanlockRefusal::HeldByOther);
    }

    #[test]
    fn holder_argv_names_the_watched_pid() {
        let argv = b"sanlock\0client\0command\0-c\0/usr/bin/true\0--pid=4242\0-f\0/dev/null\0";
        assert!(cmdline_watches(argv, 4242));
        assert!(!cmdline_watches(argv, 424));
        assert!(!cmdline_watches(argv, 42421));
        assert!(!cmdline_watches(
            b"sanlock\0client\0command\0-f\0/dev/null\0",
            4242
        ));
        assert!(!cmdline_watches(b"", 1));
        assert_eq!(super::watched_pid(argv), Some(4242));
        assert_eq!(super::watched_pid(b"sanlock\0client\0"), None);
        assert_eq!(super::watched_pid(b"x\0--pid=abc\0"), None);
    }
}
