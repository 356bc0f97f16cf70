//! The action journal: one JSON-lines file per VM with an action in progress,
//! `STATE_DIR/journal/VM.json`. Each record is written and fsync'ed *before* what it announces
//! happens, so after a crash the file says how far the action got. A finished action's file moves
//! to `journal/done/` (the last 200 are kept). A file left in `journal/` at start-up is an
//! unfinished action: the agent recovers it from what libvirt and the locks show (recover.rs).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const KEEP_DONE: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// First line: what is being done.
    Header {
        id: String,
        action: String,
        vm: String,
        node: String,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        live: bool,
        started_unix: u64,
        steps: Vec<String>,
        /// Disk sources of the VM when the action began (the target's locks derive from them).
        #[serde(default)]
        disks: Vec<String>,
    },
    /// About to run a step.
    Begin {
        step: String,
    },
    Done {
        step: String,
    },
    Failed {
        step: String,
        error: String,
    },
    /// About to undo a step (rollback).
    Undo {
        step: String,
    },
    Undone {
        step: String,
        #[serde(default)]
        error: Option<String>,
    },
    /// The agent that ran the action left it unfinished on purpose (a step after the commit, or
    /// the commit decision itself, could not be completed): recovery takes it over. Without this
    /// record an unfinished journal means the agent died mid-action.
    Incomplete {
        reason: String,
    },
    /// A recovery attempt: what it saw and decided.
    Recovery {
        observed: String,
        decision: String,
    },
    /// Last line: how it ended.
    End {
        result: String,
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("an action on {vm} is already in progress or unfinished ({path}); wait for it, or see `vmwarden ctl status {vm}`")]
    Busy { vm: String, path: String },
    #[error(
        "journal {path}: {source} — check that the state directory is writable (and not full)"
    )]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Journal {
    path: PathBuf,
    file: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// fsync a directory, so a created or renamed entry survives a power loss.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

pub fn journal_dir(state_dir: &str) -> PathBuf {
    Path::new(state_dir).join("journal")
}

impl Journal {
    /// Start the journal of a new action on `vm`; refused while another one (running or
    /// unfinished) exists for it.
    pub fn create(state_dir: &str, vm: &str, header: Record) -> Result<Journal, JournalError> {
        let dir = journal_dir(state_dir);
        std::fs::create_dir_all(dir.join("done")).map_err(io(&dir))?;
        let path = dir.join(format!("{vm}.json"));
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(JournalError::Busy {
                    vm: vm.to_string(),
                    path: path.display().to_string(),
                })
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let mut j = Journal { path, file };
        // Nothing has been done under a journal whose header is not on disk: remove it, or the
        // empty file (a full or read-only state directory) would bar every action on the VM
        // and leave recovery nothing to read.
        if let Err(e) = j.write(&header).and_then(|()| sync_dir(&dir)) {
            let _ = std::fs::remove_file(&j.path);
            return Err(e);
        }
        Ok(j)
    }

    /// Reopen an unfinished journal to append to it (recovery).
    pub fn reopen(path: &Path) -> Result<Journal, JournalError> {
        let text = std::fs::read(path).map_err(io(path))?;
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        // A crash mid-write leaves a torn last line: start the next record on a line of its own.
        if text.last().is_some_and(|b| *b != b'\n') {
            file.write_all(b"\n").map_err(io(path))?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record and fsync it before returning.
    pub fn write(&mut self, r: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_string(r).map_err(|e| JournalError::Io {
            path: self.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))
    }

    /// Write the End record and move the file to `done/`.
    pub fn finish(mut self, result: &str, message: &str) -> Result<(), JournalError> {
        self.write(&Record::End {
            result: result.to_string(),
            message: message.to_string(),
        })?;
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let done = dir.join("done");
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let to = done.join(format!("{stamp}-{stem}.json"));
        std::fs::rename(&self.path, &to).map_err(io(&self.path))?;
        sync_dir(&dir)?;
        prune(&done);
        Ok(())
    }
}

/// Keep the newest KEEP_DONE finished journals (names start with a millisecond timestamp).
fn prune(done: &Path) {
    let Ok(rd) = std::fs::read_dir(done) else {
        return;
    };
    let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    if names.len() <= KEEP_DONE {
        return;
    }
    names.sort();
    for p in &names[..names.len() - KEEP_DONE] {
        let _ = std::fs::remove_file(p);
    }
}

/// A journal read back: its records, and lines that did not parse (a torn last write).
#[derive(Debug, Clone)]
pub struct ReadJournal {
    pub path: PathBuf,
    pub records: Vec<Record>,
    pub bad_lines: usize,
    /// Lines ended by a newline (a record is one `write_all` of its line and the newline).
    pub complete_lines: usize,
}

impl ReadJournal {
    /// No record was ever completely written: the file is empty or holds a torn first line.
    /// The header is written and synced before any step runs, so no step ran under it.
    pub fn never_began(&self) -> bool {
        self.complete_lines == 0
    }

    pub fn header(&self) -> Option<&Record> {
        self.records
            .first()
            .filter(|r| matches!(r, Record::Header { .. }))
    }

    /// Steps whose Done was written (in order), minus those undone (an undo that failed leaves
    /// its step done: whatever it changed is still in place).
    pub fn done_steps(&self) -> Vec<String> {
        let mut done: Vec<String> = Vec::new();
        for r in &self.records {
            match r {
                Record::Done { step } => done.push(step.clone()),
                Record::Undone { step, error: None } => done.retain(|s| s != step),
                _ => {}
            }
        }
        done
    }

    /// The last step that failed, with its error.
    pub fn failed_step(&self) -> Option<(String, String)> {
        self.records.iter().rev().find_map(|r| match r {
            Record::Failed { step, error } => Some((step.clone(), error.clone())),
            _ => None,
        })
    }

    /// Why a live agent left the action unfinished (None: the agent died mid-action).
    pub fn left_incomplete(&self) -> Option<String> {
        self.records.iter().rev().find_map(|r| match r {
            Record::Incomplete { reason } => Some(reason.clone()),
            _ => None,
        })
    }

    /// How far the action got, for recovery's log and journal: the steps done, and the step
    /// that failed or was running when the agent stopped.
    pub fn progress(&self) -> String {
        let done = self.done_steps().join(", ");
        let mut s = format!("done: [{done}]");
        if let Some(step) = self.interrupted_step() {
            s.push_str(&format!("; interrupted in {step}"));
        } else if let Some((step, error)) = self.failed_step() {
            s.push_str(&format!("; {step} failed: {error}"));
        }
        s
    }

    /// The step that began and has no Done/Failed: where the crash happened.
    pub fn interrupted_step(&self) -> Option<String> {
        let mut open = None;
        for r in &self.records {
            match r {
                Record::Begin { step } => open = Some(step.clone()),
                Record::Done { step } | Record::Failed { step, .. }
                    if open.as_ref() == Some(step) =>
                {
                    open = None
                }
                _ => {}
            }
        }
        open
    }

    pub fn ended(&self) -> bool {
        self.records.iter().any(|r| matches!(r, Record::End { .. }))
    }
}

pub fn read(path: &Path) -> Result<ReadJournal, JournalError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    Ok(parse(path, &text))
}

/// The journal `text` (read from `path`): one JSON record a line; blank lines are skipped and
/// lines that do not parse are counted in `bad_lines`. Pure, never panics ([`read`] without the file).
pub fn parse(path: &Path, text: &str) -> ReadJournal {
    let mut records = Vec::new();
    let mut bad_lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => records.push(r),
            Err(_) => bad_lines += 1,
        }
    }
    ReadJournal {
        path: path.to_path_buf(),
        records,
        bad_lines,
        complete_lines: text.matches('\n').count(),
    }
}

