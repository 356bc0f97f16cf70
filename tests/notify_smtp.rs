//! Email notifications against a real SMTP server on loopback: Debian's aiosmtpd
//! (tests/support/smtp_sink.py) with STARTTLS and AUTH required, its certificate signed by a
//! private CA this test makes (the client trusts it through `ca_file`). The server is a child
//! process on a free 127.0.0.1 port, killed by its pid when the test ends.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use vmwarden::config::Config;
use vmwarden::notify::{Notice, NoticeKind, Notifier, NotifyStats, Outcome, StatsSnapshot};

const USER: &str = "vmwarden";
const PASSWORD: &str = "right-password-7f3a";

/// Everything any test's notifier logged, to prove the password never appears in it.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(w.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// A python3 that has aiosmtpd: Debian's /usr/bin/python3 first (python3-aiosmtpd installs
/// there), then whatever python3 is on PATH.
fn python() -> Option<String> {
    ["/usr/bin/python3", "python3"].into_iter().find_map(|p| {
        Command::new(p)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .filter(|s| s.success())
            .map(|_| p.to_string())
    })
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A private CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "vmwarden test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// The aiosmtpd child. Dropping it kills that pid (and only it).
struct Smtp {
    child: Child,
    out: PathBuf,
}

impl Smtp {
    fn start(python: &str, dir: &Path, port: u16) -> Smtp {
        let out = dir.join(format!("out-{port}"));
        let stderr = std::fs::File::create(dir.join(format!("smtp-{port}.stderr"))).unwrap();
        let script = support::repo().join("tests/support/smtp_sink.py");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(&out)
            .args([USER, PASSWORD])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // READY on stdout, read on a thread so the wait is bounded.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(30));
        let smtp = Smtp { child, out };
        if ready.as_deref() != Ok("READY") {
            let err = std::fs::read_to_string(dir.join(format!("smtp-{port}.stderr")))
                .unwrap_or_default();
            panic!("smtp_sink.py on port {port} did not get ready ({ready:?}); stderr:\n{err}");
        }
        smtp
    }

    fn files(&self, sub: &str) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.out.join(sub)) else {
            return Vec::new();
        };
        let mut names: Vec<PathBuf> = rd
            .map_while(Result::ok)
            .map(|e| e.path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    fn mails(&self) -> Vec<String> {
        self.files("mail")
    }

    fn mails_about(&self, vm: &str) -> Vec<String> {
        let needle = format!("VM:           {vm}\n");
        self.mails()
            .into_iter()
            .filter(|m| m.contains(&needle))
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        // Child::kill signals exactly this child's recorded pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's environment, or None after a loud skip.
struct Env {
    python: String,
    dir: tempfile::TempDir,
}

fn env(test: &str) -> Option<Env> {
    logs();
    let Some(python) = python() else {
        support::skip_or_fail(
            test,
            "no python3 with aiosmtpd (Debian: apt-get install python3-aiosmtpd; scripts/setup.sh)",
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    Some(Env { python, dir })
}

fn notifier(env: &Env, port: u16, password: &str, extra: &str) -> Notifier {
    let pw = env.dir.path().join(format!("password-{port}"));
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The test CA unless `extra` says otherwise.
    let ca = if extra.contains("ca_file") {
        String::new()
    } else {
        format!(
            "ca_file = \"{}\"\n",
            env.dir.path().join("ca.pem").display()
        )
    };
    let toml = format!(
        "[notify.email]\nenabled = true\nserver = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\n\
         username = \"{USER}\"\npassword_file = \"{}\"\n{ca}\
         from = \"vmwarden <vmwarden@n1.example.org>\"\nto = [\"ops@example.org\", \"oncall@example.org\"]\n\
         timeout_seconds = 10\n{extra}",
        pw.display(),
    );
    let cfg = Config::from_toml_str(&toml, "test").unwrap();
    Notifier::start(&cfg.notify.email).unwrap()
}

fn gave_up(vm: &str) -> Notice {
    Notice {
        vm: vm.into(),
        node: "n1".into(),
        kind: NoticeKind::GaveUp,
        what_happened: "qemu crashed 5 times (killed by signal 9)".into(),
        attempts: 5,
        reset_command: Notice::reset_command_for(vm),
    }
}

fn restarted(vm: &str, attempt: u32) -> Notice {
    Notice {
        vm: vm.into(),
        node: "n1".into(),
        kind: NoticeKind::Restarted {
            attempt,
            in_window: Duration::from_secs(600),
        },
        what_happened: "guest panic".into(),
        attempts: attempt,
        reset_command: Notice::reset_command_for(vm),
    }
}

/// Wait (bounded) until the counters satisfy `ok`.
async fn wait_stats(stats: &NotifyStats, what: &str, ok: impl Fn(&StatsSnapshot) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats.snapshot();
        if ok(&s) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "waited 60 s for {what}; counters {s:?}, last error {:?}",
                stats.last_error()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gave_up_mail_arrives_once_with_vm_node_reason_and_reset_command() {
    let Some(env) = env("gave_up_mail_arrives_once_with_vm_node_reason_and_reset_command") else {
        return;
    };
    let port = free_port();
    let smtp = Smtp::start(&env.python, env.dir.path(), port);
    let n = notifier(&env, port, PASSWORD, "");
    let stats = n.stats();
    assert_eq!(n.notify(gave_up("web1")), Outcome::Queued);
    // The watchdog says it again (e.g. after an agent restart): rate-limited, not re-mailed.
    assert_eq!(n.notify(gave_up("web1")), Outcome::Suppressed);
    // A mail queued after both: once it is in, anything about web1 would be in too (one
    // sender, in order), so "exactly once" is checked without waiting for a non-event.
    assert_eq!(n.notify(gave_up("marker")), Outcome::Queued);
    wait_stats(&stats, "two mails sent", |s| s.sent == 2).await;

    let web1 = smtp.mails_about("web1");
    assert_eq!(
        web1.len(),
        1,
        "web1 mails: {web1:#?} of {:#?}",
        smtp.mails()
    );
    let m = &web1[0];
    for want in [
        "X-Sink-TLS: yes",
        "X-Sink-Auth: vmwarden",
        "X-Sink-Mail-From: vmwarden@n1.example.org",
        "X-Sink-Rcpt-To: ops@example.org,oncall@example.org",
        "Subject: [vmwarden] web1 on n1: gave up restarting after 5 attempts",
        "Node:         n1",
        "Reason:       qemu crashed 5 times (killed by signal 9)",
        "Attempts:     5",
        "vmwarden ctl reset web1",
    ] {
        assert!(m.contains(want), "{want:?} missing from the mail:\n{m}");
    }
    assert_eq!(smtp.mails().len(), 2);
    let s = stats.snapshot();
    assert_eq!((s.failed, s.suppressed, s.dropped), (0, 1, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_counted_and_never_logged() {
    let Some(env) = env("wrong_password_is_refused_counted_and_never_logged") else {
        return;
    };
    const WRONG: &str = "wrong-password-SENTINEL-91c2";
    let port = free_port();
    let smtp = Smtp::start(&env.python, env.dir.path(), port);
    let n = notifier(
        &env,
        port,
        WRONG,
        "retry_initial_seconds = 0.05\nretry_max_seconds = 0.2\nretry_for_seconds = 3\n",
    );
    let stats = n.stats();
    assert_eq!(n.notify(gave_up("authvm")), Outcome::Queued);
    // Retried until retry_for_seconds passed, then given up on: counted as dropped.
    wait_stats(&stats, "the mail given up on", |s| s.dropped == 1).await;
    let s = stats.snapshot();
    assert!(s.failed >= 2, "each refused attempt counts: {s:?}");
    assert_eq!(s.sent, 0, "{s:?}");
    assert!(smtp.mails().is_empty());
    // The server saw the refused AUTH (not a TLS or connection failure).
    assert!(!smtp.files("authfail").is_empty());
    let err = stats.last_error().unwrap_or_default();
    assert!(err.contains("535"), "the server's refusal: {err}");
    assert!(!err.contains(WRONG), "{err}");
    let logs = log_text();
    assert!(
        logs.contains("notification mail failed") && logs.contains("authvm"),
        "the failure is logged:\n{logs}"
    );
    assert!(!logs.contains(WRONG), "the password is in the log:\n{logs}");
    assert!(!format!("{n:?}").contains(WRONG));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused_before_auth() {
    let Some(env) = env("a_certificate_from_an_untrusted_ca_is_refused_before_auth") else {
        return;
    };
    let port = free_port();
    let smtp = Smtp::start(&env.python, env.dir.path(), port);
    // Public roots only: the test CA is unknown, so STARTTLS fails and nothing is sent.
    let n = notifier(
        &env,
        port,
        PASSWORD,
        "ca_file = \"\"\nretry_initial_seconds = 0.05\nretry_max_seconds = 0.1\nretry_for_seconds = 1\n",
    );
    let stats = n.stats();
    assert_eq!(n.notify(gave_up("tlsvm")), Outcome::Queued);
    wait_stats(&stats, "the mail given up on", |s| s.dropped == 1).await;
    let s = stats.snapshot();
    assert!(s.failed >= 1 && s.sent == 0, "{s:?}");
    assert!(smtp.mails().is_empty());
    // Refused at TLS: the password never reached the server.
    assert!(smtp.files("authfail").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_sends_one_mail_and_a_later_summary() {
    let Some(env) = env("a_crash_loop_sends_one_mail_and_a_later_summary") else {
        return;
    };
    let port = free_port();
    let smtp = Smtp::start(&env.python, env.dir.path(), port);

    // Ten restarts within the hour: one mail.
    let n = notifier(&env, port, PASSWORD, "");
    let stats = n.stats();
    let outcomes: Vec<Outcome> = (1..=10).map(|i| n.notify(restarted("loop1", i))).collect();
    assert_eq!(outcomes[0], Outcome::Queued);
    assert!(
        outcomes[1..].iter().all(|o| *o == Outcome::Suppressed),
        "{outcomes:?}"
    );
    assert_eq!(n.notify(gave_up("marker1")), Outcome::Queued);
    wait_stats(&stats, "two mails sent", |s| s.sent == 2).await;
    let loop1 = smtp.mails_about("loop1");
    assert_eq!(loop1.len(), 1, "{loop1:#?}");
    assert!(loop1[0].contains("attempt 1 within 10 min"), "{}", loop1[0]);
    assert_eq!(stats.snapshot().suppressed, 9);

    // With a short interval the held-back notices come as one summary when it ends.
    let n = notifier(&env, port, PASSWORD, "min_interval_seconds = 0.5\n");
    let stats = n.stats();
    for i in 1..=4 {
        n.notify(restarted("loop2", i));
    }
    wait_stats(&stats, "first mail and summary", |s| s.sent == 2).await;
    let loop2 = smtp.mails_about("loop2");
    assert_eq!(loop2.len(), 2, "{loop2:#?}");
    let summary = loop2.iter().find(|m| m.contains("not mailed")).unwrap();
    assert!(
        summary.contains("3 more notice(s)") && summary.contains("attempt 4 within"),
        "the summary is the latest notice with the count: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_never_blocks_and_the_retry_delivers_when_it_comes_up() {
    let Some(env) = env("server_down_never_blocks_and_the_retry_delivers_when_it_comes_up") else {
        return;
    };
    let port = free_port(); // nothing listens there yet
    let n = notifier(
        &env,
        port,
        PASSWORD,
        "retry_initial_seconds = 0.1\nretry_max_seconds = 0.4\n",
    );
    let stats = n.stats();
    let started = std::time::Instant::now();
    // A plain function: it returns before any connection is tried.
    assert_eq!(n.notify(gave_up("downvm")), Outcome::Queued);
    wait_stats(&stats, "failed attempts", |s| s.failed >= 3).await;
    let s = stats.snapshot();
    assert_eq!(s.sent, 0, "{s:?}");
    // Backoff, not a hot loop: attempts are at least retry_initial apart.
    let bound = (started.elapsed().as_secs_f64() / 0.1) as u64 + 2;
    assert!(
        s.failed <= bound,
        "{} attempts in {:?}",
        s.failed,
        started.elapsed()
    );
    let err = stats.last_error().unwrap_or_default();
    assert!(!err.is_empty());

    let smtp = Smtp::start(&env.python, env.dir.path(), port);
    wait_stats(&stats, "the queued mail delivered", |s| s.sent == 1).await;
    let m = smtp.mails_about("downvm");
    assert_eq!(m.len(), 1, "{m:#?}");
    assert!(m[0].contains("vmwarden ctl reset downvm"));
    assert_eq!(stats.snapshot().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let Some(env) = env("a_full_queue_drops_and_counts_instead_of_waiting") else {
        return;
    };
    let port = free_port(); // never up: the sender stays in its retry
    let n = notifier(
        &env,
        port,
        PASSWORD,
        "queue = 1\nretry_initial_seconds = 30\nretry_max_seconds = 30\n",
    );
    let outcomes: Vec<Outcome> = (0..4)
        .map(|i| n.notify(gave_up(&format!("q{i}"))))
        .collect();
    // Whether the sender already took the first one or not, a queue of one holds at most
    // one more: at least two of the four are dropped.
    let dropped = outcomes.iter().filter(|o| **o == Outcome::Dropped).count();
    assert!(dropped >= 2, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Queued | Outcome::Dropped)));
    assert_eq!(n.stats().snapshot().dropped, dropped as u64);
}

#[test]
fn disabled_by_default_and_refuses_plain_smtp_off_loopback() {
    let cfg = Config::default_config().unwrap();
    let n = Notifier::start(&cfg.notify.email).unwrap();
    assert!(!n.enabled());
    assert_eq!(n.notify(gave_up("x")), Outcome::Disabled);
    let e = Config::from_toml_str(
        "[notify.email]\nenabled = true\nserver = \"smtp.example.org\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n",
        "t",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("loopback"), "{e}");
}
