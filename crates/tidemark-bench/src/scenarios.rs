//! What `tidemark bench` measures: the limits (a raw poll loop; the same CPU work on
//! rayon over records in memory), tidemark under a commit policy, and the classic
//! sequential poll-process-commit loops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use parking_lot::Mutex;
use rayon::prelude::*;
use rdkafka::consumer::{BaseConsumer, CommitMode as RdCommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use tidemark::{
    Bytes, CommitEvent, CommitPolicy, Config, MetricsHandle, Pipeline, Processor, Record,
};

use tidemark_testkit::memory::{peak_rss_kib, reset_peak_rss};

use tidemark_testkit::builtin::{CliProcessor, Kind};

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// What ran, e.g. `tidemark every-ms:100`.
    pub scenario: String,
    /// `noop` or `sha256:R`.
    pub processor: String,
    /// Records processed.
    pub records: u64,
    /// Time from the first record to the last one done.
    pub busy: Duration,
    /// Commits that succeeded.
    pub commits: u64,
    /// Latencies of those commits.
    pub latencies: Vec<Duration>,
    /// Peak resident set during the run, KiB (VmHWM after a reset).
    pub peak_rss_kib: u64,
    /// tidemark only: completed records above their partition's committable offset
    /// (`Metrics::completed_above_committable`), sampled every 2 ms while records
    /// were uncommitted — the head-of-line backlog a commit cannot cover yet.
    pub above_committable: Vec<u64>,
    /// When the row is the median of repeated runs: their number and the slowest
    /// and fastest rate, records/s.
    pub spread: Option<Spread>,
    /// Process CPU time (user + system, the process and the children it waited
    /// for) during the run; zero when not measured.
    pub cpu: Duration,
    /// tidemark only: the fraction of the run the workers spent running records
    /// (`RunSummary::busy_fraction`).
    pub workers_busy: Option<f64>,
    /// The database server's CPU time during the run (`bench --postgres`); zero
    /// when not measured.
    pub server_cpu: Duration,
}

/// The runs behind a median row.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub runs: usize,
    pub min_records_per_s: f64,
    pub max_records_per_s: f64,
}

/// Runs `measure` and records the process CPU time it took in the measurement.
pub fn with_cpu(
    measure: impl FnOnce() -> anyhow::Result<Measurement>,
) -> anyhow::Result<Measurement> {
    let before = tidemark_testkit::memory::cpu_time();
    let mut m = measure()?;
    m.cpu = tidemark_testkit::memory::cpu_time().saturating_sub(before);
    Ok(m)
}

/// Runs `measure` `runs` times and returns the run with the median rate, with the
/// spread of all of them.
pub fn median_of(
    runs: usize,
    mut measure: impl FnMut() -> anyhow::Result<Measurement>,
) -> anyhow::Result<Measurement> {
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let m = with_cpu(&mut measure)?;
        tracing::info!(scenario = %m.scenario, processor = %m.processor, records_per_s = m.records_per_sec(), "run");
        all.push(m);
    }
    Ok(median_of_runs(all))
}

/// Runs `limit` and `measure` alternately, `runs` times each (limit first), and
/// returns the median of each: a broker or machine that is busy for a while slows
/// both alike, instead of the one that happened to run then (issue 33: an in-memory
/// limit measured while the broker was busy printed tidemark at "173 %" of it).
pub fn median_interleaved(
    runs: usize,
    mut limit: impl FnMut() -> anyhow::Result<Measurement>,
    mut measure: impl FnMut() -> anyhow::Result<Measurement>,
) -> anyhow::Result<(Measurement, Measurement)> {
    let (mut limits, mut measured) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        for (run, into) in [
            (&mut limit as &mut dyn FnMut() -> _, &mut limits),
            (&mut measure, &mut measured),
        ] {
            let m = with_cpu(run)?;
            tracing::info!(scenario = %m.scenario, processor = %m.processor, records_per_s = m.records_per_sec(), "run");
            into.push(m);
        }
    }
    Ok((median_of_runs(limits), median_of_runs(measured)))
}

