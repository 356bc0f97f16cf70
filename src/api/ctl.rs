//! `vmwarden ctl`: the human client of this node's agent, a client of the documented API like
//! any other. Tables by default, the agent's JSON with `--json` (every subcommand). An action is
//! started with `POST /v1/vms/{vm}/{verb}` and followed with `GET /v1/actions/{id}`: each step is
//! printed as it finishes. Every error says what happened and the next command to type.
//!
//! It sends a token: `--token-file`, else `[api] token_file`, else the cluster secret (which the
//! agent accepts for operator calls only while no named token is configured).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::Value;

use crate::api::peer::PeerError;
use crate::config::Config;
use crate::secret::Secret;

/// The token `ctl` sends.
fn token(cfg: &Config, token_file: Option<PathBuf>) -> Result<Secret, String> {
    let file = token_file
        .map(|p| p.display().to_string())
        .or_else(|| (!cfg.api.token_file.is_empty()).then(|| cfg.api.token_file.clone()));
    match file {
        Some(f) => crate::api::auth::read_token_file(&f)
            .map(Secret::from_string)
            .map_err(|e| e.to_string()),
        None => Secret::load(&cfg.cluster.secret_file).map_err(|e| {
            format!(
                "{e} (or give `vmwarden ctl` an API token: --token-file FILE or [api] token_file)"
            )
        }),
    }
}

