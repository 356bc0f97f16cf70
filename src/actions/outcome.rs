//! Pure decisions of the engine, kept apart so they can be tested over every case:
//!
//! - [`decide_migration_commit`]: did a live migration happen? Decided from what libvirt did —
//!   `virsh migrate`'s exit status and where the domain is *now* on the source — never from
//!   whether the target's agent answers. A migration that happened is never "undone".
//! - [`conclude`]: how an action that stopped at a failing step ends (result word and message),
//!   from what was done before it.

use super::plan::Step;
use super::virsh::DomState;

/// The VM on the source right after `virsh migrate` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAfter {
    /// No qemu of the VM here any more (undefined, shut off): libvirt moved it away (or it
    /// died) — there is nothing here to roll back to.
    Gone,
    /// Running here (libvirt resumed it or never moved it).
    Running,
    /// Active but not running (paused, suspended): a migration libvirt may still be finishing.
    Paused(String),
    /// libvirtd here cannot be asked: nobody can tell yet.
    Unknown(String),
}

impl SourceAfter {
    /// From the engine's view of the VM here (`Engine::active_here`).
    /// libvirtd not answering is `Unknown` even when no qemu pid file is left: the commit is
    /// never decided on a guess.
    pub fn from_state(state: &DomState, active: bool) -> SourceAfter {
        if state.state == "unknown" {
            return SourceAfter::Unknown(state.to_string());
        }
        if !active {
            return SourceAfter::Gone;
        }
        match state.state.as_str() {
            "running" | "blocked" | "idle" | "in shutdown" => SourceAfter::Running,
            _ => SourceAfter::Paused(state.to_string()),
        }
    }
}

/// What `libvirt_migrate` concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// The VM left the source: the action only goes forward from here.
    Committed,
    /// libvirt did not move it (it runs here, not on the target): roll back.
    NotMigrated(String),
    /// Neither can be told safely now: no undo, the journal stays, recovery decides later from
    /// what it sees.
    Unsettled(String),
}

/// The commit decision. `target_active`: whether the target's agent reports the VM active there
/// (`None`: not asked, or unreachable) — it is only ever used to *avoid* a rollback, never needed
/// for the commit.
pub fn decide_migration_commit(
    vm: &str,
    virsh_error: Option<&str>,
    here: &SourceAfter,
    target_active: Option<bool>,
) -> Commit {
    match (here, virsh_error) {
        (SourceAfter::Gone, _) => Commit::Committed,
        (SourceAfter::Unknown(s), _) => Commit::Unsettled(format!(
            "{vm} is {s} on the source after `virsh migrate`: waiting until libvirt here answers"
        )),
        (SourceAfter::Running | SourceAfter::Paused(_), None) => Commit::Unsettled(format!(
            "libvirt reported the migration of {vm} done but it is still active on the source"
        )),
        (_, Some(_)) if target_active == Some(true) => Commit::Unsettled(format!(
            "`virsh migrate` failed and {vm} is active on both nodes: waiting for libvirt to settle (`virsh domjobinfo {vm}` on both)"
        )),
        (SourceAfter::Running, Some(e)) => Commit::NotMigrated(e.to_string()),
        // Paused and the target says it has no instance: libvirt gave up and left it paused
        // here; rolling back keeps the one instance with its lock.
        (SourceAfter::Paused(_), Some(e)) if target_active == Some(false) => {
            Commit::NotMigrated(e.to_string())
        }
        (SourceAfter::Paused(s), Some(e)) => Commit::Unsettled(format!(
            "`virsh migrate` failed ({e}), {vm} is {s} on the source and the target cannot tell whether it has it: a migration may still be running"
        )),
    }
}

