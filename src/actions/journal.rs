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
    /// A recovery attempt after a crash: what it saw and decided.
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
        j.write(&header)?;
        sync_dir(&dir)?;
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
}

impl ReadJournal {
    pub fn header(&self) -> Option<&Record> {
        self.records
            .first()
            .filter(|r| matches!(r, Record::Header { .. }))
    }

    /// Steps whose Done was written (in order), minus those undone.
    pub fn done_steps(&self) -> Vec<String> {
        let mut done: Vec<String> = Vec::new();
        for r in &self.records {
            match r {
                Record::Done { step } => done.push(step.clone()),
                Record::Undone { step, .. } => done.retain(|s| s != step),
                _ => {}
            }
        }
        done
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
    let mut records = Vec::new();
    let mut bad_lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => records.push(r),
            Err(_) => bad_lines += 1,
        }
    }
    Ok(ReadJournal {
        path: path.to_path_buf(),
        records,
        bad_lines,
    })
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

/// VMs this node is migrating (an unfinished migrate journal) or receiving (incoming marker):
/// their locks may be shared.
pub fn in_migration(state_dir: &str) -> std::collections::BTreeSet<String> {
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
    if let Ok(rd) = std::fs::read_dir(Path::new(state_dir).join("incoming")) {
        for e in rd.flatten() {
            out.insert(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Mark or unmark `vm` as arriving here by live migration (the target's side, for invariants).
pub fn set_incoming(state_dir: &str, vm: &str, on: bool) -> Result<(), JournalError> {
    let dir = Path::new(state_dir).join("incoming");
    let p = dir.join(vm);
    if on {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        File::create(&p).map_err(io(&p))?;
    } else if let Err(e) = std::fs::remove_file(&p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(io(&p)(e));
        }
    }
    sync_dir(&dir).or(Ok(()))
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
        assert_eq!(in_migration(sd).into_iter().collect::<Vec<_>>(), ["vm1"]);
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
        assert!(in_migration(sd).is_empty());
        let done: Vec<_> = std::fs::read_dir(journal_dir(sd).join("done"))
            .unwrap()
            .collect();
        assert_eq!(done.len(), 1);
        Journal::create(sd, "vm1", header("vm1")).unwrap();
    }

    #[test]
    fn incoming_markers() {
        let d = tempfile::tempdir().unwrap();
        let sd = d.path().to_str().unwrap();
        set_incoming(sd, "vm2", true).unwrap();
        assert!(in_migration(sd).contains("vm2"));
        set_incoming(sd, "vm2", false).unwrap();
        set_incoming(sd, "vm2", false).unwrap();
        assert!(in_migration(sd).is_empty());
    }
}
