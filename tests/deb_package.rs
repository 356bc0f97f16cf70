//! The Debian package for real, on this machine: built by `make deb` from the binary this
//! `cargo test` already built (no release build), installed with `dpkg -i`, checked (the binary's
//! `--version`, `systemd-analyze verify` of the installed unit, the conffile and dpkg's record of
//! it, the libvirt hook postinst makes only where none exists), removed (`dpkg -r`: everything but
//! the conffile gone, the hook symlink too) and purged (`dpkg --purge`: the conffile and
//! /etc/vmwarden gone, dpkg forgets the package). docs/packaging.md § The test.
//!
//! The build: `make deb` runs with CARGO_TARGET_DIR set to a temporary directory whose `release/`
//! holds a copy of CARGO_BIN_EXE_vmwarden (the dev build cargo test made) and with
//! `DEB_ARGS=--no-build --fast --output DIR`. cargo-deb resolves Cargo.toml's `target/release/...`
//! assets in that directory, and the recipe stages `release/vmwarden-share` (alerts/, dashboards/)
//! there exactly as for a release package; cargo-deb strips the copy. Nothing is written to the
//! repository or to cargo's target directory. (`cargo deb --profile dev` would also find the dev
//! binary, under `debug/`, but cargo-deb 3.8 warns that it will become a hard error.)
//!
//! Safety on a shared machine:
//! - it fails, and touches nothing, when a vmwarden package or any of its paths (/usr/bin/vmwarden,
//!   /etc/vmwarden, ...) exists that this test did not install: an administrator's vmwarden is
//!   never replaced or removed. A package an earlier run of this test left behind (killed before
//!   its cleanup ran) is recognised by the marker `/run/vmwarden-deb-test.md5` (the md5sum of the
//!   binary it installed, equal to /usr/bin/vmwarden's while that exists) and purged first;
//! - every dpkg call runs in a private mount namespace with a tmpfs over /etc/libvirt/hooks, so
//!   the hook symlink postinst makes exists only there, for the length of the test: the host's
//!   libvirtd (started by scripts/test-services.sh, used by other tests and other users) never sees
//!   a hook appear or disappear, and the host's own hook, if any, is never touched (both checked);
//! - a guard purges the package whatever happens after the first `dpkg -i` (a failed assertion
//!   unwinds through it);
//! - nothing starts the service: PID 1 is not systemd here, and the package neither enables nor
//!   starts the unit (checked: no enablement link, no vmwarden process).
//!
//! Needs root, dpkg, cargo-deb (scripts/setup.sh), systemd-analyze, unshare, nsenter, make, an
//! /etc/libvirt/hooks directory (libvirt-daemon-system) and the package's dependencies (sanlock:
//! setup.sh installs it). Without them it skips, or fails under VMWARDEN_REQUIRE_REAL=1
//! (`make test`, `make deb-test`).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{have, repo, skip_or_fail};
use vmwarden::exec::{Cmd, ExecError, Output};

const TEST: &str = "deb_package";
const PKG: &str = "vmwarden";
const BIN: &str = "/usr/bin/vmwarden";
const CONFFILE: &str = "/etc/vmwarden/vmwarden.toml";
const CONFDIR: &str = "/etc/vmwarden";
const HOOKS: &str = "/etc/libvirt/hooks";
const HOOK: &str = "/etc/libvirt/hooks/qemu";
/// Written before each `dpkg -i` (the md5sum of the binary in the package about to be installed;
/// cargo-deb writes no md5sums control file), removed once the test's package is purged: proof
/// that an installed vmwarden is this test's leftover. /run is a tmpfs, so a reboot forgets it.
const MARKER: &str = "/run/vmwarden-deb-test.md5";
/// Paths the package installs that nothing else should have made: if one exists while no
/// vmwarden package is known to dpkg, it is someone's, and installing would overwrite it.
const OWN_PATHS: &[&str] = &[
    BIN,
    CONFDIR,
    "/usr/lib/systemd/system/vmwarden.service",
    "/lib/systemd/system/vmwarden.service",
    "/etc/systemd/system/vmwarden.service",
    "/usr/share/vmwarden",
    "/usr/share/doc/vmwarden",
];