/// How an action that stopped at `failed` ends: (result, message). `done`: the steps done before
/// it (newest last); `undo_failed`: whether any rollback of them failed.
pub fn conclude(
    vm: &str,
    done: &[Step],
    committed: bool,
    failed: Step,
    why: &str,
    undo_failed: bool,
) -> (&'static str, String) {
    let name = failed.name();
    let names = |steps: &[Step]| {
        steps
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if committed && failed.forward_only() {
        return (
            "incomplete",
            format!("{name} failed after the point of no return: {why} — the journal is kept and the agent's recovery finishes it (every 3 s; `vmwarden ctl status {vm}` and `vmwarden check` show the state)"),
        );
    }
    if undo_failed {
        return (
            "incomplete",
            format!("{name} failed: {why}; undoing it also failed — the journal is kept and the agent's recovery sets it right from what libvirt and the locks show (every 3 s)"),
        );
    }
    // What changed something (checks change nothing), and what of that cannot be taken back.
    // Steps up to the last commit stay; after it, only what has no undo stays.
    let last_commit = done.iter().rposition(|s| s.commits());
    let changed: Vec<Step> = done.iter().copied().filter(|s| s.changes()).collect();
    let kept: Vec<Step> = done
        .iter()
        .enumerate()
        .filter(|(i, s)| s.changes() && (last_commit.is_some_and(|c| *i <= c) || !s.has_undo()))
        .map(|(_, s)| *s)
        .collect();
    if changed.is_empty() {
        return (
            "refused",
            format!("{name} failed: {why} (nothing was changed)"),
        );
    }
    if committed {
        return (
            "failed",
            format!("{name} failed: {why} (done before it: {})", names(&kept)),
        );
    }
    if !kept.is_empty() {
        let what = kept
            .iter()
            .map(|s| s.cannot_undo())
            .collect::<Vec<_>>()
            .join("; ");
        return (
            "failed",
            format!(
                "{name} failed: {why}; the rest was undone, but {} cannot be: {what}",
                names(&kept)
            ),
        );
    }
    (
        "rolled_back",
        format!("{name} failed: {why}; everything done before it was undone"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Commit::*;
    use SourceAfter::*;

    fn paused() -> SourceAfter {
        Paused("paused (migration)".into())
    }

    #[test]
    fn the_commit_is_where_the_domain_is_now() {
        let failed = Some("`virsh migrate` failed: connection reset");
        // Gone from the source: committed, whatever virsh said and whether the target answers.
        for err in [None, failed] {
            for there in [None, Some(true), Some(false)] {
                assert_eq!(
                    decide_migration_commit("v", err, &Gone, there),
                    Committed,
                    "{err:?} {there:?}"
                );
            }
        }
        // Still running here after a failure: libvirt rolled back — unless the target has it too.
        assert!(matches!(
            decide_migration_commit("v", failed, &Running, None),
            NotMigrated(e) if e.contains("connection reset")
        ));
        assert!(matches!(
            decide_migration_commit("v", failed, &Running, Some(false)),
            NotMigrated(_)
        ));
        assert!(matches!(
            decide_migration_commit("v", failed, &Running, Some(true)),
            Unsettled(e) if e.contains("both")
        ));
        // virsh said done but the VM is still here: never guessed either way.
        for here in [Running, paused()] {
            for there in [None, Some(true), Some(false)] {
                assert!(matches!(
                    decide_migration_commit("v", None, &here, there),
                    Unsettled(_)
                ));
            }
        }
        // Paused after a failure: rolled back only when the target says it has no instance.
        assert!(matches!(
            decide_migration_commit("v", failed, &paused(), Some(false)),
            NotMigrated(_)
        ));
        for there in [None, Some(true)] {
            assert!(matches!(
                decide_migration_commit("v", failed, &paused(), there),
                Unsettled(_)
            ));
        }
        // libvirt here unreachable while qemu runs: wait, never roll back.
        let unk = Unknown("unknown (libvirtd not answering; qemu 7 runs)".into());
        for err in [None, failed] {
            for there in [None, Some(true), Some(false)] {
                assert!(matches!(
                    decide_migration_commit("v", err, &unk, there),
                    Unsettled(_)
                ));
            }
        }
    }

    #[test]
    fn source_after_from_libvirt_states() {
        let s = |t: &str| DomState::parse(t);
        assert_eq!(SourceAfter::from_state(&DomState::undefined(), false), Gone);
        assert_eq!(
            SourceAfter::from_state(&s("shut off (migrated)"), false),
            Gone
        );
        assert_eq!(
            SourceAfter::from_state(&s("running (migration canceled)"), true),
            Running
        );
        assert!(matches!(
            SourceAfter::from_state(&s("paused (migration)"), true),
            Paused(_)
        ));
        assert!(matches!(
            SourceAfter::from_state(&s("unknown (libvirtd not answering; qemu 9 runs)"), true),
            Unknown(_)
        ));
        assert!(matches!(
            SourceAfter::from_state(
                &s("unknown (libvirtd not answering; no qemu process)"),
                false
            ),
            Unknown(_)
        ));
    }

    #[test]
    fn how_a_failed_action_ends() {
        use Step::*;
        // Only the preflight ran: refused, nothing changed.
        let (r, m) = conclude("v", &[MigratePreflight], false, SourceToShared, "x", false);
        assert_eq!(r, "refused");
        assert!(m.contains("nothing was changed"), "{m}");
        // Two lock steps undone: rolled back.
        let (r, _) = conclude(
            "v",
            &[MigratePreflight, SourceToShared, TargetAcquireShared],
            false,
            LibvirtMigrate,
            "x",
            false,
        );
        assert_eq!(r, "rolled_back");
        // The ACPI request was sent: it cannot be undone, so never "everything undone".
        let (r, m) = conclude(
            "v",
            &[AcpiShutdown],
            false,
            WaitOrDestroy,
            "libvirtd down",
            false,
        );
        assert_eq!(r, "failed");
        assert!(
            m.contains("acpi_shutdown") && !m.contains("everything"),
            "{m}"
        );
        // After a commit: forward-only failures are incomplete, others failed.
        let (r, _) = conclude(
            "v",
            &[MigratePreflight, LibvirtMigrate],
            true,
            TargetToExclusive,
            "x",
            false,
        );
        assert_eq!(r, "incomplete");
        // A restart whose start half failed after the stop committed: the stop stays, the
        // undone lock is not listed as kept.
        let (r, m) = conclude(
            "v",
            &[
                AcpiShutdown,
                WaitOrDestroy,
                ReleaseLock,
                StartPreflight,
                LockExclusive,
            ],
            true,
            VirshStart,
            "x",
            false,
        );
        assert_eq!(r, "failed");
        assert!(
            m.contains("wait_or_destroy") && !m.contains("lock_exclusive"),
            "{m}"
        );
        // A failed undo leaves it to recovery.
        let (r, _) = conclude("v", &[LockExclusive], false, VirshStart, "x", true);
        assert_eq!(r, "incomplete");
    }
}
