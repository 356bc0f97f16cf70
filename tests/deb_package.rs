//! The Debian package for real, on this machine: `make deb` builds it (in this test's target
//! directory: the release build once, a repack on later runs), `dpkg -i` installs it,
//! `/usr/bin/vmwarden --version` and `systemd-analyze verify` run on what was installed, the
//! libvirt hook is created only where none exists and an administrator's hook is left alone,
//! nothing is started, `dpkg -r` leaves only the conffile, and `dpkg --purge` removes that too.
//!
//! Safety on a shared machine:
//! - it refuses to run when vmwarden is installed (or its files exist) other than by an earlier
//!   run of this test (marker `/run/vmwarden-deb-test.installed`), so it never replaces or
//!   removes an operator's vmwarden;
//! - every dpkg call runs in a private mount namespace with a tmpfs over /etc/libvirt/hooks, so
//!   the host's libvirtd (which other tests use) never sees a hook come and go;
//! - nothing can start the service: no systemd runs here (PID 1 is the sandbox's init), the
//!   package neither enables nor starts the unit, and the test checks no vmwarden process ran.
//!
//! Needs root, dpkg, cargo-deb (scripts/setup.sh), systemd-analyze, unshare and nsenter;
//! without them it skips, or fails under VMWARDEN_REQUIRE_REAL=1 (`make test`).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{have, repo, skip_or_fail};

const TEST: &str = "deb_package";
const MARKER: &str = "/run/vmwarden-deb-test.installed";
const HOOKS: &str = "/etc/libvirt/hooks";
const UNIT: &str = "/lib/systemd/system/vmwarden.service";
const CONFFILE: &str = "/etc/vmwarden/vmwarden.toml";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// dpkg's status word for vmwarden: "installed", "config-files", or "" (not known).
fn status() -> String {
    let o = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "vmwarden"]));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Why this machine cannot run the test, if it cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("it needs root (dpkg -i)".into());
    }
    for p in [
        "dpkg",
        "dpkg-query",
        "dpkg-deb",
        "systemd-analyze",
        "unshare",
        "nsenter",
        "mount",
        "make",
    ] {
        if !have(p) {
            return Some(format!("`{p}` is not installed"));
        }
    }
    let deb = Command::new(cargo()).args(["deb", "--version"]).output();
    if !deb.is_ok_and(|o| o.status.success()) {
        return Some("cargo-deb is not installed (scripts/setup.sh installs it)".into());
    }
    if !Path::new(HOOKS).is_dir() {
        return Some(format!(
            "{HOOKS} does not exist (libvirt-daemon-system not installed)"
        ));
    }
    None
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// A private mount namespace (a `sleep` holding it) with a tmpfs over /etc/libvirt/hooks.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn new() -> Namespace {
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let ns = Namespace { holder };
        // Wait until the child has entered its namespace (its mnt link differs from ours).
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{}/ns/mnt", ns.pid())).is_ok_and(|l| l == ours)
            || std::fs::read_to_string(format!("/proc/{}/comm", ns.pid()))
                .is_ok_and(|c| c.trim() != "sleep")
        {
            assert!(Instant::now() < deadline, "unshare did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = ns.run(&["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", HOOKS]);
        assert!(o.status.success(), "tmpfs over {HOOKS}: {}", text(&o));
        ns
    }

    fn pid(&self) -> u32 {
        self.holder.id()
    }

    fn run(&self, argv: &[&str]) -> Output {
        run(Command::new("nsenter")
            .arg("-t")
            .arg(self.pid().to_string())
            .arg("-m")
            .arg("--")
            .args(argv))
    }

    /// A path as seen inside the namespace.
    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.pid()))
    }

    /// dpkg with its arguments, retried while another dpkg/apt holds the lock.
    fn dpkg(&self, args: &[&str]) -> Output {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut argv = vec!["dpkg"];
            argv.extend_from_slice(args);
            let o = self.run(&argv);
            let t = text(&o);
            if o.status.success() || !t.contains("lock") || Instant::now() > deadline {
                return o;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Our own child, by pid.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Purges the package if the test installed it and did not finish (a failed assertion).
struct Cleanup<'a>(&'a Namespace);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if Path::new(MARKER).exists() && !status().is_empty() {
            let o = self.0.dpkg(&["--purge", "vmwarden"]);
            eprintln!("deb_package: cleanup purge: {}", text(&o));
        }
        let _ = std::fs::remove_file(MARKER);
    }
}

/// Every process whose executable is the installed binary.
fn installed_processes() -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|x| x.to_string_lossy().starts_with("/usr/bin/vmwarden"))
        {
            out.push(pid);
        }
    }
    out
}

