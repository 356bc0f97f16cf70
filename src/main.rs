use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use vmwarden::actions::Engine;
use vmwarden::api::server::{self, Server};
use vmwarden::collect::Collector;
use vmwarden::config::Config;

#[derive(Parser)]
#[command(
    name = "vmwarden",
    version,
    about = "Per-node agent for KVM/libvirt clusters on shared LVM and DRBD"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: serve /metrics, /healthz and / (config: embedded defaults unless --config).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Probe once and print the metrics to stdout (exit 0 even if some collectors fail).
    Collect {
        #[arg(long)]
        config: Option<PathBuf>,
        /// openmetrics (what Prometheus scrapes) or prometheus (classic text, for promtool).
        #[arg(long, value_enum, default_value = "openmetrics")]
        format: Format,
    },
    /// Probe once and judge the node's invariants: exit 0 if none is violated, 1 if any is,
    /// 2 on a configuration error. Checks a failed collector prevents are listed, not failed.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Ask this node's agent to start, stop, restart or migrate a VM, or where it runs.
    Ctl {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the agent's JSON report instead of text.
        #[arg(long)]
        json: bool,
        /// The API token to send (default: [api] token_file, else the cluster secret).
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        what: vmwarden::api::ctl::Ctl,
    },
    /// One lock operation by hand, through the backend the actions use: VG/LV with lvmlockd,
    /// the VM name with sanlock leases. Refuses to release or share the lock of a VM running here.
    Lock {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The VM the LV belongs to, for messages and the running check (default: the LV name).
        #[arg(long)]
        vm: Option<String>,
        /// Print the command it would run and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Release or share even when the VM's state cannot be asked from libvirt.
        #[arg(long)]
        force: bool,
        #[arg(value_enum)]
        op: LockCliOp,
        /// VG/LV (lvmlockd backend), or VM: its lease (sanlock) or the LVs of its disks (lvmlockd).
        target: String,
    },
    /// DRBD handler: `split-brain` records DRBD's report of a split brain so the agent exports it
    /// (`handlers { split-brain "/usr/bin/vmwarden drbd-handler split-brain"; }`).
    DrbdHandler {
        /// Default: /etc/vmwarden/vmwarden.toml when it exists, else the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only `split-brain` is handled.
        event: String,
    },
    /// Internal: the sanlock lease holder that waits for the VM's qemu and then watches it
    /// (started by vmwarden itself through `sanlock client command`; see src/lock/follow.rs).
    #[command(name = "lease-holder", hide = true)]
    LeaseHolder {
        #[arg(long)]
        pid_file: PathBuf,
        #[arg(long)]
        vm: String,
        /// The plain holder to become once qemu is known (`[lock.sanlock] holder`).
        #[arg(long)]
        holder: String,
    },
    /// libvirt hook entry point (install: `ln -s $(command -v vmwarden) /etc/libvirt/hooks/qemu`).
    Hook {
        /// Default: /etc/vmwarden/vmwarden.toml when it exists, else the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only `qemu` is handled.
        driver: String,
        domain: String,
        op: String,
        subop: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        extra: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LockCliOp {
    /// Take it exclusively (what a start does).
    Exclusive,
    /// Take it shared (a migration target).
    Shared,
    /// Exclusive → shared (a migration source).
    ToShared,
    /// Shared → exclusive, retried while the peer lets go.
    ToExclusive,
    /// Give it up.
    Release,
    /// Print what this host holds: exclusive, shared or unlocked.
    Status,
}

/// The lease holder that follows the VM's qemu (src/lock/follow.rs).
fn lease_holder(pid_file: &std::path::Path, vm: &str, holder: &str) -> ExitCode {
    if let Err(e) = vmwarden::lock::validate_name(vmwarden::lock::NameKind::Vm, vm) {
        eprintln!("vmwarden lease-holder: {e}");
        return ExitCode::from(2);
    }
    // Returns only when it could not become the holder; exiting frees the lease.
    let why = vmwarden::lock::follow::run(pid_file, vm, holder);
    eprintln!("vmwarden lease-holder: {why}");
    ExitCode::from(1)
}

/// `--config` or the embedded defaults; a bad file is reported and exits 2.
fn load_config(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.as_deref()).map_err(|e| {
        eprintln!("vmwarden: {e}");
        ExitCode::from(2)
    })
}

/// The hook's config: `--config`, else /etc/vmwarden/vmwarden.toml if present, else defaults.
fn hook_config(path: Option<PathBuf>) -> Result<Config, vmwarden::config::ConfigError> {
    let default = PathBuf::from("/etc/vmwarden/vmwarden.toml");
    match path {
        Some(p) => Config::load(Some(&p)),
        None if default.exists() => Config::load(Some(&default)),
        None => Config::load(None),
    }
}

