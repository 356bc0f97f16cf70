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
//! - Paused on an I/O error ([`decide_paused_io`], with `resume_after_io_error`): resumed once
//!   its storage path is healthy (storage.rs), never while its lock is not held exclusively
//!   here — and a lock seen lost while paused is remembered until a reset or the VM runs again.
//!   Resumes are bounded like restarts (the same backoff, `max_attempts` within `window`), but
//!   their give-up lasts until `vmwarden ctl reset VM`: storage that fails again at every resume
//!   would otherwise pause and resume the guest in a loop, and a paused guest loses nothing by
//!   waiting for a human.

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
    /// Times of the resumes after an I/O error still inside the window.
    #[serde(default)]
    pub resumes: Vec<f64>,
    /// Gave up resuming it (until `vmwarden ctl reset VM`).
    #[serde(default)]
    pub resume_gave_up_at: Option<f64>,
    /// Its lock was seen not held exclusively here while it was paused on an I/O error: never
    /// resumed automatically (until a reset, or until it is seen running again).
    #[serde(default)]
    pub lock_lost: Option<String>,
    /// Resumes done in total (for the metrics).
    #[serde(default)]
    pub resumes_done: u64,
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
    /// Paused on an I/O error and `resume_after_io_error` is off: left paused (alerted).
    LeftPaused,
    /// Paused on an I/O error, its storage path healthy: resume it now (attempt `attempt`).
    Resume {
        attempt: u32,
    },
    /// Paused on an I/O error, storage healthy, the next resume not before `until`.
    ResumeWait {
        until: f64,
    },
    /// Paused on an I/O error, waiting for its storage path (what it waits for).
    StorageWait {
        why: String,
    },
    /// Its lock is not held exclusively here: never resumed automatically.
    LockLost {
        why: String,
    },
    /// Resumed `attempts` times within the window and paused again: no more resumes.
    ResumeGiveUp {
        attempts: u32,
    },
    /// Gave up resuming it earlier: until `vmwarden ctl reset VM`.
    ResumeGivenUp,
}

/// How a resume ended (the resume action's report).
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeOutcome {
    Resumed,
    Failed(String),
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
        Status::Running | Status::Paused | Status::ErrorUp => {
            rec.elsewhere = None;
            // It runs again (resumed by someone): a lock lost during the pause is judged anew
            // at the next pause.
            rec.lock_lost = None;
            let since = *rec.up_since.get_or_insert(now);
            if now - since >= cfg.stable
                && (!rec.attempts.is_empty()
                    || rec.gave_up_at.is_some()
                    || !rec.resumes.is_empty()
                    || rec.resume_gave_up_at.is_some())
            {
                rec.attempts.clear();
                rec.gave_up_at = None;
                rec.resumes.clear();
                rec.resume_gave_up_at = None;
                return Decision::Stable;
            }
            Decision::Nothing
        }
        // Frozen, not running: it does not count towards `stable` (a guest that pauses again
        // at each resume must not look stable). decide_paused_io says what to do with it.
        Status::PausedIoError => {
            rec.elsewhere = None;
            rec.up_since = None;
            Decision::LeftPaused
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

/// A VM paused on an I/O error, its storage path judged `health` (storage.rs); `enabled`:
/// `resume_after_io_error`. Resume only with the path healthy and the lock exclusive here.
pub fn decide_paused_io(
    cfg: &PolicyConfig,
    rec: &mut VmRecord,
    health: &super::storage::PathHealth,
    enabled: bool,
    now: f64,
) -> Decision {
    use super::storage::PathHealth;
    rec.elsewhere = None;
    rec.up_since = None;
    if !enabled {
        return Decision::LeftPaused;
    }
    if let PathHealth::LockNotHeld(why) = health {
        rec.lock_lost.get_or_insert_with(|| why.clone());
    }
    if let Some(why) = &rec.lock_lost {
        return Decision::LockLost { why: why.clone() };
    }
    if rec.resume_gave_up_at.is_some() {
        return Decision::ResumeGivenUp;
    }
    if let PathHealth::Waiting(why) = health {
        return Decision::StorageWait {
            why: why.join("; "),
        };
    }
    rec.resumes.retain(|t| now - *t < cfg.window);
    let n = rec.resumes.len();
    if n >= cfg.max_attempts as usize {
        rec.resume_gave_up_at = Some(now);
        return Decision::ResumeGiveUp { attempts: n as u32 };
    }
    let next = rec.resumes.last().map_or(now, |l| l + cfg.backoff(n));
    if now + 1e-9 < next {
        return Decision::ResumeWait { until: next };
    }
    rec.resumes.push(now);
    Decision::Resume {
        attempt: (n + 1) as u32,
    }
}

/// Record how a resume ended: a failed one counts as an attempt (it is in `resumes` already).
pub fn resumed(rec: &mut VmRecord, outcome: &ResumeOutcome) {
    if let ResumeOutcome::Resumed = outcome {
        rec.resumes_done += 1;
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
    rec.resumes.clear();
    rec.resume_gave_up_at = None;
    rec.lock_lost = None;
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
    fn resumes_back_off_give_up_and_need_a_reset() {
        use crate::watchdog::storage::PathHealth::*;
        let c = cfg();
        let mut r = VmRecord::default();
        let wait = Waiting(vec!["DRBD r0/0 is Failed here, not UpToDate".into()]);
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, false, 0.0),
            Decision::LeftPaused
        );
        assert_eq!(
            decide_paused_io(&c, &mut r, &wait, true, 0.0),
            Decision::StorageWait {
                why: "DRBD r0/0 is Failed here, not UpToDate".into()
            }
        );
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, true, 1.0),
            Decision::Resume { attempt: 1 }
        );
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, true, 1.5),
            Decision::ResumeWait { until: 2.0 }
        );
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, true, 2.0),
            Decision::Resume { attempt: 2 }
        );
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, true, 4.0),
            Decision::Resume { attempt: 3 }
        );
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, true, 8.0),
            Decision::ResumeGiveUp { attempts: 3 }
        );
        // Long after the window: still given up (resumes need a reset, unlike restarts).
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, true, 5000.0),
            Decision::ResumeGivenUp
        );
        reset(&mut r);
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, true, 5001.0),
            Decision::Resume { attempt: 1 }
        );
    }

    #[test]
    fn a_lock_lost_while_paused_is_never_resumed_until_reset() {
        use crate::watchdog::storage::PathHealth::*;
        let c = cfg();
        let mut r = VmRecord::default();
        let lost = LockNotHeld("this node no longer holds the lock on vg0/a".into());
        assert!(matches!(
            decide_paused_io(&c, &mut r, &lost, true, 0.0),
            Decision::LockLost { .. }
        ));
        // The lock reported held again later does not make it resumable: someone else may
        // have run the VM meanwhile.
        assert!(matches!(
            decide_paused_io(&c, &mut r, &Healthy, true, 100.0),
            Decision::LockLost { .. }
        ));
        reset(&mut r);
        assert_eq!(
            decide_paused_io(&c, &mut r, &Healthy, true, 101.0),
            Decision::Resume { attempt: 1 }
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