/// The target directory this test was built in (`…/debug/vmwarden` → `…`), so `make deb` reuses
/// its release build from one run to the next.
fn target_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_vmwarden"));
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir of the test binary")
        .to_path_buf()
}

/// Build the package with `make deb` (the release build the first time in a target directory,
/// then a repack); its path.
fn build() -> PathBuf {
    let started = Instant::now();
    let target = target_dir();
    let o = run(Command::new("make")
        .current_dir(repo())
        .arg("deb")
        .arg(format!("CARGO={}", cargo()))
        .env("CARGO_TARGET_DIR", &target));
    assert!(o.status.success(), "make deb failed:\n{}", text(&o));
    let want = format!("vmwarden_{}-", env!("CARGO_PKG_VERSION"));
    let deb = std::fs::read_dir(target.join("debian"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&want))
                && p.extension().is_some_and(|x| x == "deb")
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("make deb made no .deb");
    eprintln!(
        "deb_package: built {} in {:?}",
        deb.display(),
        started.elapsed()
    );
    deb
}

/// Files of the repository directory `dir` (relative paths), recursively.
fn repo_files(dir: &str) -> Vec<PathBuf> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let base = repo().join(dir);
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out
}

fn listed_files() -> Vec<String> {
    let o = run(Command::new("dpkg-query").args(["-L", "vmwarden"]));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(String::from)
        .collect()
}

