//! The lease holder that follows the VM's qemu from the start (`vmwarden lease-holder`).
//!
//! A start takes the VM's sanlock lease before qemu exists, so its holder cannot watch qemu's pid
//! yet. The plain holder (`tail -f /dev/null`) then has to be swapped for one watching qemu in the
//! hook's `started begin` — a handful of sanlock calls while libvirt holds the domain, which delays
//! every start and every watchdog restart (docs/benchmarks.md). This holder instead waits for
//! libvirt's pid file of the VM to name a qemu of that VM started after the holder itself, and then
//! *execs* the configured holder watching that pid (`tail --pid=QEMU -f /dev/null`): same process,
//! so sanlock's registration and the lease stay, and from then on it is exactly the holder the
//! hand-over would have made (the rest of the lease code recognises it by its `--pid=`).
//! If no qemu ever shows up (a failed start), it holds on like the plain holder until the start's
//! rollback or recovery releases the lease.

use std::path::Path;
use std::time::{Duration, Instant};

/// The subcommand name (the CLI entry and the check that a holder is one of these).
pub const SUBCOMMAND: &str = "lease-holder";

/// Fields of `/proc/PID/stat` we need: state and start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_ticks: u64,
}

/// Parse `/proc/PID/stat`: `pid (comm) state ppid …`, start time is field 22. comm may hold spaces
/// and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field 22 (starttime) is f[19].
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

fn stat_of(pid: &str) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether a qemu command line (NUL-separated) runs the VM `vm`: libvirt passes
/// `-name guest=VM,debug-threads=on` (older ones `-name VM`).
pub fn cmdline_runs_vm(cmdline: &[u8], vm: &str) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| {
        w[0] == b"-name" && {
            let v = w[1];
            v == vm.as_bytes()
                || v.strip_prefix(b"guest=")
                    .is_some_and(|g| g.split(|b| *b == b',').next() == Some(vm.as_bytes()))
        }
    })
}

/// The qemu the pid file names, when it is alive, runs `vm` and started no earlier than `since`
/// (this holder's own start: an older qemu is a previous run's, not the one being started).
pub fn qemu_to_follow(pid_file: &Path, vm: &str, since: u64) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let st = stat_of(&pid.to_string())?;
    if st.state == 'Z' || st.state == 'X' || st.start_ticks < since {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline_runs_vm(&cmdline, vm).then_some(pid)
}

/// The holder's life: wait for the VM's qemu, then become `HOLDER --pid=QEMU -f /dev/null`.
/// Returns only when it cannot go on (the exec failed); the caller exits non-zero, which frees
/// the lease — sanlock's answer to a holder gone wrong, and what the start's checks then see.
pub fn run(pid_file: &Path, vm: &str, holder: &str) -> String {
    let Some(since) = stat_of("self").map(|s| s.start_ticks) else {
        return "cannot read /proc/self/stat".into();
    };
    let began = Instant::now();
    loop {
        if let Some(pid) = qemu_to_follow(pid_file, vm, since) {
            let holder = crate::exec::Cmd::new(holder).args([
                format!("--pid={pid}"),
                "-f".into(),
                "/dev/null".into(),
            ]);
            return holder.replace_process().to_string();
        }
        // A start takes well under a second: look often at first, then rarely (a lease taken by
        // hand for maintenance may wait a long time for a qemu that never comes).
        let pause = if began.elapsed() < Duration::from_secs(30) {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(200)
        };
        std::thread::sleep(pause);
    }
}

/// Whether the holder `holder` is a follower for `pid_file` that will end up watching `vm_pid`
/// (the pid file names it), from `/proc/HOLDER/cmdline`.
pub fn holder_follows(cmdline: &[u8], pid_file: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.iter().any(|a| *a == SUBCOMMAND.as_bytes())
        && args
            .windows(2)
            .any(|w| w[0] == b"--pid-file" && Some(w[1]) == pid_file.to_str().map(str::as_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 4 0 98765 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(s),
            Some(ProcStat {
                state: 'S',
                start_ticks: 98765
            })
        );
        assert_eq!(parse_stat("1234 (qemu) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let st = stat_of("self").expect("/proc/self/stat");
        // The thread group leader's state: the test harness's main thread may be waiting.
        assert!("RSD".contains(st.state), "{st:?}");
        assert!(st.start_ticks > 0);
    }

    #[test]
    fn qemu_names() {
        let modern = b"/usr/bin/qemu-system-x86_64\0-name\0guest=vm1,debug-threads=on\0-S\0";
        assert!(cmdline_runs_vm(modern, "vm1"));
        assert!(!cmdline_runs_vm(modern, "vm"));
        assert!(!cmdline_runs_vm(modern, "vm1,debug-threads=on"));
        assert!(cmdline_runs_vm(b"qemu\0-name\0vm2\0", "vm2"));
        assert!(!cmdline_runs_vm(b"qemu\0guest=vm1\0", "vm1"));
    }

    #[test]
    fn follows_only_a_live_qemu_of_the_vm_started_since() {
        let dir = std::env::temp_dir().join(format!("vmw-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pf = dir.join("vm.pid");
        assert_eq!(qemu_to_follow(&pf, "vm", 0), None, "no pid file");
        // This test process is not a qemu of any VM.
        std::fs::write(&pf, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(qemu_to_follow(&pf, "vm", 0), None);
        std::fs::write(&pf, "not a pid").unwrap();
        assert_eq!(qemu_to_follow(&pf, "vm", 0), None);
        // A live process that runs "-name guest=vm,…" is followed, unless it started too early.
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import time; time.sleep(30)",
                "-name",
                "guest=vm,debug-threads=on",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        std::fs::write(&pf, format!("{pid}\n")).unwrap();
        // Until exec is done, the child's cmdline is still the test's.
        let found = (0..400).find_map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            qemu_to_follow(&pf, "vm", 0)
        });
        assert_eq!(found, Some(pid));
        assert_eq!(qemu_to_follow(&pf, "vm2", 0), None, "another VM's name");
        let start = stat_of(&pid.to_string()).unwrap().start_ticks;
        assert_eq!(qemu_to_follow(&pf, "vm", start), Some(pid), "same tick");
        assert_eq!(
            qemu_to_follow(&pf, "vm", start + 1),
            None,
            "older than the holder"
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(qemu_to_follow(&pf, "vm", 0), None, "gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn recognises_a_follower() {
        let pf = Path::new("/run/libvirt/qemu/vm.pid");
        let c = b"/usr/bin/vmwarden\0lease-holder\0--pid-file\0/run/libvirt/qemu/vm.pid\0--vm\0vm\0--holder\0/usr/bin/tail\0";
        assert!(holder_follows(c, pf));
        assert!(!holder_follows(c, Path::new("/run/libvirt/qemu/vm2.pid")));
        assert!(!holder_follows(
            b"/usr/bin/tail\0--pid=5\0-f\0/dev/null\0",
            pf
        ));
        // The follower's own argv never looks like a holder watching a pid.
        assert_eq!(crate::lock::sanlock::watched_pid(c), None);
    }
}
