//! The one place that runs external commands: argv only (never a shell), a timeout on every call,
//! and the whole process group killed when the timeout expires or the caller gives up.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The lines of a failed command worth showing in an error: stderr (or stdout when stderr is
    /// empty), `WARNING` noise dropped unless nothing else was said, at most 3 lines / 300 chars.
    pub fn summary(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let important: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !l.starts_with("WARNING"))
            .collect();
        let pick = if important.is_empty() {
            &lines
        } else {
            &important
        };
        let mut s = pick.iter().take(3).copied().collect::<Vec<_>>().join(" / ");
        if s.chars().count() > 300 {
            s = s.chars().take(300).collect::<String>() + "…";
        }
        if s.is_empty() {
            s = "no output".to_string();
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("command `{program}` not found (is it installed and on PATH?)")]
    NotFound { program: String },
    #[error("`{command}` did not finish within {seconds:.1}s and was killed (storage hung? check `dmesg` and the device)")]
    Timeout { command: String, seconds: f64 },
    #[error("could not run `{command}`: {source}")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("empty command line")]
    Empty,
}

/// A command line: argv[0] is a name looked up on PATH or an absolute path.
#[derive(Debug, Clone)]
pub struct Cmd {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            argv: vec![program.into()],
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.argv.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The command as an operator would type it (for logs and `--dry-run`); arguments with
    /// spaces or quotes are single-quoted.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| {
                if a.is_empty()
                    || a.chars()
                        .any(|c| c.is_whitespace() || "'\"$`\\".contains(c))
                {
                    format!("'{}'", a.replace('\'', r"'\''"))
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn spawn_failed(&self, e: std::io::Error) -> ExecError {
        match (e.kind(), self.argv.first()) {
            (std::io::ErrorKind::NotFound, Some(program)) => ExecError::NotFound {
                program: program.clone(),
            },
            _ => ExecError::Io {
                command: self.display(),
                source: e,
            },
        }
    }

    /// Become `argv` (exec, same pid), for the lease holder that must stay the process sanlock
    /// registered. Returns only when the exec failed.
    pub fn replace_process(&self) -> ExecError {
        let Some(program) = self.argv.first() else {
            return ExecError::Empty;
        };
        let e = std::process::Command::new(program)
            .args(&self.argv[1..])
            .env("LC_ALL", "C")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .exec();
        self.spawn_failed(e)
    }

    /// Start a long-lived process that must outlive this call and the agent (a lease holder):
    /// own process group (a signal to the agent's group does not reach it), no stdio, `LC_ALL=C`.
    /// Returns its pid; a thread reaps it if it exits while the agent lives.
    pub fn spawn_detached(&self) -> Result<u32, ExecError> {
        let program = self.argv.first().ok_or(ExecError::Empty)?;
        let mut child = std::process::Command::new(program)
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("LC_ALL", "C")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .process_group(0)
            .spawn()
            .map_err(|e| self.spawn_failed(e))?;
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(pid)
    }

    /// Run to completion or until `timeout`; on timeout the child's process group is killed
    /// and reaped before this returns.
    pub async fn run(&self, timeout: Duration) -> Result<Output, ExecError> {
        let program = self.argv.first().ok_or(ExecError::Empty)?;
        let mut cmd = Command::new(program);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Stable, parseable output whatever the operator's locale.
            .env("LC_ALL", "C")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Own process group, so a timeout kills grandchildren too (a wrapper script's `sleep`).
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| self.spawn_failed(e))?;
        let pid = child.id();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let work = async {
            let mut so = Vec::new();
            let mut se = Vec::new();
            let read_out = async {
                if let Some(o) = out.as_mut() {
                    let _ = o.read_to_end(&mut so).await;
                }
            };
            let read_err = async {
                if let Some(e) = err.as_mut() {
                    let _ = e.read_to_end(&mut se).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (status, so, se)
        };
        let guard = GroupKiller(pid);
        match tokio::time::timeout(timeout, work).await {
            Ok((status, so, se)) => {
                std::mem::forget(guard);
                let status = status.map_err(|e| ExecError::Io {
                    command: self.display(),
                    source: e,
                })?;
                Ok(Output {
                    status: status.code(),
                    stdout: String::from_utf8_lossy(&so).into_owned(),
                    stderr: String::from_utf8_lossy(&se).into_owned(),
                })
            }
            Err(_) => {
                drop(guard); // kills the group; kill_on_drop reaps the child
                Err(ExecError::Timeout {
                    command: self.display(),
                    seconds: timeout.as_secs_f64(),
                })
            }
        }
    }
}

/// Kills a process group when dropped: covers timeouts and callers that give up (future dropped).
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the group
                // we created with process_group(0), whose id equals the child's pid.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_argv_without_shell() {
        let out = Cmd::new("echo")
            .arg("a b; rm -rf /")
            .run(Duration::from_secs(5))
            .await
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "a b; rm -rf /\n");
    }

    #[tokio::test]
    async fn missing_program_is_typed() {
        let err = Cmd::new("/nonexistent/vmwarden-no-such-tool")
            .run(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn nonzero_exit_is_reported() {
        let out = Cmd::new("false").run(Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.status, Some(1));
        assert!(!out.success());
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // A shell script run as argv (the test's choice, not vmwarden's) that leaves a grandchild.
        let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
        let started = std::time::Instant::now();
        let err = Cmd::new("sh")
            .arg("-c")
            .arg(script)
            .run(Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild must be gone (or a zombie awaiting init): give the kernel a moment.
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "grandchild {pid} survived the timeout");
    }

    #[test]
    fn display_quotes_what_needs_quoting() {
        let c = Cmd::new("lvs")
            .arg("--config")
            .arg("report { x=1 }")
            .arg("it's");
        assert_eq!(c.display(), r"lvs --config 'report { x=1 }' 'it'\''s'");
    }
}
