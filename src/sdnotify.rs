//! systemd's readiness and watchdog protocol (`sd_notify(3)`): one datagram per state change to
//! the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//!
//! Written by hand rather than taken from a crate: the whole protocol is "send `READY=1` to that
//! socket", std has the unix datagram socket and the abstract address, so this needs no `unsafe`
//! and no new dependency (neither `sd-notify` nor `libsystemd` is in Cargo.lock).
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) every call does nothing.
//! A failed send is logged once at debug level and otherwise ignored: a notification must never
//! stop the agent (systemd then reports the start as timed out, which is visible enough).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go, read once from the environment.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// `$NOTIFY_SOCKET`, and `$WATCHDOG_USEC` when `$WATCHDOG_PID` is unset or names this process.
    pub fn from_env() -> Notifier {
        Self::from_vars(|k| std::env::var(k).ok(), std::process::id())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>, pid: u32) -> Notifier {
        let socket = var("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        // systemd names the process the watchdog is for; a child that inherited it is not.
        let for_us = match var("WATCHDOG_PID") {
            None => true,
            Some(p) => p.trim().parse::<u32>().is_ok_and(|p| p == pid),
        };
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Whether systemd listens (the agent runs as a `Type=notify` service).
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// systemd's watchdog period (`WatchdogSec=`), when it asks for keep-alives.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog)
    }

    /// Send `state` (e.g. `"READY=1\nSTATUS=serving"`). Does nothing without `$NOTIFY_SOCKET`.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let Some(path) = &self.socket else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), path)?;
        }
        Ok(())
    }

    /// [`notify`](Self::notify), logging (not returning) a failure.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!("cannot notify systemd ({state:?} to $NOTIFY_SOCKET): {e}");
        }
    }

    /// Keep-alives at half systemd's watchdog period, for as long as the runtime runs: a tokio
    /// runtime that stops scheduling (a deadlock, a blocked worker pool) stops them, and systemd
    /// restarts the agent (`Restart=on-failure`). Does nothing when no watchdog is asked for.
    pub fn spawn_watchdog(&self) {
        let Some(period) = self.watchdog_period() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.send("WATCHDOG=1");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment() {
        let n = Notifier::from_vars(vars(&[]), 7);
        assert!(!n.enabled() && n.watchdog_period().is_none());
        assert!(n.notify("READY=1").is_ok(), "no socket: nothing to do");
        let n = Notifier::from_vars(
            vars(&[("NOTIFY_SOCKET", "/run/x"), ("WATCHDOG_USEC", "30000000")]),
            7,
        );
        assert_eq!(n.watchdog_period(), Some(Duration::from_secs(30)));
        let n = Notifier::from_vars(
            vars(&[
                ("NOTIFY_SOCKET", "/run/x"),
                ("WATCHDOG_USEC", "30000000"),
                ("WATCHDOG_PID", "8"),
            ]),
            7,
        );
        assert_eq!(
            n.watchdog_period(),
            None,
            "the watchdog is another process's"
        );
        let n = Notifier::from_vars(vars(&[("WATCHDOG_USEC", "30000000")]), 7);
        assert_eq!(n.watchdog_period(), None, "no socket to send to");
        let n = Notifier::from_vars(
            vars(&[("NOTIFY_SOCKET", "/run/x"), ("WATCHDOG_USEC", "soon")]),
            7,
        );
        assert_eq!(n.watchdog_period(), None);
    }

    #[test]
    fn abstract_and_path_sockets_receive() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("vmwarden-sdnotify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", &format!("@{name}"))]), 1);
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let p = path.to_str().unwrap().to_string();
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", &p)]), 1);
        n.notify("STOPPING=1").unwrap();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
        drop(rx);
        assert!(n.notify("READY=1").is_err(), "nobody listens any more");
    }
}
