//! Runs every enabled collector concurrently, each under the configured timeout, and folds the
//! results into one `Snapshot`. Remembers what was already logged so a broken or absent source
//! is reported once, not on every scrape.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::invariants::Report;
use crate::metrics::AgentCounters;
use crate::node::NodeMap;
use crate::probe::drbd::DrbdSnapshot;
use crate::probe::libvirt::{LibvirtProbe, LibvirtSnapshot};
use crate::probe::lvm::LvmSnapshot;
use crate::probe::sanlock::SanlockSnapshot;
use crate::probe::{self, Parsed, ProbeError};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    Ok(T),
    /// The source does not exist on this node.
    Absent(String),
    /// The source exists but could not be read in time or at all.
    Failed(String),
    Disabled,
}

#[derive(Debug, Clone)]
pub struct CollectorReport<T> {
    pub outcome: Outcome<T>,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub drbd: CollectorReport<DrbdSnapshot>,
    pub lvm: CollectorReport<LvmSnapshot>,
    pub sanlock: CollectorReport<SanlockSnapshot>,
    pub libvirt: CollectorReport<LibvirtSnapshot>,
}

/// One collection and its judgment, made once: the snapshot, the node map built from it (which
/// domain uses which LV, DRBD volume and lease) and the invariants judged on that map. `/metrics`,
/// `vmwarden check` and the API all read this one judgment instead of each building its own, so
/// they cannot disagree about the same observation.
#[derive(Debug, Clone)]
pub struct Observation {
    pub snapshot: Snapshot,
    pub map: NodeMap,
    pub invariants: Report,
    /// What each configured peer said about the VMs running there (or why it could not be
    /// asked), as the invariants were fed it: `vmwarden_peer_up`.
    pub peers: Vec<crate::invariants::PeerVms>,
}

impl Observation {
    /// Judge `snapshot`: `lease_lockspace` is the VM lease lockspace of the sanlock lock backend
    /// (the lock invariants then judge leases), `in_migration` the domains a live migration
    /// declared on this node (a shared lock is expected for them).
    pub fn judge(
        snapshot: Snapshot,
        lease_lockspace: Option<&str>,
        in_migration: &BTreeSet<String>,
    ) -> Observation {
        let map = NodeMap::build_with_leases(&snapshot, lease_lockspace);
        let invariants = crate::invariants::check(&map, in_migration);
        Observation {
            snapshot,
            map,
            invariants,
            peers: Vec::new(),
        }
    }

    /// This observation with what the peers said judged too (`running_on_several_nodes`; `here`
    /// is this node's name).
    pub fn with_peers(mut self, here: &str, peers: Vec<crate::invariants::PeerVms>) -> Observation {
        let cluster = crate::invariants::check_cluster(here, &self.map, &peers);
        self.invariants = std::mem::take(&mut self.invariants).merged(cluster);
        self.peers = peers;
        self
    }
}

/// What has been said in the logs already, per collector.
#[derive(Default)]
struct LogMemory {
    last_status: String,
    seen_parse_errors: HashSet<String>,
    parse_errors: u64,
}

/// Bound on remembered distinct parse-error messages: beyond it, new ones are counted, not logged.
const MAX_REMEMBERED: usize = 256;

pub struct Collector {
    cfg: Config,
    libvirt: LibvirtProbe,
    memory: Mutex<[LogMemory; 4]>,
    actions: Option<std::sync::Arc<crate::actions::stats::ActionStats>>,
    watchdog: Option<std::sync::Arc<crate::watchdog::Watchdog>>,
    /// The credential peers accept, to ask them what runs there; `Err(why)` without one.
    peer_secret: Result<crate::secret::Secret, String>,
}

