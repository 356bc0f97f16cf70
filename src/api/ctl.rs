//! `vmwarden ctl`: the human client of this node's agent. It sends a token: `--token-file`,
//! else `[api] token_file`, else the cluster secret (which the agent accepts for operator calls
//! only while no named token is configured).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

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
    /// Live-migrate a running VM (cold: a stopped one) to NODE, handing the lock over.
    Migrate {
        vm: String,
        #[arg(long)]
        to: String,
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
    /// Forget the watchdog's restart attempts of VM (and a give-up); it is looked at again now.
    Reset { vm: String },
    /// The watchdog's status of every VM on this node.
    Watchdog,
    /// The VMs defined on this node: state, lock held here, watchdog status, running action.
    Vms,
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

fn plain(
    action: crate::actions::ActionKind,
    vm: String,
    dry_run: bool,
) -> crate::actions::ActionRequest {
    crate::actions::ActionRequest {
        action,
        vm,
        to: None,
        dry_run,
        lifecycle: Default::default(),
    }
}

/// `vmwarden ctl`: ask this node's agent (`[agent] listen`) with the token of `token_file`,
/// `[api] token_file`, or the cluster secret.
pub async fn run(cfg: Config, json: bool, token_file: Option<PathBuf>, what: Ctl) -> ExitCode {
    use crate::actions::{ActionKind, ActionReport, ActionRequest};
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
    let url = crate::api::peer::local_url(&cfg.agent.listen, !cfg.tls.cert_file.is_empty());
    let a = &cfg.actions;
    // An action's own steps are bounded; this only guards against an agent that never answers.
    let limit = std::time::Duration::from_secs_f64(
        a.migrate_timeout_seconds
            + 2.0 * a.shutdown_timeout_seconds
            + 10.0 * a.virsh_timeout_seconds
            + cfg.lifecycle.image_copy_timeout_seconds
            + 300.0,
    );
    let req = match what {
        Ctl::Status { vm } => {
            let r: Result<Vec<crate::api::peer::PeerReply>, _> = crate::api::peer::call(
                &url,
                "/v1/status",
                &secret,
                &crate::api::server::StatusRequest { vm: vm.clone() },
                std::time::Duration::from_secs_f64(a.peer_timeout_seconds * 2.0 + 10.0),
            )
            .await;
            return match r {
                Ok(nodes) => {
                    let wd = watchdog_call(&url, &secret, "status", None).await.ok();
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&nodes).unwrap_or_default()
                        );
                    } else {
                        for n in &nodes {
                            match &n.error {
                                Some(e) if n.state.is_empty() => println!("{:<12} ?  {e}", n.node),
                                _ => println!("{:<12} {:<22} lock {}", n.node, n.state, n.lock),
                            }
                        }
                        let me = wd
                            .iter()
                            .flat_map(|r| r.vms.iter())
                            .find(|v| v["vm"] == vm.as_str());
                        if let Some(v) = me {
                            println!(
                                "watchdog here: {} (attempts {}{}) {}",
                                v["status_word"].as_str().unwrap_or("?"),
                                v["attempts"],
                                if v["gave_up"] == true {
                                    ", gave up"
                                } else {
                                    ""
                                },
                                v["decision"].as_str().unwrap_or("")
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vmwarden: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Ctl::Reset { vm } => {
            return match watchdog_call(&url, &secret, "reset", Some(vm)).await {
                Ok(r) => {
                    println!("{}", r.message);
                    if r.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("vmwarden: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Ctl::Vms => {
            let r: Result<crate::api::rest::VmListReply, _> =
                crate::api::peer::get(&url, "/v1/vms", &secret, std::time::Duration::from_secs(30))
                    .await;
            return match r {
                Ok(list) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&list.vms).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(list) => {
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
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vmwarden: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Ctl::Watchdog => {
            return match watchdog_call(&url, &secret, "status", None).await {
                Ok(r) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&r.vms).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(r) if r.ok => {
                    for v in &r.vms {
                        println!(
                            "{:<20} {:<16} attempts {:<3} {}",
                            v["vm"].as_str().unwrap_or("?"),
                            v["status_word"].as_str().unwrap_or("?"),
                            v["attempts"],
                            v["decision"].as_str().unwrap_or("")
                        );
                    }
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    eprintln!("vmwarden: {}", r.message);
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("vmwarden: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Ctl::Start { vm, dry_run } => plain(ActionKind::Start, vm, dry_run),
        Ctl::Stop { vm, dry_run } => plain(ActionKind::Stop, vm, dry_run),
        Ctl::Restart { vm, dry_run } => plain(ActionKind::Restart, vm, dry_run),
        Ctl::Migrate { vm, to, dry_run } => ActionRequest {
            to: Some(to),
            ..plain(ActionKind::Migrate, vm, dry_run)
        },
        Ctl::Create {
            vm,
            size,
            vg,
            from_image,
            xml,
            dry_run,
        } => {
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
            ActionRequest {
                lifecycle: crate::actions::lifecycle::Params {
                    size: Some(size),
                    vg,
                    from_image,
                    xml: Some(text),
                    ..Default::default()
                },
                ..plain(ActionKind::Create, vm, dry_run)
            }
        }
        Ctl::Grow {
            vm,
            disk,
            size,
            dry_run,
        } => ActionRequest {
            lifecycle: crate::actions::lifecycle::Params {
                size: Some(size),
                disk: Some(disk),
                ..Default::default()
            },
            ..plain(ActionKind::Grow, vm, dry_run)
        },
        Ctl::Disks {
            op: DisksOp::Activate { vm, dry_run },
        } => plain(ActionKind::ActivateDisks, vm, dry_run),
        Ctl::Disks {
            op: DisksOp::Deactivate { vm, dry_run },
        } => plain(ActionKind::DeactivateDisks, vm, dry_run),
        Ctl::Remove {
            vm,
            keep_disks,
            dry_run,
        } => ActionRequest {
            lifecycle: crate::actions::lifecycle::Params {
                keep_disks,
                ..Default::default()
            },
            ..plain(ActionKind::Remove, vm, dry_run)
        },
    };
    let rep: ActionReport = match crate::api::peer::call(&url, "/v1/action", &secret, &req, limit)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vmwarden: {e} (if the agent died mid-action, it finishes or rolls the action back from its journal when it restarts)");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rep).unwrap_or_default());
    } else {
        print!("{}", rep.text());
    }
    match rep.result.as_str() {
        "completed" | "planned" => ExitCode::SUCCESS,
        "incomplete" => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

/// `POST /v1/watchdog` on this node's agent.
async fn watchdog_call(
    url: &str,
    secret: &crate::secret::Secret,
    op: &str,
    vm: Option<String>,
) -> Result<crate::api::server::WatchdogReply, crate::api::peer::PeerError> {
    crate::api::peer::call(
        url,
        "/v1/watchdog",
        secret,
        &crate::api::server::WatchdogRequest {
            op: op.to_string(),
            vm,
        },
        std::time::Duration::from_secs(10),
    )
    .await
}