async fn run_agent(cfg: Config) -> ExitCode {
    let listen = cfg.agent.listen.clone();
    let (listener, addr) = match server::bind(&listen).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!(
                "vmwarden: cannot listen on {listen}: {e} (another process on that port? set [agent] listen in the config)"
            );
            return ExitCode::from(2);
        }
    };
    tracing::info!(%addr, "vmwarden {} serving /metrics, /healthz and /", env!("CARGO_PKG_VERSION"));
    let engine = match vmwarden::secret::Secret::load(&cfg.cluster.secret_file) {
        Ok(secret) => Ok(Arc::new(Engine::new(cfg.clone(), secret))),
        Err(e) => {
            tracing::warn!("actions and node-to-node calls are disabled: {e}");
            Err(format!("this agent cannot act: {e}"))
        }
    };
    let mut collector = Collector::new(cfg.clone()).with_peer_secret(match &engine {
        Ok(e) => Ok(e.secret().clone()),
        Err(why) => Err(why.clone()),
    });
    let mut watchdog = None;
    if let Ok(e) = &engine {
        collector = collector.with_action_stats(e.stats.clone());
        // Unfinished journals (an agent that died mid-action) are finished or rolled back from
        // what libvirt and the locks show; retried until they are.
        tokio::spawn(e.clone().recovery_loop());
        if cfg.watchdog.enabled && cfg.libvirt.enabled {
            let w = vmwarden::watchdog::Watchdog::new(cfg.clone(), e.clone());
            collector = collector.with_watchdog(w.clone());
            tokio::spawn(w.clone().run());
            tokio::spawn(w.clone().follow_events());
            watchdog = Some(w);
        }
    }
    let tls = match vmwarden::api::tls::acceptor(&cfg.tls)
        .and_then(|a| vmwarden::api::tls::init_client(&cfg.tls, None).map(|()| a))
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vmwarden: {e}");
            return ExitCode::from(2);
        }
    };
    let secret = engine.as_ref().ok().map(|e| e.secret().clone());
    let tokens = match vmwarden::api::auth::Tokens::load(&cfg.api, secret.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vmwarden: {e}");
            return ExitCode::from(2);
        }
    };
    if !tokens.has_named() && secret.is_some() {
        tracing::warn!("no [api] tokens: the cluster secret also authorizes operator calls (as before named tokens); give operators, Alertmanager and readers their own tokens (docs/api.md)");
    }
    let srv = Server::with_engine(collector, engine, watchdog, tokens);
    // systemd (Type=notify): ready once the listener serves and the first collection is done,
    // so `systemctl start` returns when /metrics has real data (src/sdnotify.rs).
    // Keep-alives from the start: systemd arms its watchdog when it starts the process, and the
    // first collection may take up to [agent] collector_timeout_seconds.
    let notifier = vmwarden::sdnotify::Notifier::from_env();
    if notifier.enabled() {
        notifier.spawn_watchdog();
        let (srv, notifier) = (srv.clone(), notifier.clone());
        tokio::spawn(async move {
            srv.metrics().await;
            notifier.send(&format!("READY=1\nSTATUS=serving on {addr}"));
        });
    }
    server::serve(srv, listener, tls, shutdown_signal()).await;
    notifier.send("STOPPING=1");
    tracing::info!("shutting down");
    ExitCode::SUCCESS
}

/// A collector for `collect` and `check` that asks the peers what runs there (for
/// running_on_several_nodes) with the cluster secret, when this process can read it and set up
/// TLS to them; else every peer is reported as not asked, with why.
fn peer_asking(c: Collector) -> Collector {
    let cfg = c.config();
    if cfg.cluster.peers.is_empty() {
        return c;
    }
    let secret = vmwarden::secret::Secret::load(&cfg.cluster.secret_file)
        .map_err(|e| format!("the peers are not asked: {e}"))
        .and_then(|s| {
            vmwarden::api::tls::init_client(&cfg.tls, None)
                .map(|()| s)
                .map_err(|e| format!("the peers are not asked: {e}"))
        });
    c.with_peer_secret(secret)
}

/// SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// glibc gives every thread that allocates its own arena, and after the first large free it raises
/// its mmap threshold so later multi-megabyte buffers stay resident in the heap. A scrape of a big
/// node builds megabytes of text: two arenas and a fixed mmap threshold hand that memory back to
/// the kernel when the scrape is done.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 * 1024);
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Openmetrics,
    Prometheus,
}

