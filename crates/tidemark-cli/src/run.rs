//! `tidemark run`.

use std::time::Duration;

use anyhow::Context;
use tidemark::{Config, FileOffsetStore, Pipeline, RunSummary, SinkConfig, TopicPartition};

use crate::processors::{CliProcessor, IoProcessor, Kind};

/// `--producer-context` ([`tidemark::ProducerContext`]).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProducerContextArg {
    Parent,
    Link,
}

/// Where outputs go: `none`, `topic:NAME` or `postgres:URL` (the table from
/// `--sink-table`, filled in by `run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkArg(pub SinkConfig);

impl std::str::FromStr for SinkArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(SinkArg(SinkConfig::None));
        }
        if let Some(t) = s.strip_prefix("topic:").filter(|t| !t.is_empty()) {
            return Ok(SinkArg(SinkConfig::Topic { topic: t.into() }));
        }
        // `postgres:URL`, where URL is itself postgres://… or postgresql://… or
        // key=value pairs; a bare postgres://… URL is taken whole.
        let url = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Some(s)
        } else {
            s.strip_prefix("postgres:").filter(|u| !u.is_empty())
        };
        match url {
            Some(url) => Ok(SinkArg(SinkConfig::Postgres(tidemark::PostgresSink::new(
                url, "",
            )))),
            None => Err(format!(
                "expected none, topic:NAME or postgres:URL, got {s:?}"
            )),
        }
    }
}

/// Where a free consumer keeps its offsets: `file:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetStoreArg(pub std::path::PathBuf);

impl std::str::FromStr for OffsetStoreArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(OffsetStoreArg(path.into())),
            _ => Err(format!("expected file:PATH, got {s:?}")),
        }
    }
}

