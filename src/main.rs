use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vmwarden::collect::Collector;
use vmwarden::config::Config;
use vmwarden::server::{self, Server};

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
    let srv = Server::new(Collector::new(cfg));
    server::serve(srv, listener, shutdown_signal()).await;
    tracing::info!("shutting down");
    ExitCode::SUCCESS
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

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vmwarden: {e}");
                    return ExitCode::from(2);
                }
            };
            rt.block_on(run_agent(cfg))
        }
        Command::Collect { config, format } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vmwarden: {e}");
                    return ExitCode::from(2);
                }
            };
            let c = Collector::new(cfg);
            let text = rt.block_on(c.render());
            match format {
                Format::Openmetrics => print!("{text}"),
                Format::Prometheus => print!("{}", vmwarden::metrics::to_prometheus_text(&text)),
            }
            ExitCode::SUCCESS
        }
        Command::Check { config } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vmwarden: {e}");
                    return ExitCode::from(2);
                }
            };
            let c = Collector::new(cfg);
            let snap = rt.block_on(c.collect());
            let map = vmwarden::node::NodeMap::build(&snap);
            // No migration journal yet: no domain is known to be migrating.
            let report = vmwarden::invariants::check(&map, &Default::default());
            print!("{}", vmwarden::invariants::format_report(&report));
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
