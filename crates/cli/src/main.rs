//! The `oxkeeper` binary. `oxkeeper` (or `oxkeeper server`) runs a member: standalone on 127.0.0.1:2181 with
//! its data in `./oxkeeper-data`, or as `--config zoo.cfg` says.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use oxkeeper_server::Config;

#[derive(Parser)]
#[command(
    name = "oxkeeper",
    version,
    about = "A ZooKeeper-compatible coordination service"
)]
struct Cli {
    /// A ZooKeeper zoo.cfg file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a member (the default).
    Server,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match &cli.config {
        None => Config::default(),
        Some(path) => match Config::from_zoo_cfg(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("oxkeeper: {e}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    match cli.command.unwrap_or(Command::Server) {
        Command::Server => run_server(config),
    }
}

fn run_server(config: Config) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oxkeeper: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = rt.block_on(oxkeeper_server::run(config, shutdown_signal()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxkeeper: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
