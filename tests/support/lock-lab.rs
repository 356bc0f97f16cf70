//! The two-host lab of tests/support/lock-lab.sh, for the tests/lock_real_*.rs tests: start it,
//! build a Config whose lvm/lvmlockctl/sanlock commands run inside host h1 or h2, and tear it all
//! down on drop (even when the test panics: closing the script's stdin makes it clean up).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vmwarden::config::Config;

/// `SKIPPED: ...` and `None`, or a failed test when CI demands the real daemons.
pub fn skip<T>(what: &str, why: &str) -> Option<T> {
    if std::env::var("VMWARDEN_REQUIRE_REAL").as_deref() == Ok("1") {
        panic!("VMWARDEN_REQUIRE_REAL=1 but {what} cannot run: {why}");
    }
    // Straight to fd 2, past libtest's output capture: a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {what} because {why} ***\n"
    );
    None
}

pub struct Lab {
    child: Option<Child>,
    pub vars: HashMap<String, String>,
}

impl Lab {
    /// `mode`: "sanlock" or "lvmlockd". `None` when skipped.
    pub fn start(mode: &str) -> Option<Lab> {
        let what = format!("real {mode} lab test");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return skip(&what, "it needs root (mount namespaces, loop devices)");
        }
        let mut tools = vec!["sanlock", "unshare", "nsenter", "cc", "tail"];
        if mode == "lvmlockd" {
            tools.extend(["lvm", "lvmlockd", "lvmlockctl", "losetup"]);
        }
        for t in tools {
            let found = std::env::var("PATH")
                .unwrap_or_default()
                .split(':')
                .chain(["/usr/sbin", "/sbin"])
                .any(|d| Path::new(d).join(t).exists());
            if !found {
                return skip(&what, &format!("`{t}` is not installed (scripts/setup.sh)"));
            }
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lock-lab.sh");
        let mut child = Command::new("bash")
            .args([script, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lock-lab.sh");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lab = Lab {
            child: Some(child),
            vars: HashMap::new(),
        };
        loop {
            match rx.recv_timeout(Duration::from_secs(90)) {
                Ok(l) if l == "READY" => return Some(lab),
                Ok(l) => {
                    if let Some((k, v)) = l.split_once('=') {
                        lab.vars.insert(k.to_string(), v.to_string());
                    }
                }
                Err(e) => {
                    return skip(
                        &what,
                        &format!("the lab did not come up ({e}); see its log above"),
                    )
                }
            }
        }
    }

    pub fn var(&self, k: &str) -> &str {
        self.vars.get(k).map(String::as_str).unwrap_or_default()
    }

    /// Path of a tool wrapper running inside `host`.
    pub fn bin(&self, host: &str, tool: &str) -> String {
        format!("{}/bin-{host}/{tool}", self.var("WORK"))
    }

    /// A Config whose lock commands run inside `host`, plus `extra` TOML.
    pub fn config(&self, host: &str, extra: &str) -> Config {
        Config::from_toml_str(&self.config_text(host, extra), "lab").expect("lab config")
    }

    /// The TOML of [`Lab::config`] (to hand to another process).
    pub fn config_text(&self, host: &str, extra: &str) -> String {
        format!(
            "[lvm]\nlvm = \"{}\"\nlvmlockctl = \"{}\"\n[sanlock]\nsanlock = \"{}\"\n{extra}\n",
            self.bin(host, "lvm"),
            self.bin(host, "lvmlockctl"),
            self.bin(host, "sanlock"),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        drop(child.stdin.take()); // EOF: the script cleans up and exits
        for _ in 0..300 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Stuck: TERM runs the same cleanup trap.
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = child.wait();
    }
}
