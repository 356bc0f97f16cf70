//! What a notification mail says: which VM, which node, what happened, how many attempts, and
//! the one command that resets the watchdog for that VM. Plain text, short lines, so it reads
//! the same on a phone, in a pager and in a ticket system.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox, Message};

use super::{Notice, NoticeKind};

pub fn subject(n: &Notice) -> String {
    match n.kind {
        NoticeKind::GaveUp => format!(
            "[vmwarden] {} on {}: gave up restarting after {} attempts",
            n.vm, n.node, n.attempts
        ),
        NoticeKind::Restarted { attempt, in_window } => format!(
            "[vmwarden] {} on {}: restarted again (attempt {attempt} within {})",
            n.vm,
            n.node,
            human(in_window)
        ),
    }
}

/// `suppressed`: notices of this VM and kind held back by the rate limit since the last mail.
pub fn body(n: &Notice, suppressed: u32, interval: Duration) -> String {
    let (status, next) = match n.kind {
        NoticeKind::GaveUp => (
            "gave up: the watchdog no longer restarts this VM".to_string(),
            "The VM stays down until it is reset (or the restart window passes).",
        ),
        NoticeKind::Restarted { attempt, in_window } => (
            format!(
                "restarted (attempt {attempt} within {}); the watchdog keeps trying",
                human(in_window)
            ),
            "The watchdog gives up after the configured number of attempts.",
        ),
    };
    let mut b = format!(
        "VM:           {vm}\n\
         Node:         {node}\n\
         Status:       {status}\n\
         Reason:       {what}\n\
         Attempts:     {attempts}\n\
         \n\
         {next}\n\
         To reset the watchdog for this VM, on {node}:\n\
         \n    {reset}\n",
        vm = n.vm,
        node = n.node,
        what = n.what_happened,
        attempts = n.attempts,
        reset = n.reset_command,
    );
    if suppressed > 0 {
        b.push_str(&format!(
            "\n{suppressed} more notice(s) of this kind for {vm} were not mailed (at most one mail per {}).\n",
            human(interval),
            vm = n.vm
        ));
    }
    b
}

pub fn message(
    n: &Notice,
    suppressed: u32,
    interval: Duration,
    from: &Mailbox,
    to: &[Mailbox],
) -> Result<Message, lettre::error::Error> {
    let mut m = Message::builder()
        .from(from.clone())
        .subject(subject(n))
        .header(ContentType::TEXT_PLAIN);
    for t in to {
        m = m.to(t.clone());
    }
    m.body(body(n, suppressed, interval))
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s % 3600 == 0 {
        format!("{} h", s / 3600)
    } else if s >= 120 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gave_up_mail_names_vm_node_reason_attempts_and_reset() {
        let n = Notice {
            vm: "web1".into(),
            node: "n2".into(),
            kind: NoticeKind::GaveUp,
            what_happened: "qemu crashed (signal 9)".into(),
            attempts: 5,
            reset_command: Notice::reset_command_for("web1"),
        };
        let s = subject(&n);
        assert!(
            s.contains("web1") && s.contains("n2") && s.contains("5 attempts"),
            "{s}"
        );
        let b = body(&n, 0, Duration::from_secs(3600));
        for want in [
            "web1",
            "n2",
            "qemu crashed (signal 9)",
            "Attempts:     5",
            "vmwarden ctl reset web1",
        ] {
            assert!(b.contains(want), "{want} missing from:\n{b}");
        }
        assert!(!b.contains("not mailed"), "{b}");
        let b = body(&n, 7, Duration::from_secs(3600));
        assert!(b.contains("7 more notice(s)") && b.contains("1 h"), "{b}");
    }

    #[test]
    fn restarted_subject_says_attempt_and_window() {
        let n = Notice {
            vm: "db".into(),
            node: "n1".into(),
            kind: NoticeKind::Restarted {
                attempt: 3,
                in_window: Duration::from_secs(600),
            },
            what_happened: "guest panic".into(),
            attempts: 3,
            reset_command: Notice::reset_command_for("db"),
        };
        assert_eq!(
            subject(&n),
            "[vmwarden] db on n1: restarted again (attempt 3 within 10 min)"
        );
    }
}
