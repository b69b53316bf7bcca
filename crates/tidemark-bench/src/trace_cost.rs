//! `tidemark bench --trace-cost`: what tracing across Kafka (feature `otel`) costs
//! a record on the sink path (no-op processor, one output per input, so both the
//! `process` span and the output's `traceparent` are paid), with three set-ups of
//! the pipeline's tracer provider (`Pipeline::with_tracer_provider`):
//!
//! - `off`: none (what `tidemark run` without an endpoint does): no span is made;
//! - `sampled out`: a provider with the `always_off` sampler;
//! - `sampled`: the `always_on` sampler, every span handed to a batch span
//!   processor whose exporter drops it (the SDK's cost, not a network's).
//!
//! Each run is a child process (`tidemark bench --trace-run MODE`, consuming the
//! parent's cluster; each starts from a fresh heap), the modes interleaved (off,
//! sampled out, sampled, off, …); each row is the median of `--runs`, with the CPU
//! per record the child measured around its run. Input records carry no
//! `traceparent`: each span is the root of a trace of its own, which is where the
//! sampler decides.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tidemark_testkit::builtin::Kind;
use tidemark_testkit::workload;

use super::report;
use super::scenarios::{self, Measurement};

/// How the child's pipeline traces (`--trace-run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceMode {
    /// No tracer provider.
    Off,
    /// A provider with the `always_off` sampler.
    SampledOut,
    /// The `always_on` sampler, spans exported to nowhere by a batch processor.
    Sampled,
}

impl TraceMode {
    fn label(self) -> &'static str {
        match self {
            TraceMode::Off => "off",
            TraceMode::SampledOut => "sampled-out",
            TraceMode::Sampled => "sampled",
        }
    }
}

/// The input topic and its partitions.
const TOPIC: &str = "bench-trace";
const PARTITIONS: i32 = 16;

/// Runs the comparison on `brokers` (`records` on [`TOPIC`], created and filled
/// here) and writes `trace.md` and `trace.csv` under `out`.
pub fn run(
    brokers: &str,
    create: &dyn Fn(&str, i32) -> anyhow::Result<()>,
    payload_bytes: usize,
    records: u64,
    runs: usize,
    out: &Path,
) -> anyhow::Result<()> {
    create(TOPIC, PARTITIONS)?;
    let mut w = workload::Workload::new(TOPIC, records, PARTITIONS);
    w.payload_bytes = payload_bytes;
    eprintln!("pre-filling {TOPIC}: {records} records, {PARTITIONS} partitions");
    workload::produce(brokers, &w, |_| {})?;
    scenarios::check_nothing_dropped(brokers, TOPIC, PARTITIONS)?;
    let modes = [TraceMode::Off, TraceMode::SampledOut, TraceMode::Sampled];
    for mode in modes {
        create(&format!("bench-trace-out-{}", mode.label()), PARTITIONS)?;
    }
    let mut all: Vec<Vec<Measurement>> = vec![Vec::new(); modes.len()];
    for _ in 0..runs.max(1) {
        for (i, mode) in modes.iter().enumerate() {
            let output = format!("bench-trace-out-{}", mode.label());
            let m = child(brokers, *mode, records, &output)?;
            report::progress(&m);
            all[i].push(m);
        }
    }
    let rows: Vec<Measurement> = all.into_iter().map(scenarios::median_of_runs).collect();
    let base = rows[0].cpu_us_per_record().unwrap_or(f64::NAN);
    let mut md = String::from(
        "| tracing | records/s (median) | slowest – fastest | CPU µs/record | over off |\n|---|---:|---:|---:|---:|\n",
    );
    let mut csv = String::from(
        "tracing,records,records_per_s,records_per_s_min,records_per_s_max,cpu_us_per_record\n",
    );
    for (mode, m) in modes.iter().zip(&rows) {
        let cpu = m.cpu_us_per_record().unwrap_or(f64::NAN);
        let (min, max) = m.spread.as_ref().map_or((f64::NAN, f64::NAN), |s| {
            (s.min_records_per_s, s.max_records_per_s)
        });
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} – {:.0} | {:.2} | {:+.2} µs |",
            mode.label(),
            m.records_per_sec(),
            min,
            max,
            cpu,
            cpu - base
        );
        let _ = writeln!(
            csv,
            "{},{},{:.0},{:.0},{:.0},{:.3}",
            mode.label(),
            m.records,
            m.records_per_sec(),
            min,
            max,
            cpu
        );
    }
    println!("{md}");
    std::fs::write(out.join("trace.md"), &md).context("writing trace.md")?;
    std::fs::write(out.join("trace.csv"), &csv).context("writing trace.csv")?;
    Ok(())
}

/// One run in a child process traced per `mode`.
fn child(
    brokers: &str,
    mode: TraceMode,
    records: u64,
    output: &str,
) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("this executable's path")?;
    let out = Command::new(exe)
        .args(["bench", "--brokers", brokers, "--trace-run", mode.label()])
        .args(["--records", &records.to_string(), "--trace-output", output])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("starting the child run")?;
    anyhow::ensure!(
        out.status.success(),
        "the {} run failed: {}",
        mode.label(),
        out.status
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line
        .lines()
        .find_map(|l| l.strip_prefix("trace-run "))
        .context("the child printed no result")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("the child's result")?;
    anyhow::ensure!(v.len() == 3, "the child's result: {line}");
    Ok(Measurement {
        scenario: format!("tidemark default, sink topic, tracing {}", mode.label()),
        processor: "noop".into(),
        records: v[0],
        busy: Duration::from_nanos(v[1]),
        cpu: Duration::from_nanos(v[2]),
        ..Default::default()
    })
}

/// The child's run (`--trace-run`): the default pipeline on [`TOPIC`] into `output`,
/// traced per `mode`; prints `trace-run RECORDS BUSY_NS CPU_NS` on stdout.
///
/// # Errors
/// The run's, or `mode` other than `off` in a build without the feature `otel`.
pub fn child_run(brokers: &str, records: u64, output: &str, mode: TraceMode) -> anyhow::Result<()> {
    #[cfg(feature = "otel")]
    let provider = provider(mode);
    #[cfg(not(feature = "otel"))]
    anyhow::ensure!(
        mode == TraceMode::Off,
        "--trace-cost needs the feature `otel`"
    );
    let m = scenarios::with_cpu(|| {
        scenarios::tidemark_default_with(brokers, TOPIC, Kind::Noop, records, Some(output), |p| {
            #[cfg(feature = "otel")]
            if let Some(provider) = &provider {
                return p.with_tracer_provider(provider);
            }
            p
        })
    })?;
    #[cfg(feature = "otel")]
    if let Some(provider) = provider {
        provider
            .shutdown()
            .context("the tracer provider's shutdown")?;
    }
    println!(
        "trace-run {} {} {}",
        m.records,
        m.busy.as_nanos(),
        m.cpu.as_nanos()
    );
    Ok(())
}

/// The tracer provider of `mode`: none for `off`, else the sampler `always_off`
/// or `always_on` and a batch processor whose exporter drops the spans.
#[cfg(feature = "otel")]
fn provider(mode: TraceMode) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    let sampler = match mode {
        TraceMode::Off => return None,
        TraceMode::SampledOut => Sampler::AlwaysOff,
        TraceMode::Sampled => Sampler::AlwaysOn,
    };
    Some(
        SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_batch_exporter(Discard)
            .build(),
    )
}

/// Drops every span it is given (the SDK's cost without a network's).
#[cfg(feature = "otel")]
#[derive(Debug)]
struct Discard;

#[cfg(feature = "otel")]
impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        drop(batch);
        Ok(())
    }
}
