//! Shared test helpers: fixtures, golden files, rendering one collector's metrics, and the real
//! sanlock lab (a daemon in its own mount namespace, see lab-host.sh).
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmwarden::metrics::Registry;

mod executable;
pub use executable::executable;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> String {
    let p = repo().join("tests/fixtures").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// Compare `actual` with the golden file; `UPDATE_GOLDEN=1` rewrites it instead.
pub fn golden(rel: &str, actual: &str) {
    let p = repo().join("tests/fixtures").join(rel);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&p, actual).unwrap();
        eprintln!("updated golden file {}", p.display());
        return;
    }
    let expected = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "golden file {}: {e} (create it with UPDATE_GOLDEN=1)",
            p.display()
        )
    });
    if expected != actual {
        panic!(
            "{} differs from the rendered output (UPDATE_GOLDEN=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
            p.display()
        );
    }
}

/// Metrics text with the samples of each family sorted, so a golden file does not depend on the
/// order an encoder pushes its series in; families and comments keep their order.
pub fn sorted_metrics(text: &str) -> String {
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            run.sort_unstable();
            out.append(&mut run);
            out.push(line);
        } else {
            run.push(line);
        }
    }
    run.sort_unstable();
    out.append(&mut run);
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// OpenMetrics text of one encoder alone.
pub fn render(encode: impl FnOnce(&mut Registry)) -> String {
    let mut reg = Registry::default();
    encode(&mut reg);
    reg.to_openmetrics()
}

/// Sample lines (no comments) of an OpenMetrics text.
pub fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// Write an executable script (a stand-in command for `*_mock_*` tests).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    executable(&dir.join(name), &format!("#!/bin/sh\n{body}"))
}

// ---------------------------------------------------------------------------------------------
// Real sanlock lab

/// Whether a test that needs real components must fail (CI) or may skip when they cannot run.
pub fn require_real() -> bool {
    std::env::var("VMWARDEN_REQUIRE_REAL").is_ok_and(|v| v == "1")
}

/// Skip (loudly) or fail, per VMWARDEN_REQUIRE_REAL.
pub fn skip_or_fail(test: &str, why: &str) {
    if require_real() {
        panic!("{test}: the real component cannot run and VMWARDEN_REQUIRE_REAL=1: {why}");
    }
    // Straight to the process's stderr: libtest captures eprintln! of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {test} because {why} (set VMWARDEN_REQUIRE_REAL=1 to make this a failure) ***\n"
    );
}

/// Whether `prog` is on PATH (an executable file in one of its directories).
pub fn have(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(prog))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The programs the two-node lab (scripts/lab.sh) runs in its nodes.
pub const LAB_PROGRAMS: &[&str] = &[
    "ip",
    "libvirtd",
    "virtlogd",
    "virsh",
    "qemu-system-x86_64",
    "sanlock",
];

/// How every two-node lab test begins: whether the lab can run here, with `extra` programs
/// besides [`LAB_PROGRAMS`]; when it cannot, the test is skipped — or fails under
/// VMWARDEN_REQUIRE_REAL=1 — with the reason.
pub fn lab_ready(test: &str, extra: &[&str]) -> bool {
    if let Some(why) = lab_unavailable() {
        skip_or_fail(test, &why);
        return false;
    }
    for p in LAB_PROGRAMS.iter().chain(extra) {
        if !have(p) {
            skip_or_fail(test, &format!("`{p}` is not installed (scripts/setup.sh)"));
            return false;
        }
    }
    true
}

/// Why the real sanlock lab cannot run here, if it cannot.
pub fn lab_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("it needs root (mount namespaces)".into());
    }
    for p in ["sanlock", "unshare", "nsenter", "cc", "bash"] {
        if !have(p) {
            return Some(format!(
                "`{p}` is not installed (scripts/setup.sh installs it)"
            ));
        }
    }
    None
}

/// A lab work directory that cleans up after itself, with the shim built into it.
pub struct LabDir {
    pub dir: tempfile::TempDir,
    pub shim: PathBuf,
}

impl LabDir {
    pub fn new() -> Result<LabDir, String> {
        let dir = tempfile::Builder::new()
            .prefix("vmwarden-lab-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let shim = dir.path().join("libsetrlimit_shim.so");
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&shim)
            .arg(repo().join("tests/support/setrlimit_shim.c"))
            .arg("-ldl")
            .output()
            .map_err(|e| format!("cc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the setrlimit shim failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(LabDir { dir, shim })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A lab host: real sanlock daemon in a private mount namespace. Dropping it stops the daemon
/// and everything else in the namespace (lab-host.sh's cleanup), also when the test panics.
pub struct LabHost {
    pub name: String,
    child: Child,
    dir: PathBuf,
}

impl LabHost {
    pub fn start(lab: &LabDir, name: &str) -> Result<LabHost, String> {
        Self::start_with(lab, name, &[])
    }

    /// With lab-host.sh options (`--lvmlockd`, `--mapper NAME=TARGET`).
    pub fn start_with(lab: &LabDir, name: &str, extra: &[&str]) -> Result<LabHost, String> {
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "bash"])
            .arg(repo().join("tests/support/lab-host.sh"))
            .arg(lab.path())
            .arg(name)
            .arg(&lab.shim)
            .arg(std::process::id().to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(lab.path().join(format!("{name}.host.log")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let mut host = LabHost {
            name: name.to_string(),
            child,
            dir: lab.path().to_path_buf(),
        };
        let ready = lab.path().join(format!("{name}.ready"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ready.exists() {
                return Ok(host);
            }
            if let Ok(Some(st)) = host.child.try_wait() {
                let log = std::fs::read_to_string(lab.path().join(format!("{name}.host.log")))
                    .unwrap_or_default();
                return Err(format!("lab host {name} exited ({st}): {}", log.trim()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("lab host {name} not ready within 30 s"))
    }

    /// The pid of a daemon of this host (`sanlock` or `lvmlockd`), from lab-host.sh's pid file.
    pub fn daemon_pid(&self, daemon: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(format!("{}.{daemon}.pid", self.name)))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// A command inside this host's mount namespace.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.child.id().to_string())
            .arg("-m")
            .arg(prog);
        c
    }

    /// Run a command in the namespace; its stdout, or an error with everything it said.
    pub fn run(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        let out = self
            .cmd(prog)
            .args(args)
            .output()
            .map_err(|e| format!("{prog}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "{prog} {args:?} on {}: {}\n{text}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A lease holder: `sanlock client command -r RES -c /bin/sleep 3600` in the namespace.
    /// It is killed with the namespace when the host drops.
    pub fn hold(&self, resource: &str) -> Result<(), String> {
        self.cmd("sanlock")
            .args([
                "client",
                "command",
                "-r",
                resource,
                "-c",
                "/bin/sleep",
                "3600",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("sanlock client command: {e}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.sanlock.log", self.name)))
            .unwrap_or_default()
    }
}

impl Drop for LabHost {
    fn drop(&mut self) {
        // TERM lets lab-host.sh shut sanlock down and kill everything in the namespace.
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // lab-host.sh did not finish: kill the daemons themselves so nothing outlives the test.
        for d in ["lvmlockd", "sanlock"] {
            if let Some(pid) = self.daemon_pid(d) {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns Some or the time is up.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
