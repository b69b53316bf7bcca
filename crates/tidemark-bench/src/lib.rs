//! tidemark's benchmark harness, what `tidemark bench` runs: throughput against
//! commit frequency, against the limits and the sequential baselines, measured side
//! by side in one run; the peers; worker scaling; IO-bound work (`--io`); scale and
//! memory (`--scale`); Kafka into PostgreSQL (`--postgres`). One scenario family
//! per module; results go to BENCHMARKS.md with the command that produced them.

mod io;
mod postgres;
mod report;
mod scale;
mod scenarios;
mod sleep;
pub mod trace_cost;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::CommitMode as RdCommitMode;
use tidemark::{CommitPolicy, ProcessingOrder};
use tidemark_testkit::{workload, Broker, EmbeddedCluster};

use self::scenarios::Measurement;
pub use self::scenarios::{kind_name, raw_poll};
use tidemark_testkit::builtin::Kind;

/// Measure throughput against commit frequency (embedded cluster by default).
#[derive(clap::Args)]
pub struct Args {
    /// Brokers to measure on (default: an embedded mock cluster in-process). The
    /// topics `bench-main`, `bench-small` and `bench-scale-P` must be fresh.
    #[arg(long)]
    brokers: Option<String>,
    /// Records pre-filled into the main topic. Default: 1,000,000 with --brokers;
    /// 400,000 on the embedded cluster, which keeps at most 5 MiB per partition
    /// (librdkafka's rdkafka_mock.c drops older records past it).
    #[arg(long)]
    records: Option<u64>,
    /// Partitions of the main topic.
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    /// Payload size of each record, bytes (JSON around random data).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// CPU-bound work per record, µs: the sha256 chain is calibrated to it.
    #[arg(long, default_value_t = 20.0)]
    target_us: f64,
    /// Records for the every-record (sync) run, which commits once per record.
    #[arg(long, default_value_t = 20_000)]
    every_record_records: u64,
    /// Also run worker scaling: workers 1..=2×CPUs over 1, 4 and 16 partitions.
    #[arg(long)]
    scaling: bool,
    /// Records per scaling run. Default: 200,000 with --brokers; 25,000 on the
    /// embedded cluster (one partition holds at most 5 MiB there).
    #[arg(long)]
    scaling_records: Option<u64>,
    /// Only the worker scaling.
    #[arg(long, requires = "scaling")]
    scaling_only: bool,
    /// The sentry_arroyo peer binary (built by scripts/bench.sh from peers/arroyo);
    /// without it the peer is not measured.
    #[arg(long)]
    peer_arroyo: Option<PathBuf>,
    /// The Confluent Parallel Consumer peer's jar (built by scripts/bench.sh from
    /// peers/parallel-consumer; Apache Kafka only, with --brokers): measured
    /// UNORDERED and KEY at maxConcurrency 2, 8, 32 and 128, beside tidemark's default
    /// and key-ordered rows.
    #[arg(long, requires = "brokers")]
    peer_parallel_consumer: Option<PathBuf>,
    /// Also measure the processing orders (key, partition, unordered) over 1, 10,
    /// 100 and 10,000 keys on 1 and 16 partitions, CPU-bound.
    #[arg(long)]
    ordering: bool,
    /// Only the processing orders.
    #[arg(long, requires = "ordering")]
    ordering_only: bool,
    /// Records per ordering run. Default: 200,000 with --brokers; 30,000 on the
    /// embedded cluster.
    #[arg(long)]
    ordering_records: Option<u64>,
    /// The headline only, in about 5 minutes: the two limits and tidemark with the
    /// default `Config` (nothing tuned) for the no-op and the CPU-bound processor,
    /// rows named `tidemark default`, and the sink path (no-op, a ~2 µs transform,
    /// a JSON transform) against the raw consume-produce loop; each row the median of
    /// three runs of at least 1 s (no-op and sink rows over 2,000,000 records on 64
    /// partitions unless --records, CPU-bound rows over 200,000 records on 16
    /// partitions, of topic `bench-cpu`).
    #[arg(long, conflicts_with_all = ["scaling", "ordering"])]
    quick: bool,
    /// With --quick, only these row groups (comma-separated): `noop` (the raw poll
    /// loop and the no-op row), `cpu` (the CPU-bound rows and their limits), `sink`
    /// (the sink row and the raw consume-produce loop), `light` (a ~2 µs transform
    /// on the sink path and in the loop), `json` (the JSON
    /// transform and its loop). For profiling one path (`perf record`); default:
    /// all.
    #[arg(long, requires = "quick", value_delimiter = ',', value_parser = ["noop", "cpu", "sink", "light", "json"])]
    quick_rows: Vec<String>,
    /// Only how the default `Config` scales: partitions 16, 64, 256 (--records
    /// each, default 200,000 with --brokers, 100,000 embedded), members 1, 2, 3
    /// (`tidemark run` processes in one group, CPU-bound), and the peak RSS of one
    /// `tidemark run` process as the backlog grows 10× (300,000 → 3,000,000
    /// records with --brokers, both more than librdkafka's prefetch holds;
    /// 40,000 → 400,000 embedded). Writes `scale.md` and `scale.csv`. Topics
    /// `bench-partitions-P`, `bench-members-M` and `bench-backlog-N` must be fresh.
    #[arg(long, conflicts_with_all = ["scaling", "ordering", "quick"])]
    scale: bool,
    /// Only workers on blocking work: every record sleeps --sleep-us (a blocking
    /// call simulated), unordered, 8 partitions, workers 2, 64, 256 and 1,024, each
    /// run about two seconds of its ideal rate (4,000 to 400,000 records). Writes
    /// `sleep.md` and `sleep.csv` (topics `bench-sleep-W-<random>`, created).
    #[arg(long, conflicts_with_all = ["scaling", "ordering", "quick", "scale"])]
    sleep_sweep: bool,
    /// Only IO-bound work (async processor `io:MICROS`): 0, 100 and 1,000 µs per
    /// record, unordered and key-ordered over 10,000 keys, 8 partitions,
    /// concurrency 256 to 8,192, beside the blocking no-op on the same topic; --records
    /// each (default 200,000), each row the median of --runs runs. With
    /// --peer-parallel-consumer, the Parallel Consumer's rows (maxConcurrency 100,
    /// 1,000, 4,096) too. Writes `io.md` and `io.csv` (topics
    /// `bench-io-*-<random>`, created).
    #[arg(long, conflicts_with_all = ["scaling", "ordering", "quick", "scale", "sleep_sweep"])]
    io: bool,
    /// Only Kafka into PostgreSQL at this libpq URL: a sequential consumer writing
    /// each poll batch (500 or 5,000 records) in one INSERT or COPY, against
    /// tidemark's PostgreSQL sink at several batch sizes and connection counts;
    /// --records (default 200,000) on 8 partitions, each row the median of --runs
    /// runs. Writes `postgres.md` and `postgres.csv` (topic `bench-pg-<random>`,
    /// tables `bench_*`, created and dropped).
    #[arg(long, value_name = "URL", conflicts_with_all = ["io", "scaling", "ordering", "quick", "scale", "sleep_sweep"])]
    postgres: Option<String>,
    /// Only what tracing across Kafka (feature `otel`) costs on the sink path: the
    /// default `Config`, no-op processor, one output per input, with no
    /// tracer provider, with a provider sampling nothing, and sampling
    /// everything (spans dropped by the exporter); each run in a child process,
    /// the three interleaved, --runs each over
    /// --records (default 1,000,000 with --brokers, 400,000 embedded) on topic `bench-trace` (16 partitions, created
    /// and filled). Writes `trace.md` and `trace.csv`.
    #[arg(long, conflicts_with_all = ["io", "scaling", "ordering", "quick", "scale", "sleep_sweep", "postgres"])]
    pub trace_cost: bool,
    /// Internal (`--trace-cost`'s child): one run traced per MODE.
    #[arg(long, hide = true, requires = "brokers", value_name = "MODE")]
    pub trace_run: Option<trace_cost::TraceMode>,
    /// Internal: the child run's output topic.
    #[arg(long, hide = true, requires = "trace_run")]
    trace_output: Option<String>,
    /// Runs per row of --io, --postgres and --trace-cost (the median is reported,
    /// with the slowest and fastest).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Sleep per record of --sleep-sweep, µs.
    #[arg(long, default_value_t = 1_000)]
    sleep_us: u64,
    /// Where the table, CSV and SVG files go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

/// CPU of the quick headline's light transform, µs a record (a sha256 chain
/// calibrated to it): the "~2 µs, one output per input" (re-keying,
/// enrichment from memory).
const LIGHT_US: f64 = 2.0;
/// Records of the quick headline's main topic: about 1.3 s of the raw poll loop on
/// the embedded cluster on this project's 2-core machines, and 31,250 a partition on
/// [`QUICK_PARTITIONS`], within the 5 MiB the mock cluster keeps per partition.
const QUICK_RECORDS: u64 = 2_000_000;
/// Partitions of the quick headline's main topic.
const QUICK_PARTITIONS: i32 = 64;
/// Records of the quick headline's CPU-bound topic: about 2 s at ~20 µs a record on 2
/// workers.
const QUICK_CPU_RECORDS: u64 = 200_000;
/// Runs behind each quick headline row (the median is reported, with the spread).
const QUICK_RUNS: usize = 3;
/// Shortest measurement of a quick headline row.
const QUICK_MIN_BUSY: Duration = Duration::from_secs(1);

/// The commit policies measured, with their labels, most frequent first.
fn policies() -> Vec<(CommitPolicy, &'static str)> {
    vec![
        (CommitPolicy::EveryBatch, "every-batch (async)"),
        (CommitPolicy::EveryMs(10), "every-ms:10"),
        (CommitPolicy::EveryMs(100), "every-ms:100"),
        (CommitPolicy::EveryMs(1_000), "every-ms:1000"),
        (CommitPolicy::EveryMs(5_000), "every-ms:5000"),
        (CommitPolicy::AtEnd, "at-end"),
    ]
}

pub fn main(mut a: Args) -> anyhow::Result<()> {
    if a.trace_run.is_some() {
        let (brokers, output) = (
            a.brokers
                .as_deref()
                .context("--trace-run needs --brokers")?,
            a.trace_output
                .as_deref()
                .context("--trace-run needs --trace-output")?,
        );
        return trace_cost::child_run(
            brokers,
            a.records.context("--trace-run needs --records")?,
            output,
            a.trace_run.unwrap_or(trace_cost::TraceMode::Off),
        );
    }
    let requested_records = a.records;
    let scale_records = a.records.unwrap_or(if a.brokers.is_some() {
        200_000
    } else {
        100_000
    });
    let records = a.records.unwrap_or(if a.quick {
        QUICK_RECORDS
    } else if a.brokers.is_some() {
        1_000_000
    } else {
        400_000
    });
    a.records = Some(records);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let embedded = match &a.brokers {
        Some(_) => None,
        None => Some(EmbeddedCluster::start(1)?),
    };
    let brokers = match (&a.brokers, &embedded) {
        (Some(b), _) => b.clone(),
        (None, Some(e)) => e.bootstrap_servers(),
        (None, None) => unreachable!("an embedded cluster runs when no brokers are given"),
    };
    let create = |topic: &str, partitions: i32| -> anyhow::Result<()> {
        match &embedded {
            Some(e) => e.create_topic(topic, partitions)?,
            None => {
                workload::ensure_topic(&brokers, topic, partitions)?;
            }
        }
        Ok(())
    };
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let payload = vec![b'x'; a.payload_bytes];
    let (rounds, per_record_us) = scenarios::calibrate(&payload, a.target_us);
    let cpu = Kind::Sha256 { rounds };
    // The quick headline's light transform: ~2 µs of CPU a record (issue 33).
    let light = Kind::Sha256 {
        rounds: scenarios::calibrate(&payload, LIGHT_US).0,
    };
    println!(
        "machine: {} CPUs; workers {workers}; sha256 chain calibrated: {rounds} rounds = {per_record_us:.1} µs/record on one core",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    if a.io {
        io::run(
            &brokers,
            &create,
            a.payload_bytes,
            requested_records.unwrap_or(200_000),
            a.peer_parallel_consumer.as_deref(),
            a.runs,
            &a.out,
        )?;
        return Ok(());
    }
    if let Some(url) = &a.postgres {
        postgres::run(
            &brokers,
            &create,
            a.payload_bytes,
            requested_records.unwrap_or(200_000),
            url,
            a.runs,
            &a.out,
        )?;
        return Ok(());
    }
    if a.sleep_sweep {
        sleep::run(&brokers, &create, a.payload_bytes, a.sleep_us, &a.out)?;
        return Ok(());
    }
    if a.trace_cost {
        // The embedded cluster keeps 5 MiB a partition: 25,000 records of 16.
        let records = requested_records.unwrap_or(if a.brokers.is_some() {
            1_000_000
        } else {
            400_000
        });
        trace_cost::run(&brokers, &create, a.payload_bytes, records, a.runs, &a.out)?;
        return Ok(());
    }

    if a.scale {
        let setup = scale::Setup {
            brokers: &brokers,
            create: &create,
            payload_bytes: a.payload_bytes,
            records: scale_records,
            backlog: if a.brokers.is_some() { 300_000 } else { 40_000 },
            cpu,
        };
        scale::run(&setup, &a.out)?;
        std::thread::sleep(Duration::from_millis(100));
        return Ok(());
    }

    if !a.scaling_only && !a.ordering_only {
        let fill = |topic: &str, records: u64, partitions: i32| -> anyhow::Result<()> {
            create(topic, partitions)?;
            let mut w = workload::Workload::new(topic, records, partitions);
            w.payload_bytes = a.payload_bytes;
            w.keys = 1024;
            eprintln!("pre-filling {topic}: {records} records, {partitions} partitions");
            workload::produce(&brokers, &w, |_| {})?;
            Ok(())
        };
        if a.quick {
            a.partitions = QUICK_PARTITIONS;
        }
        fill("bench-main", records, a.partitions)?;
        if !a.quick {
            fill("bench-small", a.every_record_records, a.partitions)?;
        }
        let ends = tidemark::high_watermarks(&brokers, "bench-main", Duration::from_secs(10))?;
        let total: i64 = ends.values().sum();
        eprintln!("bench-main holds {total} records: {ends:?}");
        anyhow::ensure!(
            total as u64 == records,
            "bench-main holds {total} records, not {records}: use a fresh topic"
        );
        scenarios::check_nothing_dropped(&brokers, "bench-main", a.partitions)?;
        let mut rows: Vec<Measurement> = Vec::new();
        if a.quick {
            quick(
                &a,
                &brokers,
                &fill,
                records,
                workers,
                (cpu, light),
                &mut rows,
            )?;
        } else {
            measure(&mut rows, || {
                Ok(scenarios::raw_poll(&brokers, "bench-main", a.partitions, records, false)?.0)
            })?;
            let (_, in_memory) =
                scenarios::raw_poll(&brokers, "bench-main", a.partitions, records, true)?;
            for kind in [Kind::Noop, cpu] {
                measure(&mut rows, || {
                    scenarios::in_memory(&in_memory, kind, workers, Duration::ZERO)
                })?;
            }
            drop(in_memory);
            for kind in [Kind::Noop, cpu] {
                measure(&mut rows, || {
                    scenarios::tidemark_default(&brokers, "bench-main", kind, records, None)
                })?;
            }
            // The sink path: one output per input, against a raw consume-produce loop.
            create("bench-out-raw", a.partitions)?;
            create("bench-out", a.partitions)?;
            measure(&mut rows, || {
                scenarios::raw_consume_produce(
                    &brokers,
                    "bench-main",
                    "bench-out-raw",
                    a.partitions,
                    records,
                    Kind::Noop,
                )
            })?;
            measure(&mut rows, || {
                scenarios::tidemark_default(
                    &brokers,
                    "bench-main",
                    Kind::Noop,
                    records,
                    Some("bench-out"),
                )
            })?;
        }
        for kind in [Kind::Noop, cpu] {
            if a.quick {
                break;
            }
            measure(&mut rows, || {
                scenarios::tidemark(
                    &brokers,
                    "bench-small",
                    kind,
                    workers,
                    CommitPolicy::EveryRecord,
                    ProcessingOrder::default(),
                    "every-record (sync)",
                    a.every_record_records,
                )
            })?;
            for (policy, label) in policies() {
                measure(&mut rows, || {
                    scenarios::tidemark(
                        &brokers,
                        "bench-main",
                        kind,
                        workers,
                        policy,
                        ProcessingOrder::default(),
                        label,
                        records,
                    )
                })?;
            }
            if let Some(jar) = &a.peer_parallel_consumer {
                for ordering in ["UNORDERED", "KEY"] {
                    for concurrency in [2, 8, 32, 128] {
                        measure(&mut rows, || {
                            scenarios::parallel_consumer(
                                jar,
                                &brokers,
                                "bench-main",
                                records,
                                kind,
                                a.target_us,
                                ordering,
                                concurrency,
                            )
                        })?;
                    }
                }
            }
            if let Some(peer) = &a.peer_arroyo {
                measure(&mut rows, || {
                    scenarios::arroyo(peer, &brokers, "bench-main", records, kind, workers)
                })?;
            }
            for mode in [RdCommitMode::Sync, RdCommitMode::Async] {
                measure(&mut rows, || {
                    scenarios::sequential(&brokers, "bench-main", a.partitions, records, kind, mode)
                })?;
            }
        }
        report::write_main(&a.out, &rows, &kind_label(cpu))?;
    }

    if a.scaling && !a.ordering_only {
        let mut rows = Vec::new();
        for partitions in [1, 4, 16] {
            let topic = format!("bench-scale-{partitions}");
            create(&topic, partitions)?;
            let n = a
                .scaling_records
                .unwrap_or(if a.brokers.is_some() { 200_000 } else { 25_000 });
            let mut w = workload::Workload::new(&topic, n, partitions);
            w.payload_bytes = a.payload_bytes;
            eprintln!("pre-filling {topic}: {n} records");
            workload::produce(&brokers, &w, |_| {})?;
            scenarios::check_nothing_dropped(&brokers, &topic, partitions)?;
            for w in 1..=(2 * workers) {
                let m = scenarios::with_cpu(|| {
                    scenarios::tidemark(
                        &brokers,
                        &topic,
                        cpu,
                        w,
                        CommitPolicy::EveryMs(100),
                        ProcessingOrder::default(),
                        &format!("every-ms:100, {partitions} partitions, {w} workers"),
                        n,
                    )
                })?;
                report::progress(&m);
                rows.push((partitions, w, m));
            }
        }
        report::write_scaling(&a.out, &rows)?;
    }
    if a.ordering {
        let n = a
            .ordering_records
            .unwrap_or(if a.brokers.is_some() { 200_000 } else { 30_000 });
        let mut rows = Vec::new();
        for partitions in [1, 16] {
            for keys in [1u64, 10, 100, 10_000] {
                let topic = format!("bench-keys-{partitions}-{keys}");
                create(&topic, partitions)?;
                let mut w = workload::Workload::new(&topic, n, partitions);
                w.payload_bytes = a.payload_bytes;
                w.keys = keys;
                eprintln!("pre-filling {topic}: {n} records, {keys} keys");
                workload::produce(&brokers, &w, |_| {})?;
                scenarios::check_nothing_dropped(&brokers, &topic, partitions)?;
                for (order, name) in [
                    (ProcessingOrder::Key, "key"),
                    (ProcessingOrder::Partition, "partition"),
                    (ProcessingOrder::Unordered, "unordered"),
                ] {
                    let m = scenarios::with_cpu(|| {
                        scenarios::tidemark(
                            &brokers,
                            &topic,
                            cpu,
                            workers,
                            CommitPolicy::EveryMs(100),
                            order,
                            &format!("{name}, {partitions} partitions, {keys} keys"),
                            n,
                        )
                    })?;
                    report::progress(&m);
                    rows.push((partitions, keys, name, m));
                }
            }
        }
        report::write_ordering(&a.out, &rows)?;
    }
    // Give librdkafka's background threads a moment before the cluster goes.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// The quick headline's rows, each the median of [`QUICK_RUNS`] runs of at least
/// [`QUICK_MIN_BUSY`]: the limits and tidemark's default `Config`, no-op (and the sink
/// path) over `bench-main`, CPU-bound over `bench-cpu`.
fn quick(
    a: &Args,
    brokers: &str,
    fill: &dyn Fn(&str, u64, i32) -> anyhow::Result<()>,
    records: u64,
    workers: usize,
    (cpu, light): (Kind, Kind),
    rows: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let (main, cpu_topic) = ("bench-main", "bench-cpu");
    let cpu_partitions = 16;
    let mut push = |m: Measurement| {
        report::progress(&m);
        rows.push(m);
    };
    let wants = |group: &str| a.quick_rows.is_empty() || a.quick_rows.iter().any(|g| g == group);
    // Each limit interleaved with the tidemark row it is the limit of (limit,
    // tidemark, limit, …), so a busy broker or machine disturbs both alike.
    let raw_poll = || Ok(scenarios::raw_poll(brokers, main, a.partitions, records, false)?.0);
    let raw = if wants("noop") {
        let (raw, noop) = scenarios::median_interleaved(QUICK_RUNS, raw_poll, || {
            scenarios::tidemark_default(brokers, main, Kind::Noop, records, None)
        })?;
        push(raw.clone());
        push(noop);
        Some(raw)
    } else if wants("cpu") {
        let raw = scenarios::median_of(QUICK_RUNS, raw_poll)?;
        push(raw.clone());
        Some(raw)
    } else {
        None
    };
    if wants("noop") {
        let (_, kept) = scenarios::raw_poll(brokers, main, a.partitions, records, true)?;
        push(scenarios::median_of(QUICK_RUNS, || {
            scenarios::in_memory(&kept, Kind::Noop, workers, QUICK_MIN_BUSY)
        })?);
    }
    if let (true, Some(raw)) = (wants("cpu"), &raw) {
        fill(cpu_topic, QUICK_CPU_RECORDS, cpu_partitions)?;
        scenarios::check_nothing_dropped(brokers, cpu_topic, cpu_partitions)?;
        let (_, kept) =
            scenarios::raw_poll(brokers, cpu_topic, cpu_partitions, QUICK_CPU_RECORDS, true)?;
        let (in_memory, cpu_bound) = scenarios::median_interleaved(
            QUICK_RUNS,
            || scenarios::in_memory(&kept, cpu, workers, QUICK_MIN_BUSY),
            || scenarios::tidemark_default(brokers, cpu_topic, cpu, QUICK_CPU_RECORDS, None),
        )?;
        drop(kept);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let counted = scenarios::counted_limit(&in_memory, raw, cores);
        push(in_memory);
        if let Some(counted) = counted {
            push(counted);
        }
        push(cpu_bound);
    }
    // The sink path: one output per input, against a raw consume-produce loop; then
    // a light transform on it (~2 µs of CPU a record, like re-keying or enrichment
    // from memory) and a JSON one (parsed, a field added, written back), each with
    // the same work inside the raw consume-produce loop as its limit.
    for (group, kind, raw_out, out) in [
        ("sink", Kind::Noop, "bench-out-raw", "bench-out"),
        ("light", light, "bench-out-light-raw", "bench-out-light"),
        ("json", Kind::Json, "bench-out-json-raw", "bench-out-json"),
    ] {
        if !wants(group) {
            continue;
        }
        fill(raw_out, 0, a.partitions)?;
        fill(out, 0, a.partitions)?;
        let (raw_sink, sink) = scenarios::median_interleaved(
            QUICK_RUNS,
            || scenarios::raw_consume_produce(brokers, main, raw_out, a.partitions, records, kind),
            || scenarios::tidemark_default(brokers, main, kind, records, Some(out)),
        )?;
        push(raw_sink);
        push(sink);
    }
    Ok(())
}

fn kind_label(kind: Kind) -> String {
    scenarios::kind_name(kind)
}

/// Runs `run` (its process CPU time recorded), prints its progress line and keeps
/// its row.
fn measure(
    rows: &mut Vec<Measurement>,
    run: impl FnOnce() -> anyhow::Result<Measurement>,
) -> anyhow::Result<()> {
    let m = scenarios::with_cpu(run)?;
    report::progress(&m);
    rows.push(m);
    Ok(())
}
