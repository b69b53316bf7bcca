//! `tidemark`: produce a workload, run a parallel pipeline, show consumer lag, or run
//! the self-contained demo on an embedded cluster.

mod cluster;
mod demo;
mod lag;
#[cfg(feature = "otel")]
mod otel;
mod produce;
mod run;
mod serve;

use std::process::ExitCode;

/// The built-in processors (`--processor`).
use tidemark_testkit::builtin as processors;

use clap::{Parser, Subcommand};

/// Parallel batch processing of Kafka records, at-least-once per record.
#[derive(Parser)]
#[command(name = "tidemark", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Produce a JSON workload to a topic (created when missing).
    Produce(produce::Args),
    /// Consume a topic in a consumer group, process records in parallel, commit
    /// per-partition committable offsets.
    Run(Box<run::Args>),
    /// Show a group's committed offset, high watermark and lag per partition.
    Lag(lag::Args),
    /// Self-contained demo: embedded cluster, workload, pipeline, verification.
    Demo(demo::Args),
    /// Throughput against commit frequency, the limits and the sequential baselines.
    Bench(tidemark_bench::Args),
}

fn main() -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    let cli = Cli::parse();
    // librdkafka reports every failed connection attempt as an error; the CLI reports
    // what matters in one line, so its logs are off by default.
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,librdkafka=off,rdkafka=off"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry().with(log).init();
    // Several members often log to one terminal (or one test's output): tag each line.
    let _process = tracing::info_span!("member", pid = std::process::id()).entered();
    let result = match cli.command {
        Command::Produce(a) => produce::main(a),
        Command::Run(a) => run::main(*a),
        Command::Lag(a) => lag::main(a),
        Command::Demo(a) => demo::main(a),
        Command::Bench(a) => tidemark_bench::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its chain of causes.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A spinner with a message on a TTY; hidden otherwise.
pub(crate) fn spinner(message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{elapsed}] {pos} records ({per_sec})",
        )
        .expect("a valid template"),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}
