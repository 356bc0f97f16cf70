//! Email notifications (issue 11 part 5): the watchdog tells people when it restarts a VM again
//! within its window and when it gives up on one.
//!
//! The watchdog must never wait for a mail server, so [`Notifier::notify`] is a plain function
//! that only decides and queues: the rate limit (one mail per VM and kind per
//! `min_interval_seconds`) is applied at once, and what is to be mailed goes into a bounded
//! channel (full → dropped and counted). One background task sends each mail over SMTP with
//! lettre (rustls), retrying with exponential backoff, so a server that is down costs one
//! connection attempt per backoff step, never a hot loop and never a blocked caller.
//!
//! The password is read once from `password_file` at start, kept in a type whose Debug is
//! redacted, and never logged; what is logged of a failure is lettre's error (the server's reply),
//! which does not carry it.

mod limit;
pub mod mail;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::mpsc;

use crate::config::EmailConfig;
use limit::{Decision, Limiter};

/// One thing the watchdog wants people to know about a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub vm: String,
    /// The node whose agent is speaking (where the VM is and the reset must be run).
    pub node: String,
    pub kind: NoticeKind,
    /// The reason in words, e.g. "qemu killed (signal 9)", "failed to start: lock held by n2".
    pub what_happened: String,
    /// Restart attempts so far in the current window.
    pub attempts: u32,
    /// The one command that resets the watchdog for this VM ([`Notice::reset_command_for`]).
    pub reset_command: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The last allowed attempt failed: the VM is left down until reset.
    GaveUp,
    /// A restart after the first in a window: `attempt` is its number, `in_window` the length
    /// of the window the attempts are counted in.
    Restarted { attempt: u32, in_window: Duration },
}

impl NoticeKind {
    /// The rate-limit key and the log word.
    pub fn key(&self) -> &'static str {
        match self {
            NoticeKind::GaveUp => "gave_up",
            NoticeKind::Restarted { .. } => "restarted",
        }
    }
}

impl Notice {
    /// `vmwarden ctl reset VM`: what the mail tells the operator to run.
    pub fn reset_command_for(vm: &str) -> String {
        format!("vmwarden ctl reset {vm}")
    }
}

/// What [`Notifier::notify`] did with a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handed to the sender task.
    Queued,
    /// Held back by the rate limit (counted; a later mail says how many).
    Suppressed,
    /// The queue was full: not mailed (counted).
    Dropped,
    /// `[notify.email] enabled = false`.
    Disabled,
}

/// Counters for the metrics layer: each only ever grows.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Mails the server accepted.
    pub sent: AtomicU64,
    /// Send attempts that failed (each retry counts).
    pub failed: AtomicU64,
    /// Notices held back by the rate limit.
    pub suppressed: AtomicU64,
    /// Notices never mailed: queue full, or retried for `retry_for_seconds` without success.
    pub dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A plain copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub sent: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub dropped: u64,
}

impl NotifyStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            suppressed: self.suppressed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// The last send failure (the SMTP client's error text), for `vmwarden check` and tests.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify.email.password_file {path}: {source} — create it with `install -m 600 /dev/null {path}` and write the SMTP password into it")]
    PasswordRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("notify.email.password_file {path} is empty")]
    PasswordEmpty { path: String },
    #[error("notify.email.ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("notify.email: {0}")]
    Setup(String),
}

