//! `tidemark bench --io`: IO-bound work, KPipe's matrix on tidemark's own rows. Every
//! record awaits a timer of 0, 100 or 1,000 µs (`io:MICROS`, an async processor),
//! unordered and key-ordered (10,000 keys), 8 partitions, at concurrency 256, 1,024,
//! 4,096 and 8,192; beside it tidemark's blocking no-op on the same topic (the
//! reference of the targets: 1,000 µs unordered ≥ 70 % of it, key-ordered ≥ 50 %).
//! The thread-pool rows on the same work are `--sleep-sweep`. With
//! `--peer-parallel-consumer JAR`, Confluent's Parallel Consumer runs the same matrix
//! (its function waiting the same time on its thread) at `maxConcurrency` 100,
//! 1,000 and 4,096.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use tidemark::{Config, Pipeline, ProcessingOrder};
use tidemark_testkit::memory::{peak_rss_kib, reset_peak_rss};
use tidemark_testkit::workload;

use super::report;
use super::scenarios::{self, Measurement};
use tidemark_testkit::builtin::{CliProcessor, IoProcessor, Kind};

const PARTITIONS: i32 = 8;
const MICROS: [u64; 3] = [0, 100, 1_000];
const CONCURRENCY: [usize; 4] = [256, 1_024, 4_096, 8_192];
/// The Parallel Consumer's `maxConcurrency` (threads) rows.
const PC_CONCURRENCY: [usize; 3] = [100, 1_000, 4_096];

/// One run: `kind` (`io:MICROS` async at `concurrency`, or the blocking no-op) over
/// every record of `topic`, in a fresh group, until idle.
fn run_once(
    brokers: &str,
    topic: &str,
    records: u64,
    kind: Kind,
    ordering: ProcessingOrder,
    concurrency: usize,
) -> anyhow::Result<Measurement> {
    reset_peak_rss();
    let mut config = Config::new(
        brokers,
        format!("bench-io-{:08x}", rand::random::<u32>()),
        [topic],
    );
    config.ordering = ordering;
    config.concurrency = concurrency;
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    let pipeline = match kind {
        Kind::Io { micros } => Pipeline::new_async(config, IoProcessor { micros }),
        _ => Pipeline::new(config, CliProcessor::new(kind, None).with_outputs(false)),
    };
    let summary = pipeline.run()?;
    anyhow::ensure!(
        summary.records == records,
        "processed {} of {records} records",
        summary.records
    );
    Ok(Measurement {
        scenario: format!("{ordering:?}, concurrency {concurrency}"),
        processor: scenarios::kind_name(kind),
        records: summary.records,
        busy: summary.busy,
        peak_rss_kib: peak_rss_kib(),
        ..Default::default()
    })
}

/// Runs the matrix on `brokers` over `records` a topic and writes `io.md` and
/// `io.csv` under `out` (topics `bench-io-*-<random>`, created here); with
/// `parallel_consumer` (the peer's jar) its rows too. Each row is the median of
/// `runs` runs.
pub fn run(
    brokers: &str,
    create: &dyn Fn(&str, i32) -> anyhow::Result<()>,
    payload_bytes: usize,
    records: u64,
    parallel_consumer: Option<&Path>,
    runs: usize,
    out: &Path,
) -> anyhow::Result<()> {
    let mut md = String::from(
        "| order | processor | concurrency | records/s (median) | slowest–fastest | vs no-op | CPU µs/record | peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut csv =
        String::from("ordering,processor,concurrency,records,runs,records_per_s,min_records_per_s,max_records_per_s,ratio_to_noop,cpu_us_per_record,peak_rss_mib\n");
    for (ordering, keys) in [
        (ProcessingOrder::Unordered, 0),
        (ProcessingOrder::Key, 10_000),
    ] {
        let topic = format!("bench-io-{keys}-{:08x}", rand::random::<u32>());
        create(&topic, PARTITIONS)?;
        let mut w = workload::Workload::new(&topic, records, PARTITIONS);
        w.payload_bytes = payload_bytes;
        w.keys = keys;
        eprintln!("pre-filling {topic}: {records} records, {PARTITIONS} partitions, {keys} keys");
        workload::produce(brokers, &w, |_| {})?;
        scenarios::check_nothing_dropped(brokers, &topic, PARTITIONS)?;
        let mut rows = vec![(
            1,
            scenarios::median_of(runs, || {
                run_once(brokers, &topic, records, Kind::Noop, ordering, 1)
            })
            .context("no-op")?,
        )];
        for micros in MICROS {
            for concurrency in CONCURRENCY {
                let kind = Kind::Io { micros };
                let m = scenarios::median_of(runs, || {
                    run_once(brokers, &topic, records, kind, ordering, concurrency)
                })
                .with_context(|| format!("io:{micros} at {concurrency}"))?;
                report::progress(&m);
                rows.push((concurrency, m));
            }
            let Some(jar) = parallel_consumer else {
                continue;
            };
            let pc_ordering = match ordering {
                ProcessingOrder::Key => "KEY",
                _ => "UNORDERED",
            };
            for concurrency in PC_CONCURRENCY {
                let kind = Kind::Io { micros };
                let mut m = scenarios::median_of(runs, || {
                    scenarios::parallel_consumer(
                        jar,
                        brokers,
                        &topic,
                        records,
                        kind,
                        0.0,
                        pc_ordering,
                        concurrency,
                    )
                })
                .with_context(|| format!("Parallel Consumer, {micros} µs at {concurrency}"))?;
                m.processor = format!("Parallel Consumer, wait {micros} µs");
                report::progress(&m);
                rows.push((concurrency, m));
            }
        }
        let noop = rows[0].1.records_per_sec();
        for (concurrency, m) in &rows {
            let ratio = m.records_per_sec() / noop;
            let cpu = m.cpu_us_per_record().unwrap_or(f64::NAN);
            let rss = m.peak_rss_kib as f64 / 1024.0;
            let concurrency = if m.processor == "noop" {
                "- (blocking)".to_string()
            } else {
                concurrency.to_string()
            };
            let (runs, slowest, fastest) = m.spread.map_or((1, f64::NAN, f64::NAN), |s| {
                (s.runs, s.min_records_per_s, s.max_records_per_s)
            });
            let _ = writeln!(
                md,
                "| {ordering:?} | {} | {concurrency} | {:.0} | {slowest:.0}–{fastest:.0} | {:.0}% | {cpu:.2} | {rss:.0} |",
                m.processor,
                m.records_per_sec(),
                ratio * 100.0
            );
            let _ = writeln!(
                csv,
                "{ordering:?},{},{concurrency},{},{runs},{:.0},{slowest:.0},{fastest:.0},{ratio:.3},{cpu:.3},{rss:.1}",
                m.processor,
                m.records,
                m.records_per_sec()
            );
        }
    }
    print!("{md}");
    std::fs::write(out.join("io.md"), md)?;
    std::fs::write(out.join("io.csv"), csv)?;
    println!("written: {}/io.md, io.csv", out.display());
    Ok(())
}