const SHORT: Duration = Duration::from_secs(60);
const DPKG: Duration = Duration::from_secs(300);
/// `make deb` without a build: cargo metadata, strip, dpkg-shlibdeps, compression.
const PACKAGING: Duration = Duration::from_secs(600);

// --- running commands (argv only, with a timeout: vmwarden::exec) ------------------------------

fn try_exec(cmd: &Cmd, timeout: Duration) -> Result<Output, ExecError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ExecError::Io {
            command: cmd.display(),
            source: e,
        })?;
    rt.block_on(cmd.run(timeout))
}

fn exec(cmd: Cmd, timeout: Duration) -> Output {
    try_exec(&cmd, timeout).unwrap_or_else(|e| panic!("{TEST}: {e}"))
}

fn run(argv: &[&str]) -> Output {
    let (program, args) = argv.split_first().expect("a command line");
    exec(Cmd::new(*program).args(args.iter().copied()), SHORT)
}

fn text(o: &Output) -> String {
    format!("{}{}", o.stdout, o.stderr)
}

/// Run, assert success, return stdout.
fn ok(argv: &[&str]) -> String {
    let o = run(argv);
    assert!(
        o.success(),
        "{TEST}: `{}` failed ({:?}):\n{}",
        argv.join(" "),
        o.status,
        text(&o)
    );
    o.stdout
}

// --- dpkg's view ---------------------------------------------------------------------------------

/// dpkg's status word for `pkg`: "installed", "config-files", ... or "" (dpkg does not know it).
fn status_of(pkg: &str) -> String {
    match try_exec(
        &Cmd::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", pkg]),
        SHORT,
    ) {
        Ok(o) if o.success() => o.stdout.trim().to_string(),
        _ => String::new(),
    }
}

fn status() -> String {
    status_of(PKG)
}

/// `dpkg -L vmwarden`: every path dpkg records for the package.
fn listed() -> Vec<String> {
    ok(&["dpkg-query", "-L", PKG])
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/') && *l != "/.")
        .map(String::from)
        .collect()
}