/// The password, out of every Debug and log line.
#[derive(Clone)]
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Read the SMTP password: the file's content without its trailing line end (a password may
/// contain spaces, so only "\n"/"\r\n" go). A file readable by group or others is used but
/// warned about, as for the cluster secret.
fn read_password(path: &str) -> Result<Password, NotifyError> {
    let read = |e| NotifyError::PasswordRead {
        path: path.to_string(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    let text = std::fs::read_to_string(path).map_err(read)?;
    let pw = text.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        return Err(NotifyError::PasswordEmpty {
            path: path.to_string(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path,
            "the SMTP password file is readable by group or others: `chmod 600 {path}`"
        );
    }
    Ok(Password(pw))
}

/// One mail waiting for the sender task.
struct Outgoing {
    notice: Notice,
    suppressed: u32,
    since: Instant,
}

/// What the sender task needs; built once at start so a bad CA file or address is a start-up
/// error, not a silent failure at the first crash.
struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    interval: Duration,
    timeout: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    retry_for: Duration,
    stats: Arc<NotifyStats>,
}

/// The handle the watchdog holds. Cheap to clone; the sender task ends when the last clone is
/// dropped (after the mail in hand).
#[derive(Clone)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
    stats: Arc<NotifyStats>,
}

/// Shows whether it is on and its counters; nothing of the config (the password is not kept
/// here anyway, but the transport holding it is never printed).
impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("enabled", &self.enabled())
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

struct Inner {
    tx: mpsc::Sender<Outgoing>,
    limiter: Arc<Mutex<Limiter>>,
    /// Wakes the sender task when a notice was held back, so it can schedule its summary.
    wake: Arc<tokio::sync::Notify>,
}

/// A poisoned lock only means another thread panicked mid-update of plain counters/maps: the
/// data is still usable, and notifications must not die with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

impl Notifier {
    /// A notifier that mails nothing (`enabled = false`), so callers need no Option.
    pub fn disabled() -> Notifier {
        Notifier {
            inner: None,
            stats: Arc::new(NotifyStats::default()),
        }
    }

    /// Read the password and CA file, build the SMTP client and spawn the sender task on the
    /// current tokio runtime. Connects to nothing yet: a server that is down at start is no error.
    pub fn start(cfg: &EmailConfig) -> Result<Notifier, NotifyError> {
        if !cfg.enabled {
            return Ok(Notifier::disabled());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| NotifyError::Setup("must be started inside the tokio runtime".into()))?;
        let setup =
            |what: &str, e: &dyn std::fmt::Display| NotifyError::Setup(format!("{what}: {e}"));
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| setup(&format!("from {:?}", cfg.from), &e))?;
        let to = cfg
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| setup(&format!("to {a:?}"), &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(NotifyError::Setup("no `to` address".into()));
        }
        let tls = if cfg.tls == "none" {
            if !crate::config::is_loopback_host(&cfg.server) {
                return Err(NotifyError::Setup(format!(
                    "tls = \"none\" is only allowed to a loopback server, not {:?}",
                    cfg.server
                )));
            }
            Tls::None
        } else {
            // The certificate must name the server as written in the config (an address is
            // checked against the certificate's IP SANs).
            let mut params = TlsParameters::builder(cfg.server.clone());
            if !cfg.ca_file.is_empty() {
                let ca_err = |message: String| NotifyError::CaFile {
                    path: cfg.ca_file.clone(),
                    message,
                };
                let pem = std::fs::read(&cfg.ca_file).map_err(|e| ca_err(e.to_string()))?;
                // lettre accepts a file with no certificate at all (and then trusts nothing
                // extra): a wrong file must fail here, not as a TLS error at the first crash.
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(ca_err(
                        "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
                    ));
                }
                let cert = Certificate::from_pem(&pem).map_err(|e| ca_err(e.to_string()))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build().map_err(|e| setup("TLS", &e))?;
            if cfg.tls == "tls" {
                Tls::Wrapper(params)
            } else {
                // Required, never Opportunistic: a stripped STARTTLS must not send the
                // password in clear.
                Tls::Required(params)
            }
        };
        let timeout = secs(cfg.timeout_seconds);
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.server.as_str())
                .port(cfg.port)
                .tls(tls)
                .timeout(Some(timeout));
        if !cfg.username.is_empty() {
            let pw = read_password(&cfg.password_file)?;
            builder = builder.credentials(Credentials::new(cfg.username.clone(), pw.0));
        }
        let stats = Arc::new(NotifyStats::default());
        let interval = secs(cfg.min_interval_seconds);
        let sender = Sender {
            transport: builder.build(),
            from,
            to,
            interval,
            timeout,
            retry_initial: secs(cfg.retry_initial_seconds),
            retry_max: secs(cfg.retry_max_seconds),
            retry_for: secs(cfg.retry_for_seconds),
            stats: stats.clone(),
        };
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let limiter = Arc::new(Mutex::new(Limiter::new(interval)));
        let wake = Arc::new(tokio::sync::Notify::new());
        runtime.spawn(sender.run(rx, limiter.clone(), wake.clone()));
        tracing::info!(
            server = %cfg.server,
            port = cfg.port,
            tls = %cfg.tls,
            recipients = cfg.to.len(),
            "email notifications on"
        );
        Ok(Notifier {
            inner: Some(Arc::new(Inner { tx, limiter, wake })),
            stats,
        })
    }

    /// Hand a notice over. Never waits: rate limit and queueing only; the mail is sent (and
    /// retried) by the background task.
    pub fn notify(&self, notice: Notice) -> Outcome {
        let Some(inner) = &self.inner else {
            return Outcome::Disabled;
        };
        let decision = lock(&inner.limiter).admit(&notice, Instant::now());
        match decision {
            Decision::Suppress => {
                NotifyStats::bump(&self.stats.suppressed);
                inner.wake.notify_one();
                tracing::debug!(vm = %notice.vm, kind = notice.kind.key(), "notification held back by the rate limit");
                Outcome::Suppressed
            }
            Decision::Send { suppressed } => {
                let item = Outgoing {
                    notice,
                    suppressed,
                    since: Instant::now(),
                };
                match inner.tx.try_send(item) {
                    Ok(()) => Outcome::Queued,
                    Err(e) => {
                        NotifyStats::bump(&self.stats.dropped);
                        let n = match e {
                            mpsc::error::TrySendError::Full(o)
                            | mpsc::error::TrySendError::Closed(o) => o.notice,
                        };
                        tracing::warn!(vm = %n.vm, kind = n.kind.key(), "notification dropped: the mail queue is full (mail server down?)");
                        Outcome::Dropped
                    }
                }
            }
        }
    }

    pub fn stats(&self) -> Arc<NotifyStats> {
        self.stats.clone()
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }
}