/// Run a parallel pipeline in a consumer group, or as a free consumer of assigned
/// partitions (--assign, --offset-store).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
    /// Input topic (group members).
    #[arg(long, required_unless_present = "assign", conflicts_with = "assign")]
    topic: Option<String>,
    /// Consumer group.
    #[arg(long, required_unless_present = "assign", conflicts_with = "assign")]
    group: Option<String>,
    /// Free consumer: read these partitions, TOPIC:PARTITION[,...], without a group.
    /// Needs --offset-store.
    #[arg(long, value_delimiter = ',', requires = "offset_store")]
    assign: Vec<TopicPartition>,
    /// Free consumer: where offsets are loaded from and saved to, file:PATH (a
    /// durable file, written atomically).
    #[arg(long, requires = "assign")]
    offset_store: Option<OffsetStoreArg>,
    /// Processor: noop, sha256:ROUNDS, sleep:MICROS (blocks the worker MICROS µs per
    /// record), io:MICROS (async: awaits a timer of MICROS µs per record, then like
    /// noop) or json.
    #[arg(long, default_value = "noop")]
    processor: Kind,
    /// Worker threads (default: number of CPUs); with io:MICROS, the async
    /// runtime's threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Records an async processor (io:MICROS) processes at once (Config::concurrency,
    /// default 1,024).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Outputs: none, or topic:NAME (created when missing; one output per input with
    /// headers tidemark-src-partition and tidemark-src-offset).
    ///
    /// Or postgres:URL (a libpq URL or key=value string): one row per output in
    /// the table --sink-table (created when missing), keyed by the input's topic,
    /// partition and offset, so a record processed again writes nothing twice; an
    /// input is complete once its rows are committed.
    #[arg(long, default_value = "none")]
    sink: SinkArg,
    /// The PostgreSQL sink's table, NAME or SCHEMA.NAME (needed with --sink postgres:URL).
    #[arg(long)]
    sink_table: Option<String>,
    /// The PostgreSQL sink: most rows per INSERT (default 1000).
    #[arg(long)]
    sink_batch_rows: Option<usize>,
    /// The PostgreSQL sink: connections writing at once (default 4).
    #[arg(long)]
    sink_connections: Option<usize>,
    /// Delivery guarantee: at-least-once (commit after processing, the default),
    /// at-most-once (commit each polled batch before processing it) or exactly-once
    /// (outputs and offsets in one transaction; needs --sink topic:NAME).
    #[arg(long, default_value = "at-least-once")]
    delivery: tidemark::Delivery,
    /// Exactly-once: the sink producer's transactional.id. Give a restarted instance
    /// the id it had, so its first transaction fences and aborts what the crashed one
    /// left open (default: a fresh random id per start).
    #[arg(long, requires = "sink")]
    transactional_id: Option<String>,
    /// Commit policy: every-ms:N, every-records:N, every-batch, every-record, at-end or
    /// auto:N (librdkafka's auto-commit every N ms of the stored committable offsets).
    #[arg(long, default_value = "every-ms:1000")]
    commit: tidemark::CommitPolicy,
    /// Interval between commits, ms (shorthand for --commit every-ms:N).
    #[arg(long, conflicts_with = "commit")]
    commit_interval_ms: Option<u64>,
    /// Policy-driven commits: async (default) or sync.
    #[arg(long, default_value = "async")]
    commit_mode: tidemark::CommitMode,
    /// Stop gracefully once caught up: joined with an assignment (an empty one
    /// counts), every assigned partition read to its end (high watermark), none
    /// paused, nothing in flight or waiting for a retry, and no new record for this
    /// many seconds (see LifecycleConfig::exit_when_idle).
    #[arg(long)]
    exit_when_idle: Option<f64>,
    /// Where partitions without a committed offset start: beginning, end, offset:N or
    /// timestamp:MS (overrides --auto-offset-reset for them).
    #[arg(long)]
    start: Option<tidemark::StartPosition>,
    /// Where a group with no committed offset starts: earliest (default), latest, or
    /// error (stop with an error).
    #[arg(long, value_parser = ["earliest", "latest", "error"])]
    auto_offset_reset: Option<String>,
    /// Back-pressure: most records polled and not yet complete (default 20000).
    #[arg(long)]
    max_in_flight_records: Option<usize>,
    /// Commit-lag bound: most records polled and not yet covered by a confirmed
    /// commit (default 100000; without an offset map, the most a crash makes the next
    /// owner process again). Must be at least --max-in-flight-records.
    #[arg(long)]
    max_uncommitted_records: Option<usize>,
    /// Back-pressure: most key + payload bytes polled and not yet processed.
    #[arg(long)]
    max_in_flight_bytes: Option<usize>,
    /// Longest a revoke or a graceful stop waits for in-flight records, ms.
    #[arg(long)]
    drain_timeout_ms: Option<u64>,
    /// Which records may run at the same time: key (records of one key one at a
    /// time, in offset order; the default), partition (one record at a time per
    /// partition) or unordered.
    #[arg(long, default_value = "key")]
    ordering: tidemark::ProcessingOrder,
    /// Attempts per record for retriable failures, the first included (1: no
    /// retries). Default 3.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Backoff between attempts, INITIAL:MAX in ms (doubling, with jitter).
    /// Default 100:10000.
    #[arg(long, value_parser = parse_backoff)]
    retry_backoff_ms: Option<(u64, u64)>,
    /// Dead-letter topic (created when missing): records that fail permanently or
    /// exhaust their attempts go there with their coordinates and error in headers,
    /// and processing goes on.
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// Test-only: records whose offset is a multiple of K fail retriably on their
    /// first N attempts in this process (K:N).
    #[arg(long, hide = true, value_parser = parse_backoff)]
    test_flaky: Option<(u64, u64)>,
    /// Test-only: the record at partition P, offset O fails retriably for as long
    /// as this process lives (P:O).
    #[arg(long, hide = true, value_parser = parse_backoff)]
    test_hold: Option<(u64, u64)>,
    /// Test-only: processing the record at partition P, offset O sleeps for as long
    /// as this process lives (P:O).
    #[arg(long, hide = true, value_parser = parse_backoff)]
    test_sleep: Option<(u64, u64)>,
    /// Byte budget of the offset map each commit carries in its metadata (the
    /// records completed above the committed offset, which the partition's next
    /// owner skips). Default 4096 (the broker's `offset.metadata.max.bytes`); 0
    /// turns it off.
    #[arg(long)]
    offset_map_max_bytes: Option<usize>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics and health probes at
    /// /health/live and /health/ready (200 yes, 503 no).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Export a `process {topic}` span per record over OTLP/HTTP to this base URL
    /// (e.g. http://127.0.0.1:4318; `/v1/traces` is appended), continuing the W3C
    /// `traceparent` of each input and writing its own on every output and dead
    /// letter. Without it, `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns the export on;
    /// `OTEL_SERVICE_NAME` (default tidemark) and `OTEL_TRACES_SAMPLER` are honoured.
    /// Needs the CLI's `otel` feature (on by default).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// How each record's `process` span relates to the producer's span of its
    /// `traceparent`: parent (one trace end to end) or link (a new trace linked to
    /// the producer's).
    #[arg(long, value_name = "parent|link", default_value = "parent")]
    producer_context: ProducerContextArg,
    /// A record in flight longer than this many ms is logged once and counted as
    /// stuck (shown in the progress line). Default 60000.
    #[arg(long)]
    stuck_threshold_ms: Option<u64>,
    /// How often the high watermarks behind the lag metrics are refreshed, ms
    /// (default 5000; 0: no lag metrics).
    #[arg(long)]
    lag_refresh_ms: Option<u64>,
    /// Extra librdkafka consumer property, `key=value` (repeatable; the consumer's
    /// only: settings every client needs go in --client-config). A value may read
    /// `${env:NAME}`.
    #[arg(short = 'X', value_parser = parse_property)]
    property: Vec<(String, String)>,
}

