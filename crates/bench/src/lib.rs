//! `oxkeeper bench`: a load generator that speaks the ZooKeeper wire protocol to any compatible server, so it
//! measures Apache ZooKeeper and oxkeeper alike.
//!
//! Built on `proto` directly: requests are encoded once per session and patched, pipelined, and written in
//! batches, so the generator is not the bottleneck; it reports its own CPU, the machine's and the server's
//! beside every figure to show it. `session` is the raw connection, `workload` the five workloads, `stats`
//! the HDR histograms, `report` the table/JSON/CSV output, `plot` the SVG of latency over time.

pub mod args;
pub mod error;
pub mod plot;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod session;
pub mod stats;
pub mod sysstat;
pub mod workload;

use std::process::ExitCode;

pub use args::BenchArgs;
pub use error::BenchError;
pub use report::Report;

use args::Workload;

/// Runs the workload `args` names on a runtime of its own and prints its report. Exit status: 0 when the run
/// had no error, 1 when it counted errors (error replies, lost connections), 2 when it could not run.
pub fn run(args: BenchArgs) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.common.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oxkeeper bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(run_workload(&args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("oxkeeper bench {}: {e}", args.workload.name());
            return ExitCode::from(2);
        }
    };
    if args.common.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.common.timeline {
        if let Err(e) = std::fs::write(path, report.timeline_csv()) {
            eprintln!("oxkeeper bench: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &args.common.plot {
        let written = plot::latency_svg(&report)
            .map_err(|e| e.to_string())
            .and_then(|svg| std::fs::write(path, svg).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("oxkeeper bench: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.error_total > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs the workload on the current runtime and returns its report (tests call this directly).
pub async fn run_workload(args: &BenchArgs) -> Result<Report, BenchError> {
    let c = &args.common;
    match &args.workload {
        Workload::Ops(a) => workload::ops::run(c, a).await,
        Workload::Sessions(a) => workload::sessions::run(c, a).await,
        Workload::Idle(a) => workload::idle::run(c, a).await,
        Workload::Expiry(a) => workload::expiry::run(c, a).await,
        Workload::Watch(a) => workload::watch::run(c, a).await,
    }
}