/// The median of `all` (by records/s) with their spread.
/// The run with the median rate of `all` (not empty), with the spread of all of them.
pub fn median_of_runs(mut all: Vec<Measurement>) -> Measurement {
    all.sort_by(|a, b| a.records_per_sec().total_cmp(&b.records_per_sec()));
    let spread = Spread {
        runs: all.len(),
        min_records_per_s: all[0].records_per_sec(),
        max_records_per_s: all[all.len() - 1].records_per_sec(),
    };
    let mut median = all.swap_remove(all.len() / 2);
    median.spread = Some(spread);
    median
}

/// The CPU-bound limit that counts the consumer's own unavoidable cost:
/// `cores / (work µs + raw poll loop µs)` per record, from the CPU per record of
/// the in-memory run of the work (`work`) and of the raw poll loop (`consumer`).
/// `None` when either has no CPU measured.
pub fn counted_limit(
    work: &Measurement,
    consumer: &Measurement,
    cores: usize,
) -> Option<Measurement> {
    let per_record_us = work.cpu_us_per_record()? + consumer.cpu_us_per_record()?;
    let records = 1_000_000u64;
    Some(Measurement {
        scenario: "limit: counted (cores / (work + raw poll loop CPU))".into(),
        processor: work.processor.clone(),
        records,
        busy: Duration::from_secs_f64(records as f64 * per_record_us * 1e-6 / cores.max(1) as f64),
        ..Measurement::default()
    })
}

impl Measurement {
    /// CPU time per record, µs (`None` when not measured).
    pub fn cpu_us_per_record(&self) -> Option<f64> {
        (!self.cpu.is_zero() && self.records > 0)
            .then(|| self.cpu.as_secs_f64() * 1e6 / self.records as f64)
    }

    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.busy.as_secs_f64().max(1e-9)
    }

    pub fn commits_per_sec(&self) -> f64 {
        self.commits as f64 / self.busy.as_secs_f64().max(1e-9)
    }

    /// Mean time between commits, ms (`None` without commits).
    pub fn commit_interval_ms(&self) -> Option<f64> {
        (self.commits > 0).then(|| self.busy.as_secs_f64() * 1e3 / self.commits as f64)
    }

    /// Mean of the completed-above-committable samples (`None` without samples).
    pub fn above_committable_mean(&self) -> Option<f64> {
        let n = self.above_committable.len();
        (n > 0).then(|| self.above_committable.iter().sum::<u64>() as f64 / n as f64)
    }

    /// The `q` quantile of the completed-above-committable samples.
    pub fn above_committable_quantile(&self, q: f64) -> Option<f64> {
        let mut v = self.above_committable.clone();
        v.sort_unstable();
        let i = ((v.len().checked_sub(1)?) as f64 * q).round() as usize;
        Some(v[i] as f64)
    }

    /// The `q` quantile of the commit latencies, ms.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() - 1) as f64 * q).round() as usize;
        Some(l[i].as_secs_f64() * 1e3)
    }
}

/// Samples `Metrics::completed_above_committable` every 2 ms on a thread until the
/// returned stop function is called, which returns the samples taken while records
/// were uncommitted.
fn sample_above_committable(metrics: MetricsHandle) -> impl FnOnce() -> Vec<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            let m = metrics.snapshot();
            if m.uncommitted_records > 0 {
                samples.push(m.completed_above_committable);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        samples
    });
    move || {
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap_or_default()
    }
}

/// A consumer with tidemark's own fetch settings (a fair limit), in a fresh group.
/// An rdkafka client configuration of `properties` (a `Config`'s).
pub fn client_config(
    properties: std::collections::BTreeMap<String, String>,
) -> rdkafka::ClientConfig {
    let mut cc = rdkafka::ClientConfig::new();
    for (k, v) in properties {
        cc.set(k, v);
    }
    cc
}

fn consumer(brokers: &str, topic: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    let config = Config::new(brokers, group, [topic]);
    Ok(client_config(config.consumer_client_properties()).create()?)
}

fn assign_all(c: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    Ok(())
}

fn to_record(m: &rdkafka::message::BorrowedMessage<'_>, topic: &Arc<str>) -> Record {
    let mut record = Record::new(topic.clone(), m.partition(), m.offset());
    record.timestamp_ms = m.timestamp().to_millis();
    record.key = m.key().map(Bytes::copy_from_slice);
    record.payload = m.payload().map(Bytes::copy_from_slice);
    record
}

