//! `iscsi-gateway`: the binary that owns sockets, files and the io_uring ring.
//!
//! Commands:
//! * `serve [--config FILE | quick flags]`: run the target. With no arguments it serves
//!   the embedded default (target `iqn.2026-11.org.iscsi-gateway:default`, one 1 GiB
//!   sparse LUN file `./iscsi-gateway-data/lun0.img`, portal 127.0.0.1:3260).
//! * `check-config --config FILE`: print the resolved config (with derived serial/NAA).
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
//! Logging: `RUST_LOG` (tracing env-filter syntax) overrides `--log-level` (default info).
//! SIGINT/SIGTERM send `true` on the shutdown watch channel; the process exits 0 once
//! `server::run` returns.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
// Re-exported at the crate root so `server` (and `net/`) can say `crate::config`,
// `crate::block`, `crate::identity`.
#[allow(unused_imports)]
use gateway::{block, config, identity, server};

use config::{Config, QuickFlags, DEFAULT_CLI_DATA_DIR};

#[derive(Parser, Debug)]
#[command(
    name = "iscsi-gateway",
    version,
    about = "Userspace iSCSI target for DRBD devices, block devices and files"
)]
struct Cli {
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve iSCSI (the default command).
    Serve(ServeArgs),
    /// Validate a config file and print the resolved configuration.
    CheckConfig(CheckArgs),
}

#[derive(Args, Debug, Default)]
struct ServeArgs {
    /// TOML configuration file (exclusive with the quick flags).
    #[arg(long, short = 'c', conflicts_with_all = ["listen", "iqn", "lun", "advertise", "data_dir", "metrics_listen", "idle_poll_us"])]
    config: Option<PathBuf>,
    /// Portal to listen on, IP:PORT (repeatable). Default 127.0.0.1:3260.
    #[arg(long)]
    listen: Vec<String>,
    /// Target name. Default iqn.2026-11.org.iscsi-gateway:default.
    #[arg(long)]
    iqn: Option<String>,
    /// Backing store PATH[,size=SIZE][,serial=SERIAL] (repeatable; LUN 0, 1, ... in order).
    #[arg(long)]
    lun: Vec<String>,
    /// Address announced in SendTargets (repeatable). Default: the listen addresses.
    #[arg(long)]
    advertise: Vec<String>,
    /// Directory for default LUN files. Default ./iscsi-gateway-data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT; a bare IP uses port 9470).
    /// With --config: `[server] metrics_listen`. Default: off.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Poll connections for up to US microseconds before a connection thread sleeps:
    /// lower QD1 latency for CPU time (0..=1000). With --config: `[server] idle_poll_us`.
    /// Default: 0 (off).
    #[arg(long, value_name = "US")]
    idle_poll_us: Option<u32>,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c')]
    config: PathBuf,
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn serve_config(args: &ServeArgs) -> Result<Config, config::ConfigError> {
    match &args.config {
        Some(path) => Config::load(path),
        None => Config::from_flags(&QuickFlags {
            listen: args.listen.clone(),
            advertise: args.advertise.clone(),
            iqn: args.iqn.clone(),
            luns: args.lun.clone(),
            metrics_listen: args.metrics_listen.clone(),
            idle_poll_us: args.idle_poll_us,
            data_dir: Some(
                args.data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_CLI_DATA_DIR)),
            ),
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::CheckConfig(a) => match Config::load(&a.config) {
            Ok(cfg) => {
                print!("{}", cfg.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(a) => {
            let cfg = match serve_config(&a) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    // The control runtime: accept, signals, DRBD watchers. Connections run on their own
    // threads (`net::workers`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("gateway")
        .build()?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            }
            let _ = tx.send(true);
        });
        server::run(cfg, rx).await
    })
}
