//! `oxkeeper bench` before the `oxkeeper` binary has it:
//! `cargo run --release -p oxkeeper-bench --example bench -- --server 127.0.0.1:2181 ops --op get`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "A load generator for ZooKeeper-compatible servers"
)]
struct Cli {
    #[command(flatten)]
    bench: oxkeeper_bench::BenchArgs,
}

fn main() -> std::process::ExitCode {
    oxkeeper_bench::run(Cli::parse().bench)
}