impl Sender {
    async fn run(
        self,
        mut rx: mpsc::Receiver<Outgoing>,
        limiter: Arc<Mutex<Limiter>>,
        wake: Arc<tokio::sync::Notify>,
    ) {
        loop {
            let next = lock(&limiter).next_due();
            // Far enough to mean "no summary pending"; a wake re-reads next_due.
            let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(86400));
            tokio::select! {
                got = rx.recv() => match got {
                    Some(o) => self.deliver(o).await,
                    None => break,
                },
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until.into()) => {
                    let due = lock(&limiter).due(Instant::now());
                    for (notice, suppressed) in due {
                        self.deliver(Outgoing { notice, suppressed, since: Instant::now() }).await;
                    }
                }
            }
        }
    }

    /// Send one mail, retrying with exponential backoff until it is accepted or
    /// `retry_for` has passed since it was queued.
    async fn deliver(&self, o: Outgoing) {
        let n = &o.notice;
        let msg = match mail::message(n, o.suppressed, self.interval, &self.from, &self.to) {
            Ok(m) => m,
            Err(e) => {
                NotifyStats::bump(&self.stats.dropped);
                tracing::error!(vm = %n.vm, error = %e, "cannot build the notification mail");
                return;
            }
        };
        let mut delay = self.retry_initial;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // lettre's timeout is per socket operation; this bounds the whole conversation.
            let result =
                tokio::time::timeout(self.timeout * 2, self.transport.send(msg.clone())).await;
            let error = match result {
                Ok(Ok(_)) => {
                    NotifyStats::bump(&self.stats.sent);
                    tracing::info!(vm = %n.vm, node = %n.node, kind = n.kind.key(), attempt, "notification mail sent");
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", self.timeout * 2),
            };
            NotifyStats::bump(&self.stats.failed);
            *lock(&self.stats.last_error) = Some(error.clone());
            if o.since.elapsed() + delay > self.retry_for {
                NotifyStats::bump(&self.stats.dropped);
                tracing::error!(vm = %n.vm, kind = n.kind.key(), attempt, error, "notification mail failed; giving up on it (retry_for_seconds passed)");
                return;
            }
            tracing::warn!(vm = %n.vm, kind = n.kind.key(), attempt, error, retry_in = ?delay, "notification mail failed; will retry");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.retry_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> EmailConfig {
        let base = "[notify.email]\nenabled = true\nserver = \"127.0.0.1\"\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\n";
        crate::config::Config::from_toml_str(&format!("{base}{extra}"), "t")
            .unwrap()
            .notify
            .email
    }

    #[test]
    fn password_file_keeps_spaces_drops_the_line_end_and_is_never_printed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, " s3cret with spaces \r\n").unwrap();
        let pw = read_password(p.to_str().unwrap()).unwrap();
        assert_eq!(pw.0, " s3cret with spaces ");
        assert!(!format!("{pw:?}").contains("s3cret"));
        std::fs::write(&p, "\n").unwrap();
        let e = read_password(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[tokio::test]
    async fn start_refuses_a_missing_password_file_and_a_bad_ca_file() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let e = Notifier::start(&cfg(&format!(
            "username = \"u\"\npassword_file = \"{}\"\n",
            missing.display()
        )))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("password_file") && e.contains("install -m 600"),
            "{e}"
        );
        let ca = d.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = Notifier::start(&cfg(&format!("ca_file = \"{}\"\n", ca.display())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca_file"), "{e}");
        // No server needed to start: it is only reached when there is something to send.
        let n = Notifier::start(&cfg("")).unwrap();
        assert!(n.enabled());
        assert_eq!(n.stats().snapshot(), StatsSnapshot::default());
    }

    #[test]
    fn start_outside_a_runtime_is_an_error_not_a_panic() {
        let e = Notifier::start(&cfg("")).unwrap_err().to_string();
        assert!(e.contains("tokio"), "{e}");
    }
}