fn parse_backoff(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected A:B, got {s:?}"))?;
    let n = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{s:?}: expected two non-negative integers"))
    };
    Ok((n(a)?, n(b)?))
}

/// One `-X key=value` (`${env:NAME}` expanded); the error never repeats the value.
fn parse_property(s: &str) -> Result<(String, String), String> {
    let parsed = tidemark::Properties::parse(s).map_err(|e| e.to_string())?;
    parsed
        .iter()
        .next()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .ok_or_else(|| "expected key=value".to_string())
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let connection = a.cluster.connection()?;
    let mut config = match (&a.group, &a.topic) {
        (Some(group), Some(topic)) => Config::new(&connection.brokers, group, [topic]),
        _ => Config::free(&connection.brokers, a.assign.clone()),
    };
    config.client_properties = connection.properties.clone();
    if let Some(w) = a.workers {
        config.workers = w;
    }
    if let Some(n) = a.concurrency {
        config.concurrency = n;
    }
    config.commits.policy = match a.commit_interval_ms {
        Some(ms) => tidemark::CommitPolicy::EveryMs(ms),
        None => a.commit,
    };
    config.commits.mode = a.commit_mode;
    config.delivery = a.delivery;
    config.commits.transactional_id = a.transactional_id;
    config.start_position = a.start;
    config.lifecycle.exit_when_idle = a
        .exit_when_idle
        .map(std::time::Duration::try_from_secs_f64)
        .transpose()
        .map_err(|_| {
            anyhow::anyhow!("--exit-when-idle: expected a number of seconds, at least 0")
        })?;
    config.sink = a.sink.0;
    match &mut config.sink {
        SinkConfig::Postgres(sink) => {
            sink.table = a
                .sink_table
                .clone()
                .context("--sink postgres:URL needs --sink-table NAME")?;
            if let Some(n) = a.sink_batch_rows {
                sink.batch_rows = n;
            }
            if let Some(n) = a.sink_connections {
                sink.connections = n;
            }
        }
        _ if a.sink_table.is_some()
            || a.sink_batch_rows.is_some()
            || a.sink_connections.is_some() =>
        {
            anyhow::bail!(
                "--sink-table, --sink-batch-rows and --sink-connections need --sink postgres:URL"
            )
        }
        _ => {}
    }
    if let Some(n) = a.max_in_flight_records {
        config.flow.max_in_flight_records = n;
    }
    if let Some(n) = a.max_uncommitted_records {
        config.flow.max_uncommitted_records = n;
    }
    if let Some(n) = a.max_in_flight_bytes {
        config.flow.max_in_flight_bytes = n;
    }
    if let Some(ms) = a.drain_timeout_ms {
        config.lifecycle.drain_timeout = std::time::Duration::from_millis(ms);
    }
    config.ordering = a.ordering;
    if let Some(n) = a.max_attempts {
        config.failures.retry.max_attempts = n;
    }
    if let Some((initial, max)) = a.retry_backoff_ms {
        config.failures.retry.initial_backoff = std::time::Duration::from_millis(initial);
        config.failures.retry.max_backoff = std::time::Duration::from_millis(max);
    }
    config.failures.dead_letter = a.dead_letter_topic.map(tidemark::DeadLetterConfig::new);
    if let Some(n) = a.offset_map_max_bytes {
        config.commits.offset_map_max_bytes = n;
    }
    if let Some(ms) = a.stuck_threshold_ms {
        config.observability.stuck_threshold = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = a.lag_refresh_ms {
        config.observability.lag_refresh = std::time::Duration::from_millis(ms);
    }
    config.observability.producer_context = match a.producer_context {
        ProducerContextArg::Parent => tidemark::ProducerContext::Parent,
        ProducerContextArg::Link => tidemark::ProducerContext::Link,
    };
    config.consumer_properties.extend(a.property);
    if let Some(reset) = a.auto_offset_reset {
        config
            .consumer_properties
            .insert("auto.offset.reset".into(), reset);
    }
    config.validate()?;
    let store = match &a.offset_store {
        Some(OffsetStoreArg(path)) => Some(
            FileOffsetStore::open(path)
                .with_context(|| format!("opening the offset store {}", path.display()))?,
        ),
        None => None,
    };
    // The sink and dead-letter topics get as many partitions as the input (when they
    // must be created).
    let outputs: Vec<String> = match &config.sink {
        SinkConfig::Topic { topic } => vec![topic.clone()],
        _ => Vec::new(),
    }
    .into_iter()
    .chain(
        config
            .failures
            .dead_letter
            .as_ref()
            .map(|d| d.topic.clone()),
    )
    .collect();
    if !outputs.is_empty() {
        let input = &config.input_topics()[0];
        let partitions = tidemark::topic_partitions(&connection, input, Duration::from_secs(10))
            .with_context(|| format!("reaching {}", connection.brokers))?
            .ok_or_else(|| tidemark::Error::UnknownTopic(input.clone()))?;
        for topic in &outputs {
            // The cluster's default.replication.factor (-1, KIP-464): a replication factor
            // of 1 would lose outputs with one broker on a multi-node cluster.
            tidemark::ensure_topic(&connection, topic, partitions, -1)
                .with_context(|| format!("creating topic {topic}"))?;
        }
    }
    let processor = CliProcessor::new(a.processor, a.test_flaky)
        .with_outputs(!matches!(config.sink, SinkConfig::None))
        .with_test_hold(a.test_hold.map(|(p, o)| (p as i32, o as i64)))
        .with_test_sleep(a.test_sleep.map(|(p, o)| (p as i32, o as i64)));
    let pipeline = match a.processor {
        Kind::Io { micros } => Pipeline::new_async(config, IoProcessor { micros }),
        _ => Pipeline::new(config, processor),
    };
    #[cfg(feature = "otel")]
    let (pipeline, export) = match crate::otel::start(a.otlp_endpoint.as_deref())? {
        Some(export) => (
            pipeline.with_tracer_provider(&export.provider),
            Some(export),
        ),
        None => (pipeline, None),
    };
    #[cfg(not(feature = "otel"))]
    anyhow::ensure!(
        a.otlp_endpoint.is_none(),
        "--otlp-endpoint: this tidemark was built without the `otel` feature"
    );
    let summary = execute(pipeline, store, "processing", a.metrics_addr);
    #[cfg(feature = "otel")]
    if let Some(export) = export {
        export.shutdown();
    }
    print_summary(&summary?);
    Ok(())
}

/// Runs a pipeline with Ctrl-C / SIGTERM wired to a graceful stop and a spinner on a
/// TTY.
pub fn execute(
    mut pipeline: Pipeline,
    store: Option<FileOffsetStore>,
    label: &str,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<RunSummary> {
    if let Some(store) = store {
        pipeline = pipeline.with_offset_store(store);
    }
    if let Some(addr) = metrics_addr {
        crate::serve::start(addr, pipeline.metrics())?;
    }
    pipeline
        .shutdown_handle()
        .stop_on_signals()
        .context("installing the signal handler")?;
    let progress = pipeline.metrics();
    let bar = crate::spinner(label);
    let label = label.to_string();
    let ticker_bar = bar.clone();
    let ticker = std::thread::spawn(move || {
        let mut stuck = 0;
        while !ticker_bar.is_finished() {
            ticker_bar.set_position(progress.completed());
            let now = progress.snapshot().stuck_records;
            if now != stuck {
                stuck = now;
                ticker_bar.set_message(format!("{label} ({stuck} stuck records, see the log)"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let result = pipeline.run();
    bar.finish_and_clear();
    let _ = ticker.join();
    Ok(result?)
}

/// Records, rate and committed offset per partition.
pub fn print_summary(s: &RunSummary) {
    println!(
        "processed {} records: {:.0} records/s over {:.2} s busy ({:.2} s in all)",
        s.records,
        s.records_per_sec(),
        s.busy.as_secs_f64(),
        s.elapsed.as_secs_f64()
    );
    for (TopicPartition { topic, partition }, offset) in &s.committed {
        println!("committed {topic}/{partition} = {offset}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sinks_and_properties() {
        assert_eq!("none".parse::<SinkArg>().unwrap().0, SinkConfig::None);
        assert_eq!(
            "topic:out".parse::<SinkArg>().unwrap().0,
            SinkConfig::Topic {
                topic: "out".into()
            }
        );
        assert!("topic:".parse::<SinkArg>().is_err());
        for (arg, url) in [
            ("postgres:postgresql://u@h:5/db", "postgresql://u@h:5/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres:host=h port=5", "host=h port=5"),
        ] {
            match arg.parse::<SinkArg>().unwrap().0 {
                SinkConfig::Postgres(sink) => assert_eq!(sink.url, url),
                other => panic!("{arg}: {other:?}"),
            }
        }
        assert!("postgres:".parse::<SinkArg>().is_err());
        assert!("kafka".parse::<SinkArg>().is_err());
        assert_eq!(parse_property("a.b=1").unwrap(), ("a.b".into(), "1".into()));
        assert!(parse_property("nope").is_err());
    }
}
