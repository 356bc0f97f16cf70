//! The rate limit: at most one mail per (VM, kind) per interval. Pure (the caller passes the
//! clock), so its rules are unit-tested without waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Notice;

/// What to do with a notice that just came in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Mail it now; `suppressed` notices of the same key were held back since the last mail.
    Send { suppressed: u32 },
    /// Inside the interval: counted, and the latest one is kept for the summary.
    Suppress,
}

struct Slot {
    last_sent: Instant,
    suppressed: u32,
    latest: Option<Notice>,
}

pub(crate) struct Limiter {
    interval: Duration,
    slots: HashMap<(String, &'static str), Slot>,
}

impl Limiter {
    pub(crate) fn new(interval: Duration) -> Limiter {
        Limiter {
            interval,
            slots: HashMap::new(),
        }
    }

    pub(crate) fn admit(&mut self, n: &Notice, now: Instant) -> Decision {
        self.prune(now);
        let key = (n.vm.clone(), n.kind.key());
        match self.slots.get_mut(&key) {
            Some(s) if now.saturating_duration_since(s.last_sent) < self.interval => {
                s.suppressed = s.suppressed.saturating_add(1);
                s.latest = Some(n.clone());
                Decision::Suppress
            }
            Some(s) => {
                // The interval is over (the summary flush would have sent `latest` already
                // unless it has not run yet): this mail carries the count instead.
                let suppressed = std::mem::take(&mut s.suppressed);
                s.latest = None;
                s.last_sent = now;
                Decision::Send { suppressed }
            }
            None => {
                self.slots.insert(
                    key,
                    Slot {
                        last_sent: now,
                        suppressed: 0,
                        latest: None,
                    },
                );
                Decision::Send { suppressed: 0 }
            }
        }
    }

    /// The latest held-back notice of each key whose interval has ended, with how many were
    /// held back: a crash loop that goes on gets one summary mail per interval, not silence.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(Notice, u32)> {
        let mut out = Vec::new();
        for s in self.slots.values_mut() {
            if now.saturating_duration_since(s.last_sent) >= self.interval {
                if let Some(n) = s.latest.take() {
                    out.push((n, std::mem::take(&mut s.suppressed)));
                    s.last_sent = now;
                }
            }
        }
        out
    }

    /// When the next summary is due, if any notice is held back.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.latest.is_some())
            .map(|s| s.last_sent + self.interval)
            .min()
    }

    /// Forget keys whose interval ended with nothing held back, so VMs that come and go do not
    /// grow the map for the agent's lifetime.
    fn prune(&mut self, now: Instant) {
        let interval = self.interval;
        self.slots.retain(|_, s| {
            s.latest.is_some() || now.saturating_duration_since(s.last_sent) < interval
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::NoticeKind;

    fn notice(vm: &str, kind: NoticeKind) -> Notice {
        Notice {
            vm: vm.into(),
            node: "n1".into(),
            kind,
            what_happened: "qemu killed".into(),
            attempts: 1,
            reset_command: Notice::reset_command_for(vm),
        }
    }

    fn restarted(vm: &str, attempt: u32) -> Notice {
        notice(
            vm,
            NoticeKind::Restarted {
                attempt,
                in_window: Duration::from_secs(600),
            },
        )
    }

    #[test]
    fn one_mail_per_key_per_interval_then_a_summary() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(60));
        assert_eq!(
            l.admit(&restarted("a", 1), t0),
            Decision::Send { suppressed: 0 }
        );
        for i in 2..=10 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(l.admit(&restarted("a", i as u32), now), Decision::Suppress);
        }
        // Another VM and another kind of the same VM have their own budget.
        assert_eq!(
            l.admit(&restarted("b", 1), t0),
            Decision::Send { suppressed: 0 }
        );
        assert_eq!(
            l.admit(&notice("a", NoticeKind::GaveUp), t0),
            Decision::Send { suppressed: 0 }
        );
        assert_eq!(l.next_due(), Some(t0 + Duration::from_secs(60)));
        assert!(l.due(t0 + Duration::from_secs(59)).is_empty());
        let due = l.due(t0 + Duration::from_secs(60));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, 9);
        assert_eq!(
            due[0].0.kind,
            NoticeKind::Restarted {
                attempt: 10,
                in_window: Duration::from_secs(600)
            }
        );
        assert_eq!(l.next_due(), None);
        // The summary counts as the interval's mail.
        assert_eq!(
            l.admit(&restarted("a", 11), t0 + Duration::from_secs(61)),
            Decision::Suppress
        );
    }

    #[test]
    fn a_notice_after_the_interval_carries_the_count() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(60));
        l.admit(&restarted("a", 1), t0);
        l.admit(&restarted("a", 2), t0 + Duration::from_secs(1));
        l.admit(&restarted("a", 3), t0 + Duration::from_secs(2));
        assert_eq!(
            l.admit(&restarted("a", 4), t0 + Duration::from_secs(70)),
            Decision::Send { suppressed: 2 }
        );
        assert_eq!(l.next_due(), None);
    }

    #[test]
    fn zero_interval_never_suppresses_and_old_keys_are_pruned() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(
                l.admit(&restarted("a", 1), t0),
                Decision::Send { suppressed: 0 }
            );
        }
        let mut l = Limiter::new(Duration::from_secs(1));
        for i in 0..100 {
            l.admit(&restarted(&format!("vm{i}"), 1), t0);
        }
        l.admit(&restarted("last", 1), t0 + Duration::from_secs(5));
        assert_eq!(l.slots.len(), 1);
    }
}