#[test]
fn install_verify_remove_purge() {
    if let Some(why) = unavailable() {
        return skip_or_fail(TEST, &why);
    }
    // Never disturb a vmwarden installed outside this test.
    let st = status();
    if !st.is_empty() && !Path::new(MARKER).exists() {
        return skip_or_fail(
            TEST,
            &format!("vmwarden is installed on this machine (dpkg status {st:?}); this test would replace and remove it — run it where vmwarden is not installed"),
        );
    }
    if st.is_empty() {
        for p in [
            "/usr/bin/vmwarden",
            "/etc/vmwarden",
            UNIT,
            "/usr/share/vmwarden",
        ] {
            if Path::new(p).exists() {
                return skip_or_fail(
                    TEST,
                    &format!("{p} exists but no vmwarden package is installed: it is someone's; this test would overwrite it"),
                );
            }
        }
    }
    let deb = build();
    let deb_s = deb.to_str().unwrap();

    let ns = Namespace::new();
    let _cleanup = Cleanup(&ns);
    if !st.is_empty() {
        // Left over by an earlier run of this test that died: start from nothing.
        let o = ns.dpkg(&["--purge", "vmwarden"]);
        assert!(
            o.status.success(),
            "purge of the earlier test's package: {}",
            text(&o)
        );
    }
    let hook = ns.path(&format!("{HOOKS}/qemu"));
    assert!(
        std::fs::symlink_metadata(&hook).is_err(),
        "the namespace's hooks dir is not empty"
    );

    let contents = run(Command::new("dpkg-deb").args(["--contents", deb_s]));
    assert!(
        text(&contents).contains("./usr/bin/vmwarden\n"),
        "{}",
        text(&contents)
    );

    // --- An administrator's hook is never replaced, nor removed. -------------------------
    let admin = "#!/bin/sh\n# the admin's own hook\nexit 0\n";
    std::fs::write(&hook, admin).unwrap();
    std::fs::write(MARKER, deb_s).unwrap();
    let o = ns.dpkg(&["-i", deb_s]);
    assert!(o.status.success(), "dpkg -i: {}", text(&o));
    assert!(
        text(&o).contains("is not vmwarden's: left alone"),
        "postinst should say it left the admin's hook: {}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap(),
        admin,
        "the admin's hook was changed"
    );
    let o = ns.dpkg(&["-r", "vmwarden"]);
    assert!(o.status.success(), "dpkg -r: {}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap(),
        admin,
        "the admin's hook was removed"
    );
    std::fs::remove_file(&hook).unwrap();

    // --- Fresh install: the hook offered, nothing started. --------------------------------
    let pre_existing: BTreeSet<String> = [
        "/usr",
        "/usr/bin",
        "/usr/share",
        "/usr/share/doc",
        "/etc",
        "/lib",
        "/lib/systemd",
        "/lib/systemd/system",
    ]
    .iter()
    .filter(|p| Path::new(p).exists())
    .map(|p| p.to_string())
    .collect();
    let o = ns.dpkg(&["-i", deb_s]);
    assert!(o.status.success(), "dpkg -i: {}", text(&o));
    assert_eq!(status(), "installed");
    let files = listed_files();
    eprintln!("deb_package: {} paths installed", files.len());

    let v = run(Command::new("/usr/bin/vmwarden").arg("--version"));
    assert!(v.status.success(), "{}", text(&v));
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("vmwarden {}", env!("CARGO_PKG_VERSION"))
    );
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    assert!(
        verify.status.success() && !text(&verify).contains("vmwarden.service"),
        "systemd-analyze verify {UNIT}:\n{}",
        text(&verify)
    );
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/vmwarden run --config /etc/vmwarden/vmwarden.toml"));
    assert_eq!(
        std::fs::read_to_string(repo().join("systemd/vmwarden.service")).unwrap(),
        unit,
        "the installed unit is systemd/vmwarden.service"
    );

    // The conffile: the commented defaults, registered as a conffile, loading as the defaults.
    assert_eq!(
        std::fs::read_to_string(CONFFILE).unwrap(),
        std::fs::read_to_string(repo().join("debian/vmwarden.toml")).unwrap()
    );
    let conff = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "vmwarden"]));
    let conffiles: Vec<String> = String::from_utf8_lossy(&conff.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert_eq!(conffiles, [CONFFILE], "conffiles");
    let check = run(Command::new("/usr/bin/vmwarden")
        .args(["collect", "--config", CONFFILE, "--format", "prometheus"])
        .env("PATH", "/nonexistent"));
    assert!(
        check.status.success(),
        "the installed binary with the installed config: {}",
        text(&check)
    );

    // Alerts, dashboards (whatever the tree has) and docs under /usr/share.
    for (dir, dest) in [
        ("alerts", "/usr/share/vmwarden/alerts"),
        ("dashboards", "/usr/share/vmwarden/dashboards"),
        ("docs", "/usr/share/doc/vmwarden"),
    ] {
        for f in repo_files(dir) {
            let installed = Path::new(dest).join(&f);
            assert_eq!(
                std::fs::read(&installed)
                    .unwrap_or_else(|e| panic!("{}: {e}", installed.display())),
                std::fs::read(repo().join(dir).join(&f)).unwrap(),
                "{} differs from {dir}/{}",
                installed.display(),
                f.display()
            );
        }
    }
    assert!(!repo_files("alerts").is_empty(), "no alerts shipped");

    // The hook: created, because none existed.
    assert_eq!(
        std::fs::read_link(&hook).expect("postinst made no hook"),
        Path::new("/usr/bin/vmwarden")
    );
    // Nothing started.
    assert_eq!(
        installed_processes(),
        Vec::<u32>::new(),
        "a vmwarden process runs after install"
    );

    // --- Remove: only the conffile stays. ------------------------------------------------
    let o = ns.dpkg(&["-r", "vmwarden"]);
    assert!(o.status.success(), "dpkg -r: {}", text(&o));
    assert_eq!(status(), "config-files");
    assert!(
        std::fs::symlink_metadata(&hook).is_err(),
        "the hook symlink outlived the package"
    );
    let mut left = Vec::new();
    for f in &files {
        let p = Path::new(f);
        if f == CONFFILE || f == "/etc/vmwarden" || pre_existing.contains(f.as_str()) {
            continue;
        }
        if p.is_dir() {
            // A directory another package also owns may stay.
            let owners = run(Command::new("dpkg-query").args(["-S", f]));
            if owners.status.success() {
                continue;
            }
        }
        if std::fs::symlink_metadata(p).is_ok() {
            left.push(f.clone());
        }
    }
    assert!(left.is_empty(), "left after dpkg -r: {left:?}");
    assert!(
        Path::new(CONFFILE).exists(),
        "the conffile must stay after dpkg -r"
    );
    let after = listed_files();
    assert!(
        after
            .iter()
            .all(|f| f == CONFFILE || f == "/etc/vmwarden" || f == "/etc"),
        "dpkg -L after remove lists more than the conffile: {after:?}"
    );

    // --- Purge: the conffile goes too. ---------------------------------------------------
    let o = ns.dpkg(&["--purge", "vmwarden"]);
    assert!(o.status.success(), "dpkg --purge: {}", text(&o));
    assert_eq!(status(), "");
    for p in [
        CONFFILE,
        "/etc/vmwarden",
        "/usr/bin/vmwarden",
        UNIT,
        "/usr/share/vmwarden",
    ] {
        assert!(
            std::fs::symlink_metadata(p).is_err(),
            "{p} left after purge"
        );
    }
    assert_eq!(installed_processes(), Vec::<u32>::new());
    let _ = std::fs::remove_file(MARKER);
}