#[derive(Subcommand)]
pub enum Ctl {
    /// Take the VM's lock exclusively and start it here.
    Start {
        vm: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// ACPI shutdown, destroy after [actions] shutdown_timeout_seconds, release the lock.
    Stop {
        vm: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop, then start here.
    Restart {
        vm: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Resume a VM paused on an I/O error (or by a user) once its storage path is healthy;
    /// refused unless its lock is exclusive here.
    Resume {
        vm: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Live-migrate a running VM to NODE, handing the lock over (--cold: only if it is stopped).
    Migrate {
        vm: String,
        #[arg(long)]
        to: String,
        /// Refuse unless the VM is stopped (its definition moves, nothing runs).
        #[arg(long)]
        cold: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// Make a new VM: its disk (an LV in the shared VG, `lvcreate -an`), optionally an image copied
    /// into it, its definition here (intent stopped). The name must be free in the whole cluster.
    Create {
        vm: String,
        /// The disk's size (binary units: 8G, 512M).
        #[arg(long)]
        size: String,
        /// The VG (default: [lifecycle] vg).
        #[arg(long)]
        vg: Option<String>,
        /// An image on this node (raw, qcow2, …) copied into the disk with `qemu-img convert`.
        #[arg(long)]
        from_image: Option<PathBuf>,
        /// The domain XML (its <name> must be VM; its one disk is pointed at the new LV).
        #[arg(long)]
        xml: PathBuf,
        #[arg(long)]
        dry_run: bool,
    },
    /// Grow a disk: lvextend under the lock, then `virsh blockresize` if the VM runs (asked of the
    /// node where it runs). Never shrinks.
    Grow {
        vm: String,
        /// The disk: its target (vda) or source path.
        disk: String,
        /// +SIZE (by) or SIZE (to).
        size: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Activate a stopped VM's disks here for maintenance (lock exclusive, device paths,
    /// partitions via kpartx), or deactivate them.
    Disks {
        #[command(subcommand)]
        op: DisksOp,
    },
    /// Remove a stopped VM: undefine it everywhere, remove its LVs under its lock (or keep them).
    Remove {
        vm: String,
        #[arg(long)]
        keep_disks: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// Where the VM is and who holds its lock, on this node and every peer; the watchdog's status.
    Status { vm: String },
    /// Forget the watchdog's restart and resume attempts of VM (a give-up, a lock lost while
    /// paused on an I/O error); it is looked at again now.
    Reset {
        vm: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// The watchdog's status of every VM on this node.
    Watchdog,
    /// The VMs defined on this node (--cluster: on every node, merged): state, lock, watchdog
    /// status, running action.
    Vms {
        /// Every node's VMs (GET /v1/cluster/vms): where each runs, its state and lock there;
        /// a VM running on several nodes and an unreachable node are shown.
        #[arg(long)]
        cluster: bool,
    },
}

impl Ctl {
    /// The command line that did this, for "next:" hints.
    fn line(&self) -> String {
        let dry = |d: bool| if d { " --dry-run" } else { "" };
        match self {
            Ctl::Start { vm, dry_run } => format!("start {vm}{}", dry(*dry_run)),
            Ctl::Stop { vm, dry_run } => format!("stop {vm}{}", dry(*dry_run)),
            Ctl::Restart { vm, dry_run } => format!("restart {vm}{}", dry(*dry_run)),
            Ctl::Resume { vm, dry_run } => format!("resume {vm}{}", dry(*dry_run)),
            Ctl::Migrate {
                vm,
                to,
                cold,
                dry_run,
            } => format!(
                "migrate {vm} --to {to}{}{}",
                if *cold { " --cold" } else { "" },
                dry(*dry_run)
            ),
            Ctl::Status { vm } => format!("status {vm}"),
            Ctl::Reset { vm, dry_run } => format!("reset {vm}{}", dry(*dry_run)),
            Ctl::Watchdog => "watchdog".into(),
            Ctl::Vms { cluster } => format!("vms{}", if *cluster { " --cluster" } else { "" }),
            Ctl::Create {
                vm,
                size,
                vg,
                from_image,
                xml,
                dry_run,
            } => format!(
                "create {vm} --size {size}{}{} --xml {}{}",
                vg.as_ref()
                    .map(|v| format!(" --vg {v}"))
                    .unwrap_or_default(),
                from_image
                    .as_ref()
                    .map(|f| format!(" --from-image {}", f.display()))
                    .unwrap_or_default(),
                xml.display(),
                dry(*dry_run)
            ),
            Ctl::Grow {
                vm,
                disk,
                size,
                dry_run,
            } => format!("grow {vm} {disk} {size}{}", dry(*dry_run)),
            Ctl::Disks {
                op: DisksOp::Activate { vm, dry_run },
            } => format!("disks activate {vm}{}", dry(*dry_run)),
            Ctl::Disks {
                op: DisksOp::Deactivate { vm, dry_run },
            } => format!("disks deactivate {vm}{}", dry(*dry_run)),
            Ctl::Remove {
                vm,
                keep_disks,
                dry_run,
            } => format!(
                "remove {vm}{}{}",
                if *keep_disks { " --keep-disks" } else { "" },
                dry(*dry_run)
            ),
        }
    }
}

/// What went wrong talking to the agent, in plain words, and the next command to type.
pub fn explain(e: &PeerError, line: &str) -> String {
    let next = match e {
        PeerError::BadUrl { .. } => {
            "set [agent] listen in the config to the agent's HOST:PORT, then `vmwarden ctl --config FILE ...`".to_string()
        }
        PeerError::Unreachable { .. } => format!(
            "check that the agent runs on this node (`systemctl status vmwarden`), then `vmwarden ctl {line}` again"
        ),
        PeerError::Unauthorized { .. } => format!(
            "`vmwarden ctl --token-file FILE {line}` with a token of the agent's [api] tokens"
        ),
        PeerError::Tls { .. } => "fix [tls] ca_file (and cert_file), then try again".to_string(),
        PeerError::Timeout { .. } => {
            "`vmwarden ctl vms` shows whether an action still runs on the VM".to_string()
        }
        PeerError::Status { status: 403, .. } => format!(
            "`vmwarden ctl --token-file FILE {line}` with a token whose role allows it (actions: operate)"
        ),
        PeerError::Status { status: 404, .. } => {
            "`vmwarden ctl vms --cluster` shows the VMs of every node".to_string()
        }
        PeerError::Status { status: 409, .. } => {
            "`vmwarden ctl vms --cluster` shows what runs where and the action running on each VM; ask again once it is over".to_string()
        }
        PeerError::Status { status: 503, .. } => {
            "look at the agent's log (`journalctl -u vmwarden`): it says why it cannot act".to_string()
        }
        PeerError::Status { .. } | PeerError::BadReply { .. } => {
            "look at the agent's log (`journalctl -u vmwarden`)".to_string()
        }
    };
    format!("{e}\n  next: {next}")
}

#[derive(Subcommand)]
pub enum DisksOp {
    Activate {
        vm: String,
        #[arg(long)]
        dry_run: bool,
    },
    Deactivate {
        vm: String,
        #[arg(long)]
        dry_run: bool,
    },
}

/// `vmwarden ctl`: ask this node's agent (`[agent] listen`) with the token of `token_file`,
/// `[api] token_file`, or the cluster secret.
pub async fn run(cfg: Config, json: bool, token_file: Option<PathBuf>, what: Ctl) -> ExitCode {
    let secret = match token(&cfg, token_file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vmwarden: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::api::tls::init_client(&cfg.tls, Some(cfg.node_name())) {
        eprintln!("vmwarden: {e}");
        return ExitCode::from(2);
    }
    let c = Client {
        url: crate::api::peer::local_url(&cfg.agent.listen, !cfg.tls.cert_file.is_empty()),
        secret,
        json,
        line: what.line(),
    };
    let a = &cfg.actions;
    // An action's own steps are bounded; this only guards against an agent that never answers.
    let limit = Duration::from_secs_f64(
        a.migrate_timeout_seconds
            + 2.0 * a.shutdown_timeout_seconds
            + 10.0 * a.virsh_timeout_seconds
            + cfg.lifecycle.image_copy_timeout_seconds
            + 300.0,
    );
    let r = match what {
        Ctl::Status { vm } => c.status(&vm, a.peer_timeout_seconds).await,
        Ctl::Reset { vm, dry_run } => c.act(&vm, "reset", plain(dry_run), limit).await,
        Ctl::Watchdog => c.watchdog().await,
        Ctl::Vms { cluster: false } => c.vms().await,
        Ctl::Vms { cluster: true } => c.cluster_vms(a.peer_timeout_seconds).await,
        Ctl::Start { vm, dry_run } => c.act(&vm, "start", plain(dry_run), limit).await,
        Ctl::Stop { vm, dry_run } => c.act(&vm, "stop", plain(dry_run), limit).await,
        Ctl::Restart { vm, dry_run } => c.act(&vm, "restart", plain(dry_run), limit).await,
        Ctl::Resume { vm, dry_run } => c.act(&vm, "resume", plain(dry_run), limit).await,
        Ctl::Migrate {
            vm,
            to,
            cold,
            dry_run,
        } => {
            let body = serde_json::json!({ "to": to, "cold": cold, "dry_run": dry_run });
            c.act(&vm, "migrate", body, limit).await
        }
        Ctl::Create {
            vm,
            size,
            vg,
            from_image,
            xml,
            dry_run,
        } => {
            // The XML travels in the request; the image is a path on this node (the agent's).
            let text = match std::fs::read_to_string(&xml) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("vmwarden: --xml {}: {e}", xml.display());
                    return ExitCode::from(2);
                }
            };
            let from_image = match from_image.map(|p| std::path::absolute(&p)) {
                None => None,
                Some(Ok(p)) => Some(p.display().to_string()),
                Some(Err(e)) => {
                    eprintln!("vmwarden: --from-image: {e}");
                    return ExitCode::from(2);
                }
            };
            let body = serde_json::json!({
                "size": size, "vg": vg, "from_image": from_image, "xml": text, "dry_run": dry_run
            });
            c.act(&vm, "create", body, limit).await
        }
        Ctl::Grow {
            vm,
            disk,
            size,
            dry_run,
        } => {
            let body = serde_json::json!({ "disk": disk, "size": size, "dry_run": dry_run });
            c.act(&vm, "grow", body, limit).await
        }
        Ctl::Disks {
            op: DisksOp::Activate { vm, dry_run },
        } => c.act(&vm, "activate-disks", plain(dry_run), limit).await,
        Ctl::Disks {
            op: DisksOp::Deactivate { vm, dry_run },
        } => c.act(&vm, "deactivate-disks", plain(dry_run), limit).await,
        Ctl::Remove {
            vm,
            keep_disks,
            dry_run,
        } => {
            let body = serde_json::json!({ "keep_disks": keep_disks, "dry_run": dry_run });
            c.act(&vm, "remove", body, limit).await
        }
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            let text = explain(&e, &c.line);
            if json {
                let (error, next) = text.split_once("\n  next: ").unwrap_or((&text, ""));
                print_json(&serde_json::json!({ "error": error, "next": next }));
            }
            eprintln!("vmwarden: {text}");
            ExitCode::from(2)
        }
    }
}

fn plain(dry_run: bool) -> Value {
    serde_json::json!({ "dry_run": dry_run })
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The exit code of an action's result: 0 completed or planned, 3 incomplete (the agent's
/// recovery finishes it), 1 otherwise (refused, rolled back, failed).
fn exit_of(result: &str) -> ExitCode {
    match result {
        "completed" | "planned" => ExitCode::SUCCESS,
        "incomplete" => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

struct Client {
    url: String,
    secret: Secret,
    json: bool,
    line: String,
}

/// How long `follow` waits before asking again. Most actions end within a few seconds (a live
/// migration of an idle guest: ≈ 1 s), and a fixed 200 ms poll added 100 ms on average to each
/// (the migration benchmark saw it); one status read costs the agent about a millisecond.
/// So: every 25 ms for the first 3 s, 100 ms up to 10 s, then 200 ms.
fn poll_interval(elapsed: Duration) -> Duration {
    Duration::from_millis(match elapsed.as_secs() {
        0..=2 => 25,
        3..=9 => 100,
        _ => 200,
    })
}

impl Client {
    async fn get(&self, path: &str, timeout: Duration) -> Result<Value, PeerError> {
        crate::api::peer::get(&self.url, path, &self.secret, timeout).await
    }

    async fn post(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value, PeerError> {
        crate::api::peer::call(&self.url, path, &self.secret, body, timeout).await
    }

    /// `POST /v1/vms/{vm}/{verb}`: a dry run's plan, a reset's answer, or an action followed
    /// step by step until it ends.
    async fn act(
        &self,
        vm: &str,
        verb: &str,
        body: Value,
        limit: Duration,
    ) -> Result<ExitCode, PeerError> {
        let path = format!("/v1/vms/{}/{verb}", encode_segment(vm));
        let rep = self.post(&path, &body, Duration::from_secs(60)).await?;
        let Some(id) = rep.get("href").and(rep.get("id")).and_then(Value::as_str) else {
            // Answered at once: a dry run's plan (an action report) or a watchdog reset.
            let result = s(&rep["result"]).to_string();
            if self.json {
                print_json(&rep);
            } else if let Ok(r) =
                serde_json::from_value::<crate::actions::ActionReport>(rep.clone())
            {
                print!("{}", r.text());
            } else {
                println!("{vm}: {result} — {}", s(&rep["message"]));
            }
            return Ok(exit_of(&result));
        };
        self.follow(id, limit).await
    }

    /// Follow `GET /v1/actions/{id}` until the action is over, printing each step as it
    /// finishes (with --json: only the final status).
    async fn follow(&self, id: &str, limit: Duration) -> Result<ExitCode, PeerError> {
        let t0 = Instant::now();
        let path = format!("/v1/actions/{id}");
        let mut printed = 0usize;
        let mut planned = false;
        if !self.json {
            println!("action {id}:");
        }
        loop {
            let st = match self.get(&path, Duration::from_secs(30)).await {
                Ok(st) => st,
                Err(e @ (PeerError::Unreachable { .. } | PeerError::Timeout { .. })) => {
                    eprintln!(
                        "vmwarden: lost the agent while following {id}: {e}\n  the action goes on, or the agent finishes or rolls it back from its journal when it restarts\n  next: `vmwarden ctl vms` once the agent answers again"
                    );
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e),
            };
            let finished = st["state"] == "finished";
            let steps = st["steps"].as_array().cloned().unwrap_or_default();
            if !self.json {
                if !planned {
                    if let Some(plan) = st["plan"].as_array().filter(|p| !p.is_empty()) {
                        let names: Vec<&str> = plan.iter().map(s).collect();
                        println!("  plan: {}", names.join(" → "));
                        planned = true;
                    }
                }
                // A step is printed once it is over (done or failed), in journal order.
                while let Some(step) = steps.get(printed) {
                    let state = s(&step["state"]);
                    if state == "running" && !finished {
                        break;
                    }
                    let err = step["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    println!(
                        "  {:<7} {}{err}  ({:.1} s)",
                        state,
                        s(&step["step"]),
                        t0.elapsed().as_secs_f64()
                    );
                    printed += 1;
                }
            }
            if finished {
                let result = s(&st["result"]).to_string();
                let report = &st["report"];
                if self.json {
                    // The action's report (what the synchronous route answered), else the status.
                    print_json(if report.is_object() { report } else { &st });
                } else {
                    for n in report["notes"].as_array().into_iter().flatten() {
                        println!("  note: {}", s(n));
                    }
                    println!(
                        "{} {} on {}: {result} — {}",
                        s(&st["action"]),
                        s(&st["vm"]),
                        s(&st["node"]),
                        s(&st["message"])
                    );
                    if result != "completed" {
                        println!("  next: {}", next_after(&result, s(&st["vm"]), &self.line));
                    }
                }
                return Ok(exit_of(&result));
            }
            if t0.elapsed() > limit {
                eprintln!(
                    "vmwarden: {id} has not finished after {:.0} s; it goes on in the agent\n  next: `vmwarden ctl vms` shows whether it still runs",
                    limit.as_secs_f64()
                );
                return Ok(ExitCode::from(2));
            }
            tokio::time::sleep(poll_interval(t0.elapsed())).await;
        }
    }

    /// `POST /v1/status`: the VM on this node and every peer, and the watchdog's view here.
    async fn status(&self, vm: &str, peer_timeout: f64) -> Result<ExitCode, PeerError> {
        let nodes: Vec<crate::api::peer::PeerReply> = crate::api::peer::call(
            &self.url,
            "/v1/status",
            &self.secret,
            &crate::api::server::StatusRequest { vm: vm.to_string() },
            Duration::from_secs_f64(peer_timeout * 2.0 + 10.0),
        )
        .await?;
        if self.json {
            print_json(&nodes);
            return Ok(ExitCode::SUCCESS);
        }
        println!("{:<12} {:<26} LOCK", "NODE", "STATE");
        for n in &nodes {
            match &n.error {
                Some(e) if n.state.is_empty() => println!("{:<12} {:<26} ?  ({e})", n.node, "?"),
                _ => println!(
                    "{:<12} {:<26} {}",
                    n.node,
                    n.state,
                    if n.lock.is_empty() { "-" } else { &n.lock }
                ),
            }
        }
        let running: Vec<&str> = nodes
            .iter()
            .filter(|n| n.active)
            .map(|n| n.node.as_str())
            .collect();
        if running.len() > 1 {
            println!(
                "!! {vm} runs on {} at once (running_on_several_nodes): see `vmwarden check`",
                running.join(" and ")
            );
        }
        let wd = self.watchdog_call("status", None).await.ok();
        if let Some(v) = wd.iter().flat_map(|r| r.vms.iter()).find(|v| v["vm"] == vm) {
            println!(
                "watchdog here: {} (attempts {}{}) {}",
                v["status_word"].as_str().unwrap_or("?"),
                v["attempts"],
                if v["gave_up"] == true {
                    ", gave up"
                } else {
                    ""
                },
                s(&v["decision"])
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn watchdog_call(
        &self,
        op: &str,
        vm: Option<String>,
    ) -> Result<crate::api::server::WatchdogReply, PeerError> {
        crate::api::peer::call(
            &self.url,
            "/v1/watchdog",
            &self.secret,
            &crate::api::server::WatchdogRequest {
                op: op.to_string(),
                vm,
            },
            Duration::from_secs(10),
        )
        .await
    }

    async fn watchdog(&self) -> Result<ExitCode, PeerError> {
        let r = self.watchdog_call("status", None).await?;
        if self.json {
            print_json(&r.vms);
            return Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        if !r.ok {
            eprintln!(
                "vmwarden: {}\n  next: set [watchdog] enabled = true (and [libvirt] enabled) and restart the agent",
                r.message
            );
            return Ok(ExitCode::from(1));
        }
        println!("{:<20} {:<16} {:<12} DECISION", "VM", "STATUS", "ATTEMPTS");
        for v in &r.vms {
            println!(
                "{:<20} {:<16} attempts {:<3} {}",
                v["vm"].as_str().unwrap_or("?"),
                v["status_word"].as_str().unwrap_or("?"),
                v["attempts"],
                s(&v["decision"])
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `GET /v1/vms`.
    async fn vms(&self) -> Result<ExitCode, PeerError> {
        let list: crate::api::rest::VmListReply =
            crate::api::peer::get(&self.url, "/v1/vms", &self.secret, Duration::from_secs(30))
                .await?;
        if self.json {
            print_json(&list.vms);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<24} {:<10} {:<10} {:<12} {:<16} ACTION",
            "VM", "NODE", "STATE", "LOCK", "WATCHDOG"
        );
        for v in &list.vms {
            println!(
                "{:<24} {:<10} {:<10} {:<12} {:<16} {}",
                v.name,
                v.node,
                v.state,
                if v.lock.is_empty() { "-" } else { &v.lock },
                v.status_word.as_deref().unwrap_or("-"),
                v.action.as_deref().unwrap_or("-")
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `GET /v1/cluster/vms`: one line per VM and node that defines it; a VM running on
    /// several nodes and every node that did not answer are called out. Exit 1 when either.
    async fn cluster_vms(&self, peer_timeout: f64) -> Result<ExitCode, PeerError> {
        let r: crate::cluster::ClusterReply = crate::api::peer::get(
            &self.url,
            "/v1/cluster/vms",
            &self.secret,
            Duration::from_secs_f64(peer_timeout + 40.0),
        )
        .await?;
        let unreachable: Vec<&crate::cluster::NodeReach> =
            r.nodes.iter().filter(|n| !n.reachable).collect();
        let several = r.vms.iter().any(|v| v.violation.is_some());
        let code = if several || !unreachable.is_empty() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
        if self.json {
            print_json(&r);
            return Ok(code);
        }
        println!(
            "{:<24} {:<10} {:<10} {:<12} {:<16} ACTION",
            "VM", "NODE", "STATE", "LOCK", "WATCHDOG"
        );
        for v in &r.vms {
            for n in &v.nodes {
                println!(
                    "{:<24} {:<10} {:<10} {:<12} {:<16} {}",
                    v.name,
                    n.node,
                    n.state,
                    if n.lock.is_empty() { "-" } else { &n.lock },
                    n.status_word.as_deref().unwrap_or("-"),
                    n.action.as_deref().unwrap_or("-")
                );
            }
        }
        for v in r.vms.iter().filter(|v| v.violation.is_some()) {
            println!(
                "!! {} runs on {} at once (running_on_several_nodes)\n   {}",
                v.name,
                v.running_on.join(" and "),
                v.violation.as_deref().unwrap_or("")
            );
        }
        for n in &unreachable {
            println!(
                "!! node {} is unreachable: {} — its VMs are not shown\n   next: check the agent there (`systemctl status vmwarden` on {})",
                n.node,
                n.error.as_deref().unwrap_or("no answer"),
                n.node
            );
        }
        Ok(code)
    }
}

/// What to type after an action that did not complete.
fn next_after(result: &str, vm: &str, line: &str) -> String {
    match result {
        "refused" => format!(
            "nothing was changed; `vmwarden ctl vms --cluster` shows where {vm} runs and who holds its lock"
        ),
        "rolled_back" => format!(
            "everything was undone; fix what the failed step says, then `vmwarden ctl {line}` again"
        ),
        "failed" => format!(
            "`vmwarden ctl status {vm}` shows where it is now; `vmwarden check` on each node says what to fix"
        ),
        "incomplete" => format!(
            "the agent finishes it from its journal; `vmwarden ctl status {vm}` shows where it is"
        ),
        _ => format!("`vmwarden ctl status {vm}`"),
    }
}

/// A path segment: names are validated by the agent; anything but what a name may hold is
/// percent-encoded so the path stays one segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_asks_often_at_first_then_less() {
        let ms = |s: f64| poll_interval(Duration::from_secs_f64(s)).as_millis();
        assert_eq!(ms(0.0), 25);
        assert_eq!(ms(2.9), 25);
        assert_eq!(ms(3.0), 100);
        assert_eq!(ms(9.9), 100);
        assert_eq!(ms(10.0), 200);
        assert_eq!(ms(600.0), 200);
    }

    #[test]
    fn segments_stay_one() {
        assert_eq!(encode_segment("vm-1.a"), "vm-1.a");
        assert_eq!(encode_segment("../x"), "..%2Fx");
        assert_eq!(encode_segment("a b"), "a%20b");
    }

    #[test]
    fn errors_say_what_to_type_next() {
        let e = PeerError::Status {
            url: "http://127.0.0.1:10177".into(),
            status: 403,
            body: "the token \"reader\" has the role read; /v1/vms/{vm}/stop needs operate".into(),
        };
        let m = explain(&e, "stop vm1");
        assert!(m.contains("403") && m.contains("needs operate"), "{m}");
        assert!(
            m.contains("next: `vmwarden ctl --token-file FILE stop vm1`"),
            "{m}"
        );
        let e = PeerError::Unreachable {
            url: "http://127.0.0.1:10177".into(),
            why: "refused".into(),
        };
        assert!(explain(&e, "vms").contains("`systemctl status vmwarden`"));
    }
}