/// Fails when the broker already dropped records of `topic` (a log start above 0),
/// which would make every loop wait for records that are gone.
pub fn check_nothing_dropped(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let c = consumer(brokers, topic, "bench-check")?;
    for p in 0..partitions {
        let (low, _) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if low > 0 {
            bail!("{topic}/{p} starts at {low}: the broker's retention dropped records; use fewer --records");
        }
    }
    Ok(())
}

/// The raw limit: a `BaseConsumer` poll loop reading every record, no processing,
/// no commits. With `keep`, also returns the records (for the in-memory run; that
/// pass is not the measured one).
pub fn raw_poll(
    brokers: &str,
    topic: &str,
    partitions: i32,
    total: u64,
    keep: bool,
) -> anyhow::Result<(Measurement, Vec<Record>)> {
    reset_peak_rss();
    let c = consumer(brokers, topic, &format!("bench-raw-{}", rand_suffix()))?;
    assign_all(&c, topic, partitions)?;
    let name: Arc<str> = Arc::from(topic);
    let mut kept = Vec::with_capacity(if keep { total as usize } else { 0 });
    let (mut n, mut first, deadline) = (0u64, None, Instant::now() + Duration::from_secs(600));
    let mut bytes = 0usize;
    while n < total {
        if Instant::now() > deadline {
            bail!("raw poll loop: only {n} of {total} records within 600 s");
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                bytes += m.payload_len();
                if keep {
                    kept.push(to_record(&m, &name));
                }
                n += 1;
                if n % 100_000 == 0 {
                    tracing::debug!(records = n, "raw poll loop");
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "raw poll loop: consumer error"),
            None => tracing::debug!(records = n, "raw poll loop: nothing for 100 ms"),
        }
    }
    std::hint::black_box(bytes);
    let busy = first.map_or(Duration::ZERO, |f| f.elapsed());
    Ok((
        Measurement {
            scenario: "limit: raw poll loop".into(),
            processor: "-".into(),
            records: n,
            busy,
            peak_rss_kib: peak_rss_kib(),
            ..Default::default()
        },
        kept,
    ))
}

/// The sink path's limit: a `BaseConsumer` poll loop producing one output per input
/// (same key and payload, the two source headers tidemark adds) to `output` with
/// tidemark's own producer settings, no processing, no commits; `busy` ends when
/// the producer has flushed every output.
pub fn raw_consume_produce(
    brokers: &str,
    topic: &str,
    output: &str,
    partitions: i32,
    total: u64,
    kind: Kind,
) -> anyhow::Result<Measurement> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::types::RDKafkaErrorCode;
    reset_peak_rss();
    let c = consumer(brokers, topic, &format!("bench-raw-sink-{}", rand_suffix()))?;
    assign_all(&c, topic, partitions)?;
    let producer: BaseProducer =
        client_config(Config::new(brokers, "unused", [topic]).producer_client_properties())
            .create()
            .context("creating the producer")?;
    let (mut n, mut first, deadline) = (0u64, None, Instant::now() + Duration::from_secs(600));
    while n < total {
        if Instant::now() > deadline {
            bail!("raw consume-produce loop: only {n} of {total} records within 600 s");
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: tidemark::HEADER_SRC_PARTITION,
                        value: Some(&partition),
                    })
                    .insert(Header {
                        key: tidemark::HEADER_SRC_OFFSET,
                        value: Some(&offset),
                    });
                let mut record = BaseRecord::<[u8], [u8]>::to(output).headers(headers);
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                let transformed;
                if let Some(p) = m.payload() {
                    record = match kind {
                        Kind::Noop => record.payload(p),
                        _ => {
                            transformed = tidemark_testkit::builtin::transform(kind, p)
                                .map_err(|e| anyhow::anyhow!("raw consume-produce loop: {e}"))?;
                            record.payload(&transformed[..])
                        }
                    };
                }
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((e, r))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                        {
                            producer.poll(Duration::from_millis(5));
                            record = r;
                        }
                        Err((e, _)) => bail!("raw consume-produce loop: produce failed: {e}"),
                    }
                }
                n += 1;
                if n % 1000 == 0 {
                    producer.poll(Duration::ZERO);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "raw consume-produce loop: consumer error"),
            None => {}
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the outputs")?;
    Ok(Measurement {
        scenario: "limit: raw consume-produce loop".into(),
        processor: kind_name(kind),
        records: n,
        busy: first.map_or(Duration::ZERO, |f| f.elapsed()),
        peak_rss_kib: peak_rss_kib(),
        ..Default::default()
    })
}