/// The unfinished journals in `state_dir` (files directly in `journal/`).
pub fn unfinished(state_dir: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(journal_dir(state_dir)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// VMs this node is migrating (an unfinished migrate journal) or receiving (an incoming marker
/// younger than the migration timeout plus a minute): their locks may be shared. An older marker
/// is a migration nobody finished — its shared lock is then reported, not excused.
pub fn in_migration(cfg: &crate::config::Config) -> std::collections::BTreeSet<String> {
    let stale_after =
        std::time::Duration::from_secs_f64(cfg.actions.migrate_timeout_seconds.max(0.0) + 60.0);
    in_migration_at(&cfg.cluster.state_dir, stale_after)
}

/// The incoming marker of `vm` if it is not stale (see [`in_migration`]): what the hook accepts.
pub fn incoming_declared(cfg: &crate::config::Config, vm: &str) -> Option<Incoming> {
    if in_migration(cfg).contains(vm) {
        incoming(&cfg.cluster.state_dir, vm)
    } else {
        None
    }
}

/// [`in_migration`] for a state directory and a marker age limit.
pub fn in_migration_at(
    state_dir: &str,
    stale_after: std::time::Duration,
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for p in unfinished(state_dir) {
        if let Ok(j) = read(&p) {
            if let Some(Record::Header { action, vm, .. }) = j.header() {
                if action == "migrate" {
                    out.insert(vm.clone());
                }
            }
        }
    }
    for vm in incoming_vms(state_dir) {
        // The hook rewrites the marker when libvirt's part begins: its age is since then.
        let age = std::fs::metadata(incoming_path(state_dir, &vm))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.map_or(true, |a| a <= stale_after) {
            out.insert(vm);
        }
    }
    out
}

/// A live migration of a VM *into* this node that vmwarden declared: the source's agent asked
/// this node's agent to join the VM's lock shared (`STATE_DIR/incoming/VM`). The hook lets an
/// incoming migration in only with one of these, so a lock that merely happens to be shared is
/// never a way in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incoming {
    /// The source's action id.
    #[serde(default)]
    pub action_id: String,
    #[serde(default)]
    pub declared_unix: u64,
    /// Set by the hook when libvirt's incoming migration began (`migrate begin`): only then may
    /// qemu be prepared on a shared lock — a plain `virsh start` in the window may not.
    #[serde(default)]
    pub libvirt_began_unix: Option<u64>,
}

fn incoming_path(state_dir: &str, vm: &str) -> PathBuf {
    Path::new(state_dir).join("incoming").join(vm)
}

/// The VMs with an incoming marker here.
pub fn incoming_vms(state_dir: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(Path::new(state_dir).join("incoming")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// The incoming marker of `vm`, if there is one. A marker left by an older agent (an empty file)
/// still counts as declared, without details.
pub fn incoming(state_dir: &str, vm: &str) -> Option<Incoming> {
    let text = std::fs::read_to_string(incoming_path(state_dir, vm)).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_default())
}

/// Write (replace) the incoming marker of `vm`, atomically: a reader sees the old or the new one.
pub fn write_incoming(state_dir: &str, vm: &str, m: &Incoming) -> Result<(), JournalError> {
    let dir = Path::new(state_dir).join("incoming");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let p = incoming_path(state_dir, vm);
    let tmp = dir.join(format!(".{vm}.tmp"));
    let text = serde_json::to_vec(m).map_err(|e| JournalError::Io {
        path: p.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&text).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &p).map_err(io(&p))?;
    sync_dir(&dir).or(Ok(()))
}

/// Declare (or withdraw) an incoming migration of `vm` to this node (the target's side).
pub fn set_incoming(
    state_dir: &str,
    vm: &str,
    action_id: Option<&str>,
) -> Result<(), JournalError> {
    match action_id {
        Some(id) => write_incoming(
            state_dir,
            vm,
            &Incoming {
                action_id: id.to_string(),
                declared_unix: now_unix(),
                libvirt_began_unix: None,
            },
        ),
        None => {
            let p = incoming_path(state_dir, vm);
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(io(&p)(e));
                }
            }
            sync_dir(&Path::new(state_dir).join("incoming")).or(Ok(()))
        }
    }
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(vm: &str) -> Record {
        Record::Header {
            id: "x".into(),
            action: "migrate".into(),
            vm: vm.into(),
            node: "n1".into(),
            to: Some("n2".into()),
            live: true,
            started_unix: 1,
            steps: vec!["a".into(), "b".into()],
            disks: vec![],
        }
    }

    #[test]
    fn one_action_per_vm_and_reading_back() {
        let d = tempfile::tempdir().unwrap();
        let sd = d.path().to_str().unwrap();
        let mut j = Journal::create(sd, "vm1", header("vm1")).unwrap();
        assert!(matches!(
            Journal::create(sd, "vm1", header("vm1")),
            Err(JournalError::Busy { .. })
        ));
        j.write(&Record::Begin { step: "a".into() }).unwrap();
        j.write(&Record::Done { step: "a".into() }).unwrap();
        j.write(&Record::Begin { step: "b".into() }).unwrap();
        assert_eq!(
            in_migration_at(sd, std::time::Duration::from_secs(60))
                .into_iter()
                .collect::<Vec<_>>(),
            ["vm1"]
        );
        // A torn last line (crash mid-write) is skipped and counted.
        let path = j.path().to_path_buf();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"kind\":\"do")
            .unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.bad_lines, 1);
        assert_eq!(r.done_steps(), ["a"]);
        assert_eq!(r.interrupted_step().as_deref(), Some("b"));
        assert!(!r.ended());
        assert_eq!(unfinished(sd), vec![path.clone()]);
        let j = Journal::reopen(&path).unwrap();
        j.finish("completed", "ok").unwrap();
        assert!(unfinished(sd).is_empty());
        assert!(in_migration_at(sd, std::time::Duration::from_secs(60)).is_empty());
        let done: Vec<_> = std::fs::read_dir(journal_dir(sd).join("done"))
            .unwrap()
            .collect();
        assert_eq!(done.len(), 1);
        Journal::create(sd, "vm1", header("vm1")).unwrap();
    }

    #[test]
    fn a_journal_whose_header_never_reached_the_disk_never_began() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vm1.json");
        // Empty (the header's write failed on a full disk) or a torn header: nothing ran.
        for text in ["", "{\"kind\":\"header\",\"id\":\"x"] {
            std::fs::write(&p, text).unwrap();
            let r = read(&p).unwrap();
            assert!(r.header().is_none());
            assert!(r.never_began(), "{text:?}");
        }
        // A complete line that is not a header (another version's?) is for a human.
        std::fs::write(&p, "{\"kind\":\"novel\"}\n").unwrap();
        let r = read(&p).unwrap();
        assert!(r.header().is_none());
        assert!(!r.never_began());
        let sd = d.path().join("sd");
        let j = Journal::create(sd.to_str().unwrap(), "vm1", header("vm1")).unwrap();
        assert!(!read(j.path()).unwrap().never_began());
    }

    #[test]
    fn progress_names_what_stayed_done() {
        let d = tempfile::tempdir().unwrap();
        let sd = d.path().to_str().unwrap();
        let mut j = Journal::create(sd, "vm1", header("vm1")).unwrap();
        for r in [
            Record::Begin { step: "a".into() },
            Record::Done { step: "a".into() },
            Record::Begin { step: "b".into() },
            Record::Done { step: "b".into() },
            Record::Begin { step: "c".into() },
            Record::Failed {
                step: "c".into(),
                error: "boom".into(),
            },
            Record::Undo { step: "b".into() },
            Record::Undone {
                step: "b".into(),
                error: Some("agent down".into()),
            },
            Record::Undo { step: "a".into() },
            Record::Undone {
                step: "a".into(),
                error: None,
            },
        ] {
            j.write(&r).unwrap();
        }
        let r = read(j.path()).unwrap();
        // b's undo failed: b is still done; a was undone.
        assert_eq!(r.done_steps(), ["b"]);
        assert_eq!(r.interrupted_step(), None);
        assert_eq!(r.progress(), "done: [b]; c failed: boom");
        assert_eq!(r.left_incomplete(), None);
        j.write(&Record::Incomplete {
            reason: "undo failed".into(),
        })
        .unwrap();
        let r = read(j.path()).unwrap();
        assert_eq!(r.left_incomplete().as_deref(), Some("undo failed"));
        j.write(&Record::Begin { step: "d".into() }).unwrap();
        assert_eq!(
            read(j.path()).unwrap().progress(),
            "done: [b]; interrupted in d"
        );
    }

    #[test]
    fn incoming_markers() {
        let d = tempfile::tempdir().unwrap();
        let sd = d.path().to_str().unwrap();
        assert!(incoming(sd, "vm2").is_none());
        set_incoming(sd, "vm2", Some("vm2-migrate-1")).unwrap();
        assert!(in_migration_at(sd, std::time::Duration::from_secs(60)).contains("vm2"));
        let m = incoming(sd, "vm2").unwrap();
        assert_eq!(m.action_id, "vm2-migrate-1");
        assert!(m.libvirt_began_unix.is_none());
        write_incoming(
            sd,
            "vm2",
            &Incoming {
                libvirt_began_unix: Some(5),
                ..m
            },
        )
        .unwrap();
        assert_eq!(incoming(sd, "vm2").unwrap().libvirt_began_unix, Some(5));
        // No temporary file is mistaken for a VM.
        assert_eq!(incoming_vms(sd), ["vm2"]);
        // Older than the limit: a migration nobody finished, no longer excused.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(in_migration_at(sd, std::time::Duration::from_millis(10)).is_empty());
        set_incoming(sd, "vm2", None).unwrap();
        set_incoming(sd, "vm2", None).unwrap();
        assert!(in_migration_at(sd, std::time::Duration::from_secs(60)).is_empty());
        // An older agent's empty marker still declares the migration.
        std::fs::write(d.path().join("incoming/vm3"), b"").unwrap();
        assert_eq!(incoming(sd, "vm3"), Some(Incoming::default()));
    }
}