/// The paths of a conffiles field (`${Conffiles}`: " /path md5" per line).
fn conffiles() -> Vec<String> {
    ok(&["dpkg-query", "-W", "-f=${Conffiles}", PKG])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// The package names of a Depends field that dpkg does not have installed (alternatives: one
/// installed is enough; versions are left to dpkg -i, which names them if they do not fit).
fn missing_dependencies(depends: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for dep in depends.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let names: Vec<&str> = dep
            .split('|')
            .filter_map(|alt| alt.split_whitespace().next())
            .map(|n| n.split(':').next().unwrap_or(n))
            .collect();
        if !names.iter().any(|n| status_of(n) == "installed") {
            missing.push(dep.to_string());
        }
    }
    missing
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
    match try_exec(&Cmd::new(cargo()).args(["deb", "--version"]), SHORT) {
        Ok(o) if o.success() => {}
        _ => return Some("cargo-deb is not installed (scripts/setup.sh installs it)".into()),
    }
    if !Path::new(HOOKS).is_dir() {
        return Some(format!(
            "{HOOKS} does not exist (libvirt-daemon-system is not installed: scripts/setup.sh)"
        ));
    }
    None
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

// --- the private mount namespace for dpkg ----------------------------------------------------------

/// A private mount namespace, held by a `sleep` (our child, killed by its pid on drop), with a
/// tmpfs over /etc/libvirt/hooks: postinst's and postrm's hook handling happens there only.
struct Namespace {
    pid: u32,
}

impl Namespace {
    fn new() -> Namespace {
        let pid = Cmd::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sleep", "600"])
            .spawn_detached()
            .unwrap_or_else(|e| panic!("{TEST}: unshare: {e}"));
        let ns = Namespace { pid };
        // Until the child has entered its namespace and become `sleep`.
        let ours = std::fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ns.is_ours_entered(&ours) {
            assert!(
                Instant::now() < deadline,
                "{TEST}: unshare did not enter a mount namespace"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ns.run_ok(&["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", HOOKS]);
        ns
    }

    fn is_ours_entered(&self, host_ns: &Path) -> bool {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", self.pid)).ok();
        comm.trim() == "sleep" && ns.is_some_and(|n| n != host_ns)
    }

    fn exec(&self, argv: &[&str], timeout: Duration) -> Output {
        exec(
            Cmd::new("nsenter")
                .args(["-t", &self.pid.to_string(), "-m", "--"])
                .args(argv.iter().copied()),
            timeout,
        )
    }

    fn run_ok(&self, argv: &[&str]) {
        let o = self.exec(argv, SHORT);
        assert!(
            o.success(),
            "{TEST}: `{}` in the namespace: {}",
            argv.join(" "),
            text(&o)
        );
    }

    /// A path as the namespace sees it.
    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.pid))
    }

    /// dpkg with `args`, retried while another dpkg or apt holds dpkg's lock (one user at a time).
    fn dpkg(&self, args: &[&str]) -> Output {
        let deadline = Instant::now() + DPKG;
        let mut argv = vec!["dpkg"];
        argv.extend_from_slice(args);
        loop {
            let o = self.exec(&argv, DPKG);
            let locked = !o.success() && text(&o).contains("lock");
            if !locked || Instant::now() > deadline {
                return o;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn dpkg_ok(&self, args: &[&str]) -> String {
        let o = self.dpkg(args);
        assert!(
            o.success(),
            "{TEST}: dpkg {} failed ({:?}):\n{}",
            args.join(" "),
            o.status,
            text(&o)
        );
        text(&o)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Our own child, by its recorded pid, only while it still is that `sleep` in its own
        // namespace (the tmpfs goes with it); spawn_detached's thread reaps it.
        if let Ok(host_ns) = std::fs::read_link("/proc/self/ns/mnt") {
            if self.is_ours_entered(&host_ns) {
                if let Ok(pid) = i32::try_from(self.pid) {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Purges the package when dropped if it is (still) installed: the test's cleanup, also when an
/// assertion fails. Declared after the namespace, so it is dropped before it.
struct Installed<'a> {
    ns: &'a Namespace,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        use std::io::Write;
        let mut err = std::io::stderr();
        if !status().is_empty() {
            // No panics here (this may run while a failed assertion unwinds).
            let argv = Cmd::new("nsenter")
                .args(["-t", &self.ns.pid.to_string(), "-m", "--"])
                .args(["dpkg", "--purge", PKG]);
            match try_exec(&argv, DPKG) {
                Ok(o) => {
                    let _ = writeln!(err, "{TEST}: cleanup: dpkg --purge {PKG}: {}", text(&o));
                }
                Err(e) => {
                    let _ = writeln!(err, "{TEST}: cleanup: dpkg --purge {PKG}: {e}");
                }
            }
        }
        if status().is_empty() {
            let _ = std::fs::remove_file(MARKER);
        } else {
            let _ = writeln!(
                err,
                "{TEST}: CLEANUP FAILED: the test's {PKG} package is still installed (marker {MARKER} kept: the next run purges it)"
            );
        }
    }
}

// --- the host's state that must not change ------------------------------------------------------

/// What the host's /etc/libvirt/hooks holds: (name, symlink target or file content).
fn host_hooks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(HOOKS) {
        for e in rd.flatten() {
            let p = e.path();
            let what = match std::fs::read_link(&p) {
                Ok(t) => format!("symlink -> {}", t.display()),
                Err(_) => match std::fs::read(&p) {
                    Ok(b) => format!("{} bytes: {}", b.len(), String::from_utf8_lossy(&b)),
                    Err(_) => "directory or unreadable".into(),
                },
            };
            out.push((e.file_name().to_string_lossy().into_owned(), what));
        }
    }
    out.sort();
    out
}

/// The host's libvirtd, if one runs: its pid (the pid file test-services.sh starts it with, or
/// systemd's), checked to be a live libvirtd.
fn libvirtd_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string("/run/libvirtd.pid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "libvirtd").then_some(pid)
}

/// Every process whose executable is the installed binary.
fn installed_processes() -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|x| x.to_string_lossy().starts_with(BIN))
            {
                out.push(pid);
            }
        }
    }
    out
}

/// md5sum of a file, hex.
fn md5(path: &str) -> String {
    ok(&["md5sum", "--", path])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn exists(p: impl AsRef<Path>) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

// --- building the package ----------------------------------------------------------------------------

/// `make deb` on the dev binary in a temporary target directory; the .deb's path.
fn build(tmp: &Path) -> PathBuf {
    let started = Instant::now();
    let target = tmp.join("target");
    let out = tmp.join("out");
    std::fs::create_dir_all(target.join("release")).expect("temp target dir");
    std::fs::create_dir_all(&out).expect("temp output dir");
    // A copy: cargo-deb strips what it packages, and never the binary cargo test runs.
    std::fs::copy(
        env!("CARGO_BIN_EXE_vmwarden"),
        target.join("release/vmwarden"),
    )
    .expect("copy of the test's vmwarden binary");
    let o = exec(
        Cmd::new("make")
            .args(["-C", &repo().to_string_lossy(), "deb"])
            .arg(format!("CARGO={}", cargo()))
            .arg(format!("CARGO_TARGET_DIR={}", target.display()))
            // --fast: gzip-level compression, ~5x faster than xz here; what is checked is the
            // package's contents and scripts, not its compression.
            .arg(format!(
                "DEB_ARGS=--no-build --fast --output {}",
                out.display()
            ))
            // Not the outer make's flags or variables (`make test` runs cargo test).
            .env("MAKEFLAGS", "")
            .env("MFLAGS", ""),
        PACKAGING,
    );
    assert!(o.success(), "{TEST}: make deb failed:\n{}", text(&o));
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("output dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{TEST}: make deb wrote {debs:?}");
    let deb = debs[0].clone();
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    assert!(
        name.starts_with(&format!("{PKG}_{}-1_", env!("CARGO_PKG_VERSION"))),
        "{TEST}: package file {name}"
    );
    eprintln!(
        "{TEST}: built {} ({} bytes) in {:.1?}",
        deb.display(),
        std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0),
        started.elapsed()
    );
    deb
}

/// Paths in the package (`dpkg-deb --contents`, `./usr/bin/` → `/usr/bin`).
fn package_paths(deb: &str) -> Vec<String> {
    ok(&["dpkg-deb", "--contents", deb])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect()
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
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_path_buf());
            }
        }
    }
    let base = repo().join(dir);
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out
}