/// The CPU limit: the processor over records already in memory, on a rayon pool of
/// `workers` (no Kafka), in whole passes over them until `min_busy` has passed.
pub fn in_memory(
    records: &[Record],
    kind: Kind,
    workers: usize,
    min_busy: Duration,
) -> anyhow::Result<Measurement> {
    reset_peak_rss();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()?;
    let processor = CliProcessor::new(kind, None).with_outputs(false);
    let start = Instant::now();
    let mut passes = 0u64;
    // Whole passes over the records until `min_busy` has passed.
    while passes == 0 || start.elapsed() < min_busy {
        pool.install(|| {
            records.par_iter().for_each(|r| {
                std::hint::black_box(processor.process(r).ok());
            })
        });
        passes += 1;
    }
    Ok(Measurement {
        scenario: "limit: rayon in memory".into(),
        processor: kind_name(kind),
        records: passes * records.len() as u64,
        busy: start.elapsed(),
        peak_rss_kib: peak_rss_kib(),
        ..Default::default()
    })
}

/// tidemark itself under `policy` and `ordering`, in a fresh group, until idle. The
/// commit-lag bound (`max_uncommitted_records`) is raised to `records` so that the
/// policy, not the bound, decides when commits happen (with the default 100,000, a
/// member commits at least every 50,000 records whatever the policy); the in-flight
/// bounds keep their defaults.
#[allow(clippy::too_many_arguments)]
pub fn tidemark(
    brokers: &str,
    topic: &str,
    kind: Kind,
    workers: usize,
    policy: CommitPolicy,
    ordering: tidemark::ProcessingOrder,
    label: &str,
    records: u64,
) -> anyhow::Result<Measurement> {
    reset_peak_rss();
    let mut config = Config::new(brokers, format!("bench-{}", rand_suffix()), [topic]);
    config.workers = workers;
    config.commits.policy = policy;
    config.ordering = ordering;
    config.flow.max_uncommitted_records = config.flow.max_uncommitted_records.max(records as usize);
    if policy == CommitPolicy::EveryRecord {
        config.commits.mode = tidemark::CommitMode::Sync;
    }
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    let events = Arc::new(Mutex::new(Vec::<CommitEvent>::new()));
    let sink = events.clone();
    let pipeline = Pipeline::new(config, CliProcessor::new(kind, None).with_outputs(false))
        .on_commit(move |e: &CommitEvent| {
            if e.result.is_ok() {
                sink.lock().push(e.clone())
            }
        });
    let sampled = sample_above_committable(pipeline.metrics());
    let summary = pipeline.run().with_context(|| format!("tidemark {label}"));
    let above_committable = sampled();
    let summary = summary?;
    let events = events.lock();
    Ok(Measurement {
        scenario: format!("tidemark {label}"),
        processor: kind_name(kind),
        records: summary.records,
        busy: summary.busy,
        commits: events.len() as u64,
        latencies: events.iter().filter_map(|e| e.latency).collect(),
        peak_rss_kib: peak_rss_kib(),
        above_committable,
        workers_busy: Some(summary.busy_fraction()),
        ..Default::default()
    })
}

/// tidemark as a new user runs it: `Config::new` and nothing else (workers,
/// commit policy, in-flight bounds and fetch sizes at their defaults), in a fresh
/// group, until idle (the idle second is not counted: `busy` ends at the last
/// completion).
pub fn tidemark_default(
    brokers: &str,
    topic: &str,
    kind: Kind,
    records: u64,
    sink: Option<&str>,
) -> anyhow::Result<Measurement> {
    tidemark_default_with(brokers, topic, kind, records, sink, |p| p)
}