impl Collector {
    pub fn new(cfg: Config) -> Self {
        let libvirt = LibvirtProbe::new(cfg.libvirt.clone());
        Collector {
            cfg,
            libvirt,
            memory: Mutex::new(Default::default()),
            actions: None,
            watchdog: None,
            peer_secret: Err("this process has no cluster secret to ask peers with".into()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Probe everything once. Never fails: failures are part of the snapshot.
    pub async fn collect(&self) -> Snapshot {
        let t = self.cfg.collector_timeout();
        let c = &self.cfg;
        let (drbd, lvm, sanlock, libvirt) = tokio::join!(
            run(c.drbd.enabled, t, probe::drbd::probe(&c.drbd, t)),
            run(c.lvm.enabled, t, probe::lvm::probe(&c.lvm, t)),
            run(c.sanlock.enabled, t, probe::sanlock::probe(&c.sanlock, t)),
            run(c.libvirt.enabled, t, self.libvirt.probe(t)),
        );
        Snapshot {
            drbd: self.note(0, drbd),
            lvm: self.note(1, lvm),
            sanlock: self.note(2, sanlock),
            libvirt: self.note(3, libvirt),
        }
    }

    /// Log state changes and new parse errors once; keep the counts.
    fn note<T>(&self, idx: usize, r: (Outcome<Parsed<T>>, Duration)) -> CollectorReport<T> {
        let name = crate::metrics::COLLECTORS[idx];
        let (outcome, duration) = r;
        let mut mem = match self.memory.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let m = &mut mem[idx];
        let status = match &outcome {
            Outcome::Ok(_) => "ok".to_string(),
            Outcome::Absent(why) => format!("absent: {why}"),
            Outcome::Failed(why) => format!("failed: {why}"),
            Outcome::Disabled => "disabled".to_string(),
        };
        if status != m.last_status {
            match &outcome {
                Outcome::Ok(_) if !m.last_status.is_empty() => {
                    tracing::info!(collector = name, "collector recovered")
                }
                Outcome::Ok(_) | Outcome::Disabled => {}
                Outcome::Absent(why) => tracing::info!(
                    collector = name,
                    "source absent on this node, collector marked absent: {why}"
                ),
                Outcome::Failed(why) => tracing::warn!(collector = name, "collector failed: {why}"),
            }
            m.last_status = status;
        }
        let outcome = match outcome {
            Outcome::Ok(p) => {
                m.parse_errors += p.errors.len() as u64;
                for e in p.errors {
                    if m.seen_parse_errors.len() < MAX_REMEMBERED
                        && m.seen_parse_errors.insert(e.clone())
                    {
                        tracing::warn!(
                            collector = name,
                            "skipped unparseable input (counted in vmwarden_parse_errors_total; logged once): {e}"
                        );
                    }
                }
                Outcome::Ok(p.value)
            }
            Outcome::Absent(s) => Outcome::Absent(s),
            Outcome::Failed(s) => Outcome::Failed(s),
            Outcome::Disabled => Outcome::Disabled,
        };
        CollectorReport { outcome, duration }
    }

    pub fn counters(&self) -> AgentCounters {
        let mem = match self.memory.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        AgentCounters {
            parse_errors: crate::metrics::COLLECTORS
                .iter()
                .zip(mem.iter())
                .map(|(c, m)| (*c, m.parse_errors))
                .collect(),
            actions: self.actions.clone(),
            watchdog: self.watchdog.clone(),
        }
    }

    /// Export this agent's action counters with every scrape.
    pub fn with_action_stats(
        mut self,
        s: std::sync::Arc<crate::actions::stats::ActionStats>,
    ) -> Self {
        self.actions = Some(s);
        self
    }

    /// Export the watchdog's view with every scrape.
    pub fn with_watchdog(mut self, w: std::sync::Arc<crate::watchdog::Watchdog>) -> Self {
        self.watchdog = Some(w);
        self
    }

    /// Ask the peers what runs there with `secret` (else every peer is reported not asked,
    /// with `why`).
    pub fn with_peer_secret(mut self, secret: Result<crate::secret::Secret, String>) -> Self {
        self.peer_secret = secret;
        self
    }

    /// Every configured peer's VMs, asked concurrently (`crate::cluster::ask`).
    pub async fn ask_peers(&self) -> Vec<crate::cluster::PeerAnswer> {
        crate::cluster::ask(&self.cfg, self.peer_secret.as_ref().map_err(String::as_str)).await
    }

    /// Collect once, ask the peers meanwhile, and judge both (see [`Observation`]).
    pub async fn observe(&self) -> Observation {
        let (snap, peers) = tokio::join!(self.collect(), self.ask_peers());
        self.judge(snap, &peers)
    }

    /// Judge a snapshot and the peers' answers, as `observe` does.
    pub fn judge(&self, snap: Snapshot, peers: &[crate::cluster::PeerAnswer]) -> Observation {
        Observation::judge(
            snap,
            self.cfg.lease_lockspace().as_deref(),
            &crate::actions::journal::in_migration(&self.cfg),
        )
        .with_peers(
            &self.cfg.node_name(),
            peers.iter().map(|p| p.as_invariant_input()).collect(),
        )
    }

    /// Observe and build the families in one go (what `/metrics` and `vmwarden collect` write,
    /// in the format each asks for).
    pub async fn render(&self) -> crate::metrics::Registry {
        let obs = self.observe().await;
        crate::metrics::render(&obs, &self.counters())
    }
}

/// DRBD and lvm only, each under the collector timeout: what a live migration's target judges
/// the DRBD under the VM's disks by (`node::drbd_problems_under`). No libvirt or sanlock: it is on
/// the preflight's path.
pub async fn collect_storage(cfg: &Config) -> (Outcome<DrbdSnapshot>, Outcome<LvmSnapshot>) {
    let t = cfg.collector_timeout();
    let ((d, _), (l, _)) = tokio::join!(
        run(cfg.drbd.enabled, t, probe::drbd::probe(&cfg.drbd, t)),
        run(cfg.lvm.enabled, t, probe::lvm::probe(&cfg.lvm, t)),
    );
    fn value<T>(o: Outcome<Parsed<T>>) -> Outcome<T> {
        match o {
            Outcome::Ok(p) => Outcome::Ok(p.value),
            Outcome::Absent(w) => Outcome::Absent(w),
            Outcome::Failed(w) => Outcome::Failed(w),
            Outcome::Disabled => Outcome::Disabled,
        }
    }
    (value(d), value(l))
}

/// One collector run under the timeout. The probe's own commands carry the same timeout (and are
/// killed by it); this outer bound also covers non-command work such as libvirt calls.
async fn run<T>(
    enabled: bool,
    timeout: Duration,
    fut: impl Future<Output = Result<Parsed<T>, ProbeError>>,
) -> (Outcome<Parsed<T>>, Duration) {
    if !enabled {
        return (Outcome::Disabled, Duration::ZERO);
    }
    let start = Instant::now();
    let outcome = match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(p)) => Outcome::Ok(p),
        Ok(Err(ProbeError::Absent(why))) => Outcome::Absent(why),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::Failed(format!(
            "did not finish within {:.1}s (agent.collector_timeout_seconds); its commands were killed",
            timeout.as_secs_f64()
        )),
    };
    (outcome, start.elapsed())
}