// --- the checks ---------------------------------------------------------------------------------------

/// `systemd-analyze verify` on the installed unit, made non-vacuous: the same command on two
/// broken copies must report them (so a clean result means the unit was parsed and passed).
fn verify_unit(unit: &str, tmp: &Path) {
    // --man=no: no man pages to look up (the unit documents itself with file:// URLs);
    // --recursive-errors=no: only this unit's own errors fail it, not those of the units it
    // names (libvirtd.service, drbd.service, ... which may be absent or differ on a node).
    let verify = |path: &str| {
        run(&[
            "systemd-analyze",
            "verify",
            "--man=no",
            "--recursive-errors=no",
            path,
        ])
    };
    let o = verify(unit);
    let said = text(&o);
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("vmwarden") || l.contains(unit))
        .collect();
    assert!(
        o.success() && complaints.is_empty(),
        "{TEST}: systemd-analyze verify {unit} ({:?}):\n{}",
        o.status,
        text(&o)
    );

    // Control 1: a copy whose ExecStart names a missing program is an error (verify checks the
    // command; on the installed unit that is the installed /usr/bin/vmwarden).
    let installed = std::fs::read_to_string(unit).expect("installed unit");
    let dir = tmp.join("unit-controls");
    std::fs::create_dir_all(dir.join("a")).expect("control dir");
    std::fs::create_dir_all(dir.join("b")).expect("control dir");
    let a = dir.join("a/vmwarden.service");
    std::fs::write(
        &a,
        installed.replace(
            "ExecStart=/usr/bin/vmwarden",
            "ExecStart=/nonexistent/vmwarden",
        ),
    )
    .expect("control unit");
    let o = verify(&a.to_string_lossy());
    assert!(
        !o.success() && text(&o).contains("/nonexistent/vmwarden"),
        "{TEST}: systemd-analyze verify did not catch a missing ExecStart program ({:?}): {}",
        o.status,
        text(&o)
    );
    // Control 2: a misspelt key is only a warning (exit 0), naming the file: the filter above
    // would have seen it in the installed unit.
    let b = dir.join("b/vmwarden.service");
    std::fs::write(
        &b,
        installed.replace("KillMode=process", "KillMode=process\nKilMode=process"),
    )
    .expect("control unit");
    let o = verify(&b.to_string_lossy());
    assert!(
        text(&o).contains(&*b.to_string_lossy()) && text(&o).contains("KilMode"),
        "{TEST}: systemd-analyze verify did not report an unknown key: {}",
        text(&o)
    );

    // And the parsed hardening: an unparsed or empty unit scores 9.6 UNSAFE
    // (docs/packaging.md § systemd-analyze security: this one 3.1 OK with systemd 252).
    let sec = ok(&[
        "systemd-analyze",
        "security",
        "--offline=true",
        "--no-pager",
        unit,
    ]);
    let exposure: f64 = sec
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for vmwarden.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{TEST}: no exposure level in:\n{sec}"));
    eprintln!("{TEST}: systemd-analyze security --offline: exposure {exposure}");
    assert!(
        exposure < 5.0,
        "{TEST}: the installed unit's exposure is {exposure} (documented: 3.1): were its hardening lines parsed?"
    );
}