/// [`tidemark_default`] with the pipeline passed through `prepare` before it runs
/// (`--trace-cost`: a tracer provider).
pub fn tidemark_default_with(
    brokers: &str,
    topic: &str,
    kind: Kind,
    records: u64,
    sink: Option<&str>,
    prepare: impl FnOnce(Pipeline) -> Pipeline,
) -> anyhow::Result<Measurement> {
    reset_peak_rss();
    let mut config = Config::new(brokers, format!("bench-{}", rand_suffix()), [topic]);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    if let Some(output) = sink {
        config.sink = tidemark::SinkConfig::Topic {
            topic: output.to_string(),
        };
    }
    let processor = CliProcessor::new(kind, None).with_outputs(sink.is_some());
    let pipeline = prepare(Pipeline::new(config, processor));
    let metrics = pipeline.metrics();
    let sampled = sample_above_committable(metrics.clone());
    let summary = pipeline.run().context("tidemark default");
    let above_committable = sampled();
    let summary = summary?;
    anyhow::ensure!(
        summary.records == records,
        "tidemark default processed {} of {records} records",
        summary.records
    );
    Ok(Measurement {
        scenario: match sink {
            Some(_) => "tidemark default, sink topic".into(),
            None => "tidemark default".into(),
        },
        processor: kind_name(kind),
        records: summary.records,
        busy: summary.busy,
        commits: metrics.snapshot().commits,
        peak_rss_kib: peak_rss_kib(),
        above_committable,
        workers_busy: Some(summary.busy_fraction()),
        ..Default::default()
    })
}