/// DRBD calls its handlers with the resource in the environment; the split brain is recorded
/// for the probe. Exit 0 even for events we do not handle: DRBD must not wait on us.
fn drbd_handler(config: Option<PathBuf>, event: &str) -> ExitCode {
    use vmwarden::probe::drbd::split_brain::{self, Marker};
    if event != "split-brain" {
        eprintln!("vmwarden drbd-handler: event {event:?} is not handled (only split-brain)");
        return ExitCode::SUCCESS;
    }
    let cfg = match hook_config(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmwarden drbd-handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let marker = match Marker::from_env(|k| std::env::var(k).ok(), now) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vmwarden drbd-handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::path::Path::new(&cfg.drbd.split_brain_dir);
    match split_brain::record(dir, &marker) {
        Ok(path) => {
            eprintln!(
                "vmwarden drbd-handler: DRBD split brain on {} recorded in {}; `vmwarden check` says what to do",
                marker.resource,
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "vmwarden drbd-handler: cannot record the split brain of {} in {}: {e}",
                marker.resource,
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    // Installed as /etc/libvirt/hooks/qemu (a symlink): libvirt calls `qemu DOMAIN OP SUBOP ...`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "qemu")
    {
        args.splice(0..1, ["vmwarden".into(), "hook".into(), "qemu".into()]);
    }
    let cli = Cli::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: journald and log files get plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    if let Command::LeaseHolder {
        pid_file,
        vm,
        holder,
    } = &cli.cmd
    {
        return lease_holder(pid_file, vm, holder);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmwarden: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.cmd {
        Command::Run { config } => {
            let cfg = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            rt.block_on(run_agent(cfg))
        }
        Command::Collect { config, format } => {
            let cfg = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let c = peer_asking(Collector::new(cfg));
            let reg = rt.block_on(c.render());
            let format = match format {
                Format::Openmetrics => vmwarden::negotiate::Format::OpenMetrics,
                Format::Prometheus => vmwarden::negotiate::Format::Classic,
            };
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if let Err(e) = reg.write(format, &mut out).and_then(|()| out.flush()) {
                // A closed pipe (`vmwarden collect | head`) is not worth a panic.
                eprintln!("vmwarden collect: cannot write the metrics: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Check { config } => {
            let cfg = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let c = peer_asking(Collector::new(cfg));
            let obs = rt.block_on(c.observe());
            let report = &obs.invariants;
            print!("{}", vmwarden::invariants::format_report(report));
            let (vms, needs_you) = vmwarden::watchdog::check::report(c.config(), &obs);
            print!("{vms}");
            let (maint, stale) = vmwarden::actions::lifecycle::maintenance::report(
                &vmwarden::actions::lifecycle::maintenance::all(&c.config().cluster.state_dir),
                vmwarden::actions::lifecycle::maintenance::now_unix(),
                c.config().lifecycle.maintenance_warn_seconds,
            );
            print!("{maint}");
            if report.violations.is_empty() && !needs_you && !stale {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Ctl {
            config,
            json,
            token_file,
            what,
        } => {
            let cfg = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            rt.block_on(vmwarden::api::ctl::run(cfg, json, token_file, what))
        }
        Command::Lock {
            config,
            vm,
            dry_run,
            force,
            op,
            target,
        } => {
            let cfg = match load_config(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            use vmwarden::actions::manual_lock::{self, ManualOp};
            use vmwarden::lock::LockOp;
            let op = match op {
                LockCliOp::Exclusive => ManualOp::Op(LockOp::AcquireExclusive),
                LockCliOp::Shared => ManualOp::Op(LockOp::AcquireShared),
                LockCliOp::ToShared => ManualOp::Op(LockOp::ConvertToShared),
                LockCliOp::ToExclusive => ManualOp::Op(LockOp::ConvertToExclusive),
                LockCliOp::Release => ManualOp::Op(LockOp::Release),
                LockCliOp::Status => ManualOp::Status,
            };
            match rt.block_on(manual_lock::run(
                &cfg,
                op,
                &target,
                vm.as_deref(),
                dry_run,
                force,
            )) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vmwarden lock: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DrbdHandler { config, event } => drbd_handler(config, &event),
        // Handled before the runtime is built (a holder lives as long as its VM: no threads).
        Command::LeaseHolder { .. } => ExitCode::FAILURE,
        Command::Hook {
            config,
            driver,
            domain,
            op,
            subop,
            extra: _,
        } => {
            if driver != "qemu" {
                return ExitCode::SUCCESS;
            }
            let cfg = match hook_config(config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vmwarden hook: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // libvirt passes the domain XML on stdin (bounded: a domain XML is kilobytes).
            let mut xml = String::new();
            use std::io::Read;
            let _ = std::io::stdin().take(4 << 20).read_to_string(&mut xml);
            match rt.block_on(vmwarden::hook::qemu(&cfg, &domain, &op, &subop, &xml)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    eprintln!("{msg}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
