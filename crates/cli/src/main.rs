//! The `oxkeeper` binary. `oxkeeper` (or `oxkeeper server`) runs a member: standalone on 127.0.0.1:2181 with
//! its data in `./oxkeeper-data`, or as `--config zoo.cfg` says. `oxkeeper shell` is ZooKeeper's zkCli.sh;
//! `oxkeeper bench` measures any ZooKeeper-compatible server.

mod shell;

/// jemalloc instead of glibc's malloc. The server allocates many small objects from several threads
/// (decoded requests and commands, tree nodes, replies): with glibc, 1M pipelined creates spent a third of the
/// server's time in `_int_malloc`, `malloc_consolidate` and `free` (11 µs of CPU per create, 108k/s here);
/// with jemalloc 6.1 µs and 194k/s, with the same RSS per node and less per idle session (4.3 vs 4.7 KB).
/// (mimalloc was as fast but took 24 MiB more at start and more per node and per session.)
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Starts jemalloc's background thread, which gives memory freed by the server back to the OS after
/// `dirty_decay_ms` (10 s). Without it jemalloc purges only when the process allocates again, so a server
/// that went quiet after a burst kept its peak: 19,000 idle sessions closing at once took RSS from 60 to
/// 154 MiB, and it stayed at 103 MiB; with the thread it was back at 61 MiB within 10 s.
fn return_freed_memory_in_the_background() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("oxkeeper: jemalloc's background thread not started ({e}): freed memory is returned late");
    }
}

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
    /// Turn an Apache ZooKeeper data directory (3.4-3.9: version-2/snapshot.* and log.*) into the oxkeeper
    /// data directory of --config (or ./oxkeeper-data), which must be empty. Stop ZooKeeper first.
    ImportZookeeper {
        /// ZooKeeper's dataDir (or its version-2 directory).
        zookeeper_data_dir: PathBuf,
        /// ZooKeeper's dataLogDir, if it is not its dataDir.
        #[arg(long)]
        zookeeper_data_log_dir: Option<PathBuf>,
    },
    /// ZooKeeper's shell, as zkCli.sh: `oxkeeper shell [-server host:port] [cmd args...]`
    /// (`oxkeeper shell --help` for its options and commands).
    #[command(disable_help_flag = true)]
    Shell {
        /// zkCli.sh's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Measure a ZooKeeper-compatible server (oxkeeper or Apache ZooKeeper) over the wire:
    /// `oxkeeper bench --server host:port ops --op set --sessions 32` (`oxkeeper bench --help`).
    Bench(oxkeeper_bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Some((ZooKeeper's dataDir, its dataLogDir)) for import-zookeeper, None to run a member.
    let import_from = match cli.command.unwrap_or(Command::Server) {
        Command::Shell { args } => {
            // The shell's output is parsed by scripts: no client logs unless asked for.
            let filter = std::env::var("OXKEEPER_SHELL_LOG").unwrap_or_else(|_| "off".into());
            init_tracing(tracing_subscriber::EnvFilter::new(filter));
            return shell::main(&args);
        }
        Command::Bench(args) => {
            init_tracing(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            );
            return oxkeeper_bench::run(args);
        }
        Command::Server => None,
        Command::ImportZookeeper {
            zookeeper_data_dir,
            zookeeper_data_log_dir,
        } => Some((zookeeper_data_dir, zookeeper_data_log_dir)),
    };
    init_tracing(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,openraft=warn".into()),
    );
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
    match import_from {
        None => run_server(config),
        Some((data_dir, log_dir)) => import(&data_dir, log_dir.as_deref(), &config),
    }
}

fn init_tracing(filter: tracing_subscriber::EnvFilter) {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn import(
    zk_data_dir: &std::path::Path,
    zk_log_dir: Option<&std::path::Path>,
    config: &Config,
) -> std::process::ExitCode {
    match oxkeeper_server::import::import_zookeeper(zk_data_dir, zk_log_dir, config) {
        Ok(r) => {
            for note in &r.notes {
                eprintln!("note: {note}");
            }
            println!(
                "imported {} nodes and {} sessions from {} and {} log file(s) ({} transactions replayed); last zxid 0x{:x}",
                r.nodes,
                r.sessions,
                r.zookeeper_snapshot.display(),
                r.logs.len(),
                r.txns_applied,
                r.last_zxid
            );
            match r.digest_verified_at {
                Some(z) => {
                    println!("ZooKeeper's tree digest matches the imported tree (at zxid 0x{z:x})")
                }
                None => println!("(the data carries no ZooKeeper digest to check against)"),
            }
            println!("wrote {}", r.snapshot.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oxkeeper import-zookeeper: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run_server(config: Config) -> std::process::ExitCode {
    return_freed_memory_in_the_background();
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
        Ok(()) => {
            // Everything acknowledged is already durable and a shutdown closes no session, so there is nothing
            // to flush: exit now instead of waiting for the runtime to drop the whole state and for a snapshot
            // being serialized (seconds at a million nodes). An unfinished snapshot leaves only a temporary
            // file, which the next one overwrites.
            std::process::exit(0)
        }
        Err(e @ oxkeeper_server::server::ServerError::Failed(_)) => {
            // Exit at once, as `Ok` does: dropping the runtime would wait for whatever stopped (the apply
            // thread may be inside an fdatasync that never returns). Status 2 (a failed start is 1), as a
            // failed log has exited since the log was built.
            eprintln!("oxkeeper: {e}");
            std::process::exit(2)
        }
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

#[cfg(test)]
mod tests {
    /// The test binary has the same global allocator as the server.
    #[test]
    fn freed_memory_is_returned_by_a_background_thread() {
        tikv_jemalloc_ctl::background_thread::write(false).expect("stop the thread");
        super::return_freed_memory_in_the_background();
        assert!(tikv_jemalloc_ctl::background_thread::read().expect("read the setting"));
    }

    /// Built without cache-oblivious placement: a large allocation (a chunk arena of the DataTree) takes
    /// no page beyond its size class (Cargo.toml, `disable_cache_oblivious`).
    #[test]
    fn large_allocations_take_no_extra_page() {
        // SAFETY: the name is a NUL-terminated mallctl name whose value is a bool.
        let on = unsafe { tikv_jemalloc_ctl::raw::read::<bool>(b"opt.cache_oblivious\0") };
        assert_eq!(on, Ok(false));
    }
}