/// The classic loop on one thread: poll up to 500 records (Java's
/// `max.poll.records`), process them one by one, commit their next offsets
/// (`commitSync()` or `commitAsync()`), repeat.
pub fn sequential(
    brokers: &str,
    topic: &str,
    partitions: i32,
    total: u64,
    kind: Kind,
    mode: RdCommitMode,
) -> anyhow::Result<Measurement> {
    reset_peak_rss();
    let c = consumer(brokers, topic, &format!("bench-seq-{}", rand_suffix()))?;
    assign_all(&c, topic, partitions)?;
    let name: Arc<str> = Arc::from(topic);
    let processor = CliProcessor::new(kind, None).with_outputs(false);
    let (mut n, mut first, mut commits) = (0u64, None, 0u64);
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while n < total {
        if Instant::now() > deadline {
            bail!("sequential loop: only {n} of {total} records within 1800 s");
        }
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut timeout = Duration::from_millis(100);
        for _ in 0..500 {
            match c.poll(timeout) {
                Some(Ok(m)) => {
                    first.get_or_insert_with(Instant::now);
                    timeout = Duration::ZERO;
                    std::hint::black_box(processor.process(&to_record(&m, &name)).ok());
                    next.insert(m.partition(), m.offset() + 1);
                    n += 1;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "sequential loop: consumer error"),
                None => break,
            }
        }
        if next.is_empty() {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        let sent = Instant::now();
        if c.commit(&tpl, mode).is_ok() {
            commits += 1;
            if matches!(mode, RdCommitMode::Sync) {
                latencies.push(sent.elapsed());
            }
        }
    }
    let label = match mode {
        RdCommitMode::Sync => "baseline: sequential, commitSync per poll",
        RdCommitMode::Async => "baseline: sequential, commitAsync per poll",
    };
    Ok(Measurement {
        scenario: label.into(),
        processor: kind_name(kind),
        records: n,
        busy: first.map_or(Duration::ZERO, |f| f.elapsed()),
        commits,
        latencies,
        peak_rss_kib: peak_rss_kib(),
        ..Default::default()
    })
}

/// The peer: `arroyo-peer` (peers/arroyo: sentry_arroyo's `RunTaskInThreads` then
/// `CommitOffsets` every 100 ms, `workers` threads) as a child process over the
/// same topic, in its own group. Its commits are not counted.
pub fn arroyo(
    peer: &std::path::Path,
    brokers: &str,
    topic: &str,
    records: u64,
    kind: Kind,
    workers: usize,
) -> anyhow::Result<Measurement> {
    let rounds = match kind {
        Kind::Sha256 { rounds } => rounds,
        _ => 0,
    };
    let out = std::process::Command::new(peer)
        .args(["--brokers", brokers, "--topic", topic])
        .args(["--records", &records.to_string()])
        .args(["--workers", &workers.to_string()])
        .args(["--rounds", &rounds.to_string(), "--commit-ms", "100"])
        .stderr(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", peer.display()))?;
    let field = |name: &str| peer_field("arroyo-peer", &out, name);
    Ok(Measurement {
        scenario: "peer: sentry_arroyo RunTaskInThreads".into(),
        processor: kind_name(kind),
        records: field("records")? as u64,
        busy: Duration::from_secs_f64(field("busy_s")?),
        peak_rss_kib: field("peak_rss_kib")? as u64,
        ..Default::default()
    })
}

/// Confluent's Parallel Consumer (`peers/parallel-consumer`, run as `java -jar`) in
/// a fresh group: `ordering` (`UNORDERED`, `KEY`), `max_concurrency` threads,
/// `PERIODIC_CONSUMER_ASYNCHRONOUS` commits, and for the CPU-bound processor the
/// same SHA-256 chain calibrated in Java to `target_us` µs per record; for
/// `sleep:MICROS` and `io:MICROS` a wait of MICROS µs per record on its thread
/// (`LockSupport.parkNanos`: Parallel Consumer runs user functions on threads).
#[allow(clippy::too_many_arguments)]
pub fn parallel_consumer(
    jar: &std::path::Path,
    brokers: &str,
    topic: &str,
    records: u64,
    kind: Kind,
    target_us: f64,
    ordering: &str,
    max_concurrency: usize,
) -> anyhow::Result<Measurement> {
    let target = match kind {
        Kind::Sha256 { .. } => target_us,
        _ => 0.0,
    };
    let sleep_us = match kind {
        Kind::Sleep { micros } | Kind::Io { micros } => micros,
        _ => 0,
    };
    let out = std::process::Command::new("java")
        .args(["-Xmx1g", "-jar"])
        .arg(jar)
        .args(["--brokers", brokers, "--topic", topic])
        .args(["--records", &records.to_string()])
        .args(["--ordering", ordering])
        .args(["--max-concurrency", &max_concurrency.to_string()])
        .args(["--target-us", &target.to_string()])
        .args(["--sleep-us", &sleep_us.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running java -jar {}", jar.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "pc-peer did not finish: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let field = |name: &str| peer_field("pc-peer", &out, name);
    Ok(Measurement {
        scenario: format!(
            "peer: Parallel Consumer {}, maxConcurrency {max_concurrency}",
            ordering.to_lowercase()
        ),
        processor: kind_name(kind),
        records: field("records")? as u64,
        busy: Duration::from_secs_f64(field("busy_s")?),
        peak_rss_kib: field("peak_rss_kib")? as u64,
        ..Default::default()
    })
}

/// The number after `name=` in a peer's one-line report on stdout.
fn peer_field(peer: &str, out: &std::process::Output, name: &str) -> anyhow::Result<f64> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .with_context(|| format!("{peer} printed no {name}: {text:?} ({})", out.status))
}

pub fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::Noop => "noop".into(),
        Kind::Sha256 { rounds } => format!("sha256:{rounds}"),
        Kind::Sleep { micros } => format!("sleep:{micros}"),
        Kind::Io { micros } => format!("io:{micros}"),
        Kind::Json => "json".into(),
    }
}

/// SHA-256 rounds costing about `target_us` per record on this machine (one core),
/// measured on `payload`.
pub fn calibrate(payload: &[u8], target_us: f64) -> (u32, f64) {
    // The fastest of 50 short samples: one sample is ~0.1 ms, so a single
    // preemption (a broker JVM starting on the same cores) would skew it.
    let per_round = (0..50)
        .map(|_| {
            let rounds = 2_000;
            let start = Instant::now();
            std::hint::black_box(tidemark_testkit::builtin::sha256_chain(payload, rounds));
            start.elapsed().as_secs_f64() * 1e6 / rounds as f64
        })
        .fold(f64::INFINITY, f64::min);
    let rounds = ((target_us / per_round).round() as u32).max(1);
    let start = Instant::now();
    let n = 2_000;
    let p = CliProcessor::new(Kind::Sha256 { rounds }, None);
    let r = Record::new("calibration", 0, 0).with_payload(Bytes::copy_from_slice(payload));
    for _ in 0..n {
        std::hint::black_box(p.process(&r).ok());
    }
    (rounds, start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}
