//! The restart policy, pure: (what it remembers of a VM, the VM's status, what the last start
//! did, the clock) → a decision. The driver (driver.rs) feeds it observations and carries its
//! decisions out through the start action; the simulator (sim.rs) feeds it a script.
//!
//! - ERROR_down → restart: the first at once, then after an exponential backoff
//!   (`backoff_initial` doubling up to `backoff_max`) since the previous attempt.
//! - At most `max_attempts` attempts within `window`; then give up: nothing more until
//!   `vmwarden ctl reset VM`, or until `window` has passed since giving up.
//! - Running for `stable` resets the count (a slow crash loop never gives up).
//! - A start refused because the VM's lock is held by another node means it runs there: reported,
//!   never fought, until the VM is seen running here again or is reset.

use serde::{Deserialize, Serialize};

use super::status::Status;

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub max_attempts: u32,
    pub window: f64,
    pub backoff_initial: f64,
    pub backoff_max: f64,
    pub stable: f64,
}

impl PolicyConfig {
    pub fn from_config(w: &crate::config::WatchdogConfig) -> PolicyConfig {
        PolicyConfig {
            max_attempts: w.max_attempts,
            window: w.window_seconds,
            backoff_initial: w.backoff_initial_seconds,
            backoff_max: w.backoff_max_seconds,
            stable: w.stable_seconds,
        }
    }

    /// The wait before attempt `n + 1` when `n` attempts were made.
    pub fn backoff(&self, n: usize) -> f64 {
        if n == 0 {
            return 0.0;
        }
        let exp = (n - 1).min(30) as i32;
        (self.backoff_initial * 2f64.powi(exp)).min(self.backoff_max)
    }
}

/// What the watchdog remembers of one VM (persisted across agent restarts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Times (unix seconds) of the restart attempts still inside the window.
    #[serde(default)]
    pub attempts: Vec<f64>,
    #[serde(default)]
    pub gave_up_at: Option<f64>,
    /// Seen running here since.
    #[serde(default)]
    pub up_since: Option<f64>,
    /// The last start was refused: the VM runs on this node (its lock is held there).
    #[serde(default)]
    pub elsewhere: Option<String>,
    /// Restarts done in total (for the metrics).
    #[serde(default)]
    pub restarts: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    /// Start it now; this is attempt `attempt` in the window.
    Restart {
        attempt: u32,
    },
    /// ERROR_down, next attempt not before `until`.
    Wait {
        until: f64,
    },
    /// The limit is reached: no more attempts until a reset or the window passes.
    GiveUp {
        attempts: u32,
    },
    /// Given up earlier and still within the window.
    GivenUp,
    /// It runs on another node: nothing to do here.
    Elsewhere {
        node: String,
    },
    /// Stayed up for `stable`: the attempt count was reset.
    Stable,
    /// The window passed since giving up: trying again.
    WindowPassed,
}

/// How a restart attempt ended (the start action's report).
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    Started,
    /// Refused because the VM runs on (its lock is held by) `node`.
    RunsElsewhere {
        node: String,
    },
    Failed(String),
}

pub fn decide(cfg: &PolicyConfig, rec: &mut VmRecord, status: Status, now: f64) -> Decision {
    match status {
        Status::Running | Status::Paused | Status::PausedIoError | Status::ErrorUp => {
            rec.elsewhere = None;
            let since = *rec.up_since.get_or_insert(now);
            if now - since >= cfg.stable && (!rec.attempts.is_empty() || rec.gave_up_at.is_some()) {
                rec.attempts.clear();
                rec.gave_up_at = None;
                return Decision::Stable;
            }
            Decision::Nothing
        }
        Status::ErrorDown => {
            rec.up_since = None;
            if let Some(node) = &rec.elsewhere {
                return Decision::Elsewhere { node: node.clone() };
            }
            let mut passed = false;
            if let Some(g) = rec.gave_up_at {
                if now - g < cfg.window {
                    return Decision::GivenUp;
                }
                rec.gave_up_at = None;
                rec.attempts.clear();
                passed = true;
            }
            rec.attempts.retain(|t| now - *t < cfg.window);
            let n = rec.attempts.len();
            if n >= cfg.max_attempts as usize {
                rec.gave_up_at = Some(now);
                return Decision::GiveUp { attempts: n as u32 };
            }
            let next = rec.attempts.last().map_or(now, |l| l + cfg.backoff(n));
            if now + 1e-9 < next {
                return Decision::Wait { until: next };
            }
            if passed {
                // Reported once; the restart follows on the next evaluation (at once).
                return Decision::WindowPassed;
            }
            rec.attempts.push(now);
            Decision::Restart {
                attempt: (n + 1) as u32,
            }
        }
        Status::AdminDown | Status::UserDown | Status::Migrated | Status::Unmanaged => {
            rec.up_since = None;
            Decision::Nothing
        }
    }
}

/// Record how a restart attempt ended.
pub fn started(rec: &mut VmRecord, outcome: &StartOutcome) {
    match outcome {
        StartOutcome::Started => rec.restarts += 1,
        StartOutcome::RunsElsewhere { node } => {
            // Not a crash of ours: the attempt does not count against the VM.
            rec.attempts.pop();
            rec.elsewhere = Some(node.clone());
        }
        StartOutcome::Failed(_) => {}
    }
}

/// `vmwarden ctl reset VM`: forget attempts, give-up and the last refusal.
pub fn reset(rec: &mut VmRecord) {
    rec.attempts.clear();
    rec.gave_up_at = None;
    rec.elsewhere = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            max_attempts: 3,
            window: 600.0,
            backoff_initial: 1.0,
            backoff_max: 8.0,
            stable: 60.0,
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let c = cfg();
        let w: Vec<f64> = (0..6).map(|n| c.backoff(n)).collect();
        assert_eq!(w, [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]);
    }

    #[test]
    fn gives_up_after_the_limit_and_reset_revives() {
        let c = cfg();
        let mut r = VmRecord::default();
        assert_eq!(
            decide(&c, &mut r, Status::ErrorDown, 0.0),
            Decision::Restart { attempt: 1 }
        );
        started(&mut r, &StartOutcome::Started);
        assert_eq!(
            decide(&c, &mut r, Status::ErrorDown, 0.5),
            Decision::Wait { until: 1.0 }
        );
        assert_eq!(
            decide(&c, &mut r, Status::ErrorDown, 1.0),
            Decision::Restart { attempt: 2 }
        );
        assert_eq!(
            decide(&c, &mut r, Status::ErrorDown, 3.0),
            Decision::Restart { attempt: 3 }
        );
        assert_eq!(
            decide(&c, &mut r, Status::ErrorDown, 10.0),
            Decision::GiveUp { attempts: 3 }
        );
        assert_eq!(
            decide(&c, &mut r, Status::ErrorDown, 100.0),
            Decision::GivenUp
        );
        reset(&mut r);
        assert_eq!(
            decide(&c, &mut r, Status::ErrorDown, 101.0),
            Decision::Restart { attempt: 1 }
        );
    }

    #[test]
    fn lock_elsewhere_is_never_fought() {
        let c = cfg();
        let mut r = VmRecord::default();
        assert_eq!(
            decide(&c, &mut r, Status::ErrorDown, 0.0),
            Decision::Restart { attempt: 1 }
        );
        started(&mut r, &StartOutcome::RunsElsewhere { node: "n2".into() });
        assert!(r.attempts.is_empty());
        for t in [1.0, 50.0, 5000.0] {
            assert_eq!(
                decide(&c, &mut r, Status::ErrorDown, t),
                Decision::Elsewhere { node: "n2".into() }
            );
        }
    }
}
