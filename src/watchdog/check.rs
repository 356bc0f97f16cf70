//! The watchdog's part of `vmwarden check`: each VM's status in Ganeti's words, judged from the
//! same observation as the invariants plus the agent's persisted memory. A VM the watchdog gave
//! up on needs a human, so it fails the check like a violated invariant; one it is still
//! restarting is reported, not failed (the watchdog is on it).

use crate::collect::{Observation, Outcome};
use crate::config::Config;

use super::driver::{load_memory, memory_path, offline_views};
use super::status::Status;
use super::VmView;

/// The section's text and whether it asks for a human (a given-up VM, a VM running against its
/// intent).
pub fn report(cfg: &Config, obs: &Observation) -> (String, bool) {
    if !cfg.watchdog.enabled {
        return (
            "watchdog: disabled ([watchdog] enabled = false)\n".into(),
            false,
        );
    }
    let domains = match &obs.snapshot.libvirt.outcome {
        Outcome::Ok(s) => &s.domains,
        Outcome::Disabled => {
            return (
                "watchdog: NOT CHECKED: libvirt collector disabled\n".into(),
                false,
            )
        }
        Outcome::Absent(why) | Outcome::Failed(why) => {
            return (format!("watchdog: NOT CHECKED: libvirt: {why}\n"), false)
        }
    };
    let (memory, note) = match load_memory(&memory_path(cfg)) {
        Ok(m) => (m, None),
        Err(e) => (Default::default(), Some(e)),
    };
    let views = offline_views(cfg, domains, &memory);
    let mut out = format_views(&views);
    if let Some(e) = note {
        out.push_str(&format!("    (attempts not shown: {e})\n"));
    }
    (out, views.iter().any(needs_attention))
}

/// Given up (restarting, or resuming after an I/O error), never to be resumed (its lock was
/// lost while paused), or running although it should be stopped: nothing will change without a
/// human.
fn needs_attention(v: &VmView) -> bool {
    v.gave_up || v.resume_stuck || v.status == Status::ErrorUp
}

fn format_views(views: &[VmView]) -> String {
    if views.is_empty() {
        return "watchdog: no VM defined on this node\n".into();
    }
    let mut out = String::from("watchdog (VM status, Ganeti's words):\n");
    for v in views {
        let mark = if needs_attention(v) { "NEEDS YOU" } else { "" };
        let intent = v.intent.map(|w| w.as_str()).unwrap_or("-");
        let what = if v.status == Status::ErrorUp && v.decision.is_empty() {
            format!(
                "runs although its intent is \"stopped\": `vmwarden ctl stop {}`, or `vmwarden ctl start {}` to keep it",
                v.vm, v.vm
            )
        } else {
            v.decision.clone()
        };
        out.push_str(&format!(
            "  {:<20} {:<16} intent {:<4} attempts {:<3} {:<9} {}\n",
            v.vm, v.status_word, intent, v.attempts, mark, what
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchdog::intent::Want;

    fn view(vm: &str, status: Status, gave_up: bool) -> VmView {
        VmView {
            vm: vm.into(),
            status,
            status_word: status.as_str(),
            intent: Some(Want::Run),
            decision: String::new(),
            attempts: if gave_up { 5 } else { 0 },
            gave_up,
            restarts: 0,
            elsewhere: None,
            resume_stuck: false,
        }
    }

    #[test]
    fn a_given_up_or_error_up_vm_needs_a_human_a_crashed_one_does_not_yet() {
        assert!(!needs_attention(&view("a", Status::Running, false)));
        assert!(!needs_attention(&view("b", Status::ErrorDown, false)));
        assert!(needs_attention(&view("c", Status::ErrorDown, true)));
        assert!(needs_attention(&view("d", Status::ErrorUp, false)));
        let text = format_views(&[view("d", Status::ErrorUp, false)]);
        assert!(
            text.contains("ERROR_up") && text.contains("NEEDS YOU"),
            "{text}"
        );
        assert!(text.contains("vmwarden ctl stop d"), "{text}");
        // Paused on an I/O error: a human is needed only once the watchdog will not resume it.
        let mut v = view("e", Status::PausedIoError, false);
        assert!(!needs_attention(&v));
        v.resume_stuck = true;
        assert!(needs_attention(&v));
    }
}
