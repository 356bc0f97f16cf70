//! libvirt for actions, through `virsh` (argv via exec.rs, a timeout on every call). Plans print
//! these exact commands under `--dry-run`.

use std::time::Duration;

use crate::exec::{Cmd, ExecError};

/// A domain's state as `virsh domstate --reason` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomState {
    /// "running", "paused", "shut off", "crashed", "in shutdown", "pmsuspended", "blocked",
    /// "idle", or "undefined" when libvirt does not know the domain.
    pub state: String,
    pub reason: String,
}

impl DomState {
    pub fn undefined() -> DomState {
        DomState {
            state: "undefined".into(),
            reason: String::new(),
        }
    }

    /// `running (booted)` → state + reason.
    pub fn parse(text: &str) -> DomState {
        let t = text.trim();
        match t.split_once(" (") {
            Some((s, r)) => DomState {
                state: s.trim().to_string(),
                reason: r.trim_end_matches(')').trim().to_string(),
            },
            None => DomState {
                state: t.to_string(),
                reason: String::new(),
            },
        }
    }

    /// A qemu process exists (it has the disks open).
    pub fn active(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "shut off" | "undefined" | "crashed" | ""
        )
    }

    pub fn defined(&self) -> bool {
        self.state != "undefined"
    }

    /// Paused as the incoming end of a migration that has not finished.
    pub fn incoming_migration(&self) -> bool {
        self.state == "paused" && self.reason == "migration"
    }
}

impl std::fmt::Display for DomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            f.write_str(&self.state)
        } else {
            write!(f, "{} ({})", self.state, self.reason)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VirshError {
    #[error("`{command}` failed: {summary}")]
    Failed { command: String, summary: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

#[derive(Debug, Clone)]
pub struct Virsh {
    pub program: String,
    pub uri: String,
    pub timeout: Duration,
}

impl Virsh {
    /// virsh as `[actions]` and `[libvirt]` configure it.
    pub fn from_config(cfg: &crate::config::Config) -> Virsh {
        Virsh {
            program: cfg.actions.virsh.clone(),
            uri: cfg.libvirt.uri.clone(),
            timeout: Duration::from_secs_f64(cfg.actions.virsh_timeout_seconds),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Cmd {
        Cmd::new(self.program.clone())
            .args(["-q", "-c", self.uri.as_str()])
            .args(args.iter().copied())
    }

    /// `virsh ARGS`: stdout, or the error with virsh's own message.
    pub async fn run(&self, args: &[&str], timeout: Duration) -> Result<String, VirshError> {
        let cmd = self.cmd(args);
        let out = cmd.run(timeout).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(VirshError::Failed {
                command: cmd.display(),
                summary: out.summary(),
            })
        }
    }

    pub async fn state(&self, vm: &str) -> Result<DomState, VirshError> {
        let cmd = self.cmd(&["domstate", "--reason", vm]);
        let out = cmd.run(self.timeout).await?;
        if out.success() {
            return Ok(DomState::parse(&out.stdout));
        }
        if out.stderr.contains("failed to get domain") || out.stderr.contains("Domain not found") {
            return Ok(DomState::undefined());
        }
        Err(VirshError::Failed {
            command: cmd.display(),
            summary: out.summary(),
        })
    }

    /// Source paths of the domain's disks (`domblklist --details`, device type disk; cdroms and
    /// floppies are not locked).
    pub async fn disks(&self, vm: &str) -> Result<Vec<String>, VirshError> {
        let out = self
            .run(&["domblklist", "--details", vm], self.timeout)
            .await?;
        Ok(parse_domblklist(&out))
    }
}

/// ` file   disk   vda   /path` lines → the sources of `disk` devices.
pub fn parse_domblklist(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [ty, "disk", _target, source, ..]
                    if (*ty == "file" || *ty == "block") && source.starts_with('/') =>
                {
                    Some(source.to_string())
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let s = DomState::parse("running (booted)\n\n");
        assert_eq!((s.state.as_str(), s.reason.as_str()), ("running", "booted"));
        assert!(s.active());
        let s = DomState::parse("shut off (migrated)");
        assert!(!s.active() && s.defined());
        assert!(DomState::parse("paused (migration)").incoming_migration());
        assert!(DomState::parse("in shutdown").active());
        assert!(!DomState::undefined().defined());
        assert_eq!(
            DomState::parse("shut off (destroyed)").to_string(),
            "shut off (destroyed)"
        );
    }

    #[test]
    fn domblklist() {
        let t = " Type   Device   Target   Source\n----------------------------------\n file   disk     vda      /tmp/a.raw\n block  disk     vdb      /dev/vg1/vm1\n file   cdrom    sda      /iso/x.iso\n file   disk     vdc      -\n";
        assert_eq!(parse_domblklist(t), vec!["/tmp/a.raw", "/dev/vg1/vm1"]);
    }
}