/// The installed files of the share and doc directories are those of the tree.
fn check_shipped_trees() {
    assert!(!repo_files("alerts").is_empty(), "{TEST}: no alerts");
    for (dir, dest) in [
        ("alerts", "/usr/share/vmwarden/alerts"),
        ("dashboards", "/usr/share/vmwarden/dashboards"),
        ("docs", "/usr/share/doc/vmwarden"),
    ] {
        for f in repo_files(dir) {
            let installed = Path::new(dest).join(&f);
            let got = std::fs::read(&installed)
                .unwrap_or_else(|e| panic!("{TEST}: {}: {e}", installed.display()));
            let want = std::fs::read(repo().join(dir).join(&f)).expect("tree file");
            assert!(
                got == want,
                "{TEST}: {} differs from {dir}/{}",
                installed.display(),
                f.display()
            );
        }
    }
}

#[test]
fn install_verify_remove_purge() {
    let started = Instant::now();
    if let Some(why) = unavailable() {
        return skip_or_fail(TEST, &why);
    }

    // --- Never clobber a vmwarden this test did not install. -----------------------------------
    let st = status();
    let leftover = !st.is_empty() && {
        // Ours only if the marker says so and the installed binary (while there is one) is the
        // one the marker names.
        match std::fs::read_to_string(MARKER) {
            Ok(marker) => !exists(BIN) || md5(BIN) == marker.trim(),
            Err(_) => false,
        }
    };
    assert!(
        st.is_empty() || leftover,
        "{TEST}: refusing to run: a {PKG} package is installed here (dpkg status {st:?}) that this test did not install; the test would replace and then remove it. Run it on a machine without vmwarden, or remove that package first."
    );
    if st.is_empty() {
        for p in OWN_PATHS {
            assert!(
                !exists(p),
                "{TEST}: refusing to run: {p} exists but no {PKG} package is installed, so it is someone's own; installing the package would overwrite it."
            );
        }
        let _ = std::fs::remove_file(MARKER);
    }

    let deb_dir = tempfile::tempdir().expect("temp dir");
    let deb = build(deb_dir.path());
    let deb_s = deb.to_string_lossy().into_owned();

    // Its dependencies (sanlock, libvirt0, libc6): missing ones would make dpkg -i fail half-way.
    let depends = ok(&["dpkg-deb", "--field", &deb_s, "Depends"]);
    assert!(
        depends.contains("sanlock"),
        "{TEST}: Depends lacks sanlock: {depends}"
    );
    let missing = missing_dependencies(depends.trim());
    if !missing.is_empty() {
        return skip_or_fail(
            TEST,
            &format!(
                "the package's dependencies are not installed: {} (scripts/setup.sh installs them)",
                missing.join(", ")
            ),
        );
    }

    let paths = package_paths(&deb_s);
    let unpacked = deb_dir.path().join("unpacked");
    ok(&["dpkg-deb", "--extract", &deb_s, &unpacked.to_string_lossy()]);
    let bin_md5 = md5(&unpacked.join("usr/bin/vmwarden").to_string_lossy());
    assert!(
        paths.iter().any(|p| p == BIN) && paths.iter().any(|p| p == CONFFILE),
        "{TEST}: package contents: {paths:?}"
    );
    let units: Vec<&String> = paths
        .iter()
        .filter(|p| p.ends_with("/systemd/system/vmwarden.service"))
        .collect();
    assert_eq!(units.len(), 1, "{TEST}: units in the package: {units:?}");
    let unit = units[0].clone();

    let hooks_before = host_hooks();
    let libvirtd_before = libvirtd_pid();
    let var_lib_before = exists("/var/lib/vmwarden");

    let ns = Namespace::new();
    let guard = Installed { ns: &ns };
    let hook = ns.path(HOOK);
    if leftover {
        eprintln!("{TEST}: purging the package an earlier run of this test left installed ({st})");
        ns.dpkg_ok(&["--purge", PKG]);
        for p in OWN_PATHS {
            assert!(
                !exists(p),
                "{TEST}: {p} outlived the purge of the earlier run's package"
            );
        }
    }
    assert!(
        !exists(&hook),
        "{TEST}: the namespace's {HOOKS} is not the empty tmpfs"
    );
    // What existed before the install (shared directories such as /usr/bin) may stay after
    // removal; everything else the package lists must go.
    let existed_before: BTreeSet<String> = paths.iter().filter(|p| exists(p)).cloned().collect();
    let expected_before: BTreeSet<&str> = existed_before.iter().map(String::as_str).collect();
    for p in OWN_PATHS {
        assert!(!expected_before.contains(p), "{TEST}: {p} exists already");
    }

    // === 1. A node without a hook: install. =====================================================
    std::fs::write(MARKER, &bin_md5).expect("marker");
    let out = ns.dpkg_ok(&["-i", &deb_s]);
    assert_eq!(status(), "installed", "{TEST}: after dpkg -i:\n{out}");
    let files = listed();
    eprintln!(
        "{TEST}: installed, {} paths ({:.1?})",
        files.len(),
        started.elapsed()
    );
    let listed_set: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    let package_set: BTreeSet<&str> = paths.iter().map(String::as_str).collect();
    assert_eq!(
        listed_set, package_set,
        "{TEST}: dpkg -L differs from the package's contents"
    );

    // The binary, and the version of the package and of the binary: Cargo.toml's.
    let version = ok(&[BIN, "--version"]);
    assert_eq!(
        version.trim(),
        format!("vmwarden {}", env!("CARGO_PKG_VERSION")),
        "{TEST}: {BIN} --version"
    );
    let pkg_version = ok(&["dpkg-query", "-W", "-f=${Version}", PKG]);
    assert_eq!(
        pkg_version.trim(),
        format!("{}-1", env!("CARGO_PKG_VERSION")),
        "{TEST}: package version"
    );

    // The unit: as in the tree, verified, not enabled, nothing started.
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap_or_default(),
        std::fs::read_to_string(repo().join("systemd/vmwarden.service")).expect("tree unit"),
        "{TEST}: {unit} is not systemd/vmwarden.service"
    );
    verify_unit(&unit, deb_dir.path());
    for wants in [
        "/etc/systemd/system/multi-user.target.wants/vmwarden.service",
        "/etc/systemd/system/vmwarden.service",
    ] {
        assert!(
            !exists(wants),
            "{TEST}: {wants} exists: the package enabled the unit"
        );
    }

    // The conffile: the commented defaults, registered with dpkg, loaded by the binary.
    assert_eq!(
        std::fs::read_to_string(CONFFILE).unwrap_or_default(),
        std::fs::read_to_string(repo().join("debian/vmwarden.toml")).expect("tree conffile"),
        "{TEST}: {CONFFILE}"
    );
    assert_eq!(conffiles(), [CONFFILE], "{TEST}: dpkg's Conffiles");
    let collect = exec(
        Cmd::new(BIN)
            .args(["collect", "--config", CONFFILE, "--format", "prometheus"])
            // No storage tools: the point is the config, not this host's storage.
            .env("PATH", "/nonexistent"),
        SHORT,
    );
    assert!(
        collect.success()
            && collect.stdout.contains(&format!(
                "vmwarden_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
        "{TEST}: {BIN} collect --config {CONFFILE}: {}",
        text(&collect)
    );

    check_shipped_trees();

    // The hook: made, because none existed (in the namespace only).
    assert_eq!(
        std::fs::read_link(&hook)
            .unwrap_or_else(|e| panic!("{TEST}: postinst made no hook ({e}):\n{out}")),
        Path::new(BIN),
        "{TEST}: the hook symlink"
    );
    assert!(
        out.contains("installed the libvirt hook"),
        "{TEST}: postinst did not say it made the hook:\n{out}"
    );
    assert_eq!(
        host_hooks(),
        hooks_before,
        "{TEST}: the host's {HOOKS} changed (the namespace leaked)"
    );
    assert_eq!(
        installed_processes(),
        Vec::<u32>::new(),
        "{TEST}: a vmwarden process runs after dpkg -i"
    );

    // === 2. Remove: only the conffile stays; the hook goes. =========================================
    let out = ns.dpkg_ok(&["-r", PKG]);
    assert_eq!(status(), "config-files", "{TEST}: after dpkg -r:\n{out}");
    assert!(
        !exists(&hook),
        "{TEST}: the hook symlink outlived dpkg -r:\n{out}"
    );
    let conf: BTreeSet<&str> = [CONFFILE, CONFDIR].into_iter().collect();
    let left: Vec<&String> = files
        .iter()
        .filter(|f| !conf.contains(f.as_str()) && !existed_before.contains(*f))
        .filter(|f| exists(f))
        .collect();
    assert!(left.is_empty(), "{TEST}: left after dpkg -r: {left:?}");
    assert!(
        Path::new(CONFFILE).is_file(),
        "{TEST}: the conffile must stay after dpkg -r"
    );
    let after: Vec<String> = listed()
        .into_iter()
        .filter(|f| !existed_before.contains(f))
        .collect();
    assert!(
        after.iter().all(|f| conf.contains(f.as_str())),
        "{TEST}: dpkg -L after remove lists more than the conffile: {after:?}"
    );

    // === 3. Purge: the conffile and /etc/vmwarden go, dpkg forgets the package. ====================
    ns.dpkg_ok(&["--purge", PKG]);
    assert_eq!(status(), "", "{TEST}: dpkg still knows {PKG} after purge");
    for p in [CONFFILE, CONFDIR] {
        assert!(!exists(p), "{TEST}: {p} left after purge");
    }
    let left: Vec<&String> = files
        .iter()
        .filter(|f| !existed_before.contains(*f) && exists(f))
        .collect();
    assert!(left.is_empty(), "{TEST}: left after purge: {left:?}");

    // === 4. A node with the administrator's own hook: never replaced, never removed. ===============
    let admin = "#!/bin/sh\n# the administrator's own hook\nexit 0\n";
    std::fs::write(&hook, admin).expect("admin hook in the namespace");
    std::fs::write(MARKER, &bin_md5).expect("marker");
    let out = ns.dpkg_ok(&["-i", &deb_s]);
    assert!(
        out.contains("is not vmwarden's: left alone"),
        "{TEST}: postinst did not say it left the hook alone:\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap_or_default(),
        admin,
        "{TEST}: postinst changed the administrator's hook"
    );
    ns.dpkg_ok(&["-r", PKG]);
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap_or_default(),
        admin,
        "{TEST}: postrm changed or removed the administrator's hook"
    );
    ns.dpkg_ok(&["--purge", PKG]);
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap_or_default(),
        admin,
        "{TEST}: purge changed or removed the administrator's hook"
    );
    assert_eq!(status(), "");

    // === The host: untouched. ======================================================================
    drop(guard);
    assert!(!exists(MARKER), "{TEST}: the marker outlived the cleanup");
    assert_eq!(
        host_hooks(),
        hooks_before,
        "{TEST}: the host's {HOOKS} changed"
    );
    assert_eq!(
        libvirtd_pid(),
        libvirtd_before,
        "{TEST}: the host's libvirtd changed (pid before, after)"
    );
    assert_eq!(
        exists("/var/lib/vmwarden"),
        var_lib_before,
        "{TEST}: /var/lib/vmwarden appeared or went"
    );
    assert_eq!(installed_processes(), Vec::<u32>::new());
    eprintln!("{TEST}: done in {:.1?}", started.elapsed());
}
