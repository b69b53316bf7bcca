//! `tidemark demo`: the whole story on an embedded cluster, verified.
//!
//! librdkafka's mock cluster keeps at most 5 MiB of log per partition and drops the
//! oldest records beyond it (`rdkafka_mock.c`, `max_size`), so the demo produces
//! in rounds while the pipeline runs, never more than [`WINDOW_PER_PARTITION`]
//! records per partition ahead of what the pipeline has processed: any size fits,
//! and every record produced is still in the log when the pipeline reads it. Record
//! `id` goes to partition `id % partitions` at offset `id / partitions`, so what
//! was produced is known exactly and verified record by record.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use tidemark::{Config, Outputs, ProcessResult, Processor, Record};
use tidemark_testkit::{verify, workload, Broker, EmbeddedCluster};

use crate::processors::{CliProcessor, Kind};

const TOPIC: &str = "demo-input";
const LIMIT_TOPIC: &str = "demo-limit";
const GROUP: &str = "demo";

/// Records per partition produced ahead of the pipeline at most: a demo record
/// takes about 130 bytes of the mock cluster's log, so 25,000 use about two thirds
/// of the 5 MiB it keeps per partition (and the default demo is produced whole
/// before the pipeline starts).
const WINDOW_PER_PARTITION: u64 = 25_000;
/// The most records the demo accepts: it keeps one byte per record to verify them.
const MAX_RECORDS: u64 = 100_000_000;
/// The most partitions the demo accepts.
const MAX_PARTITIONS: i32 = 1_024;
/// Distinct keys per partition (keys are spread so that each stays in one partition).
const KEYS_PER_PARTITION: u64 = 8;

/// Run the demo on an embedded mock cluster (or `--brokers`).
#[derive(clap::Args)]
pub struct Args {
    /// Records to produce and process (1 to 100,000,000).
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Worker threads (default: number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Partitions of the demo topic (1 to 1,024).
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// SHA-256 rounds per record (the CPU-bound work; 0: no-op).
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Use these brokers instead of the embedded cluster (the topic must not exist
    /// or hold records of another run).
    #[arg(long)]
    brokers: Option<String>,
}

/// Marks every record it sees, then runs the real processor (the demo has no sink:
/// its outputs are dropped here).
struct Recording<P> {
    inner: P,
    /// Per partition, per offset: how often it was processed.
    seen: Vec<Vec<AtomicU8>>,
    /// Records processed at least once.
    distinct: AtomicU64,
}

impl<P: Processor> Processor for Recording<P> {
    fn process(&self, record: &Record) -> ProcessResult {
        self.inner.process(record)?;
        if let Some(slot) = self
            .seen
            .get(record.partition as usize)
            .and_then(|p| p.get(record.offset as usize))
        {
            if slot.fetch_add(1, Ordering::Relaxed) == 0 {
                self.distinct.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Outputs::none())
    }
}

/// Records of partition `p` when `records` ids are spread `id % partitions`.
fn records_of(records: u64, partitions: i32, p: i32) -> u64 {
    let partitions = partitions as u64;
    records / partitions + u64::from((p as u64) < records % partitions)
}

pub fn main(a: Args) -> anyhow::Result<()> {
    ensure!(
        (1..=MAX_RECORDS).contains(&a.records),
        "--records must be between 1 and {MAX_RECORDS} (the demo keeps a byte per record to verify it)"
    );
    ensure!(
        (1..=MAX_PARTITIONS).contains(&a.partitions),
        "--partitions must be between 1 and {MAX_PARTITIONS}"
    );
    let embedded;
    let brokers = match &a.brokers {
        Some(b) => {
            let ends = tidemark::high_watermarks(b, TOPIC, Duration::from_secs(10));
            if let Ok(ends) = ends {
                ensure!(
                    ends.values().all(|e| *e == 0),
                    "{TOPIC} already holds records at {b}: the demo verifies offsets from 0; delete the topic first"
                );
            }
            workload::ensure_topic(b, TOPIC, a.partitions)?;
            workload::ensure_topic(b, LIMIT_TOPIC, a.partitions)?;
            b.clone()
        }
        None => {
            embedded = EmbeddedCluster::start(3).context("starting the embedded cluster")?;
            embedded.create_topic(TOPIC, a.partitions)?;
            embedded.create_topic(LIMIT_TOPIC, a.partitions)?;
            println!("embedded mock cluster at {}", embedded.bootstrap_servers());
            embedded.bootstrap_servers()
        }
    };

    let kind = if a.rounds == 0 {
        Kind::Noop
    } else {
        Kind::Sha256 { rounds: a.rounds }
    };
    let processor = Arc::new(Recording {
        inner: CliProcessor::new(kind, None).with_outputs(false),
        seen: (0..a.partitions)
            .map(|p| {
                (0..records_of(a.records, a.partitions, p))
                    .map(|_| AtomicU8::new(0))
                    .collect()
            })
            .collect(),
        distinct: AtomicU64::new(0),
    });
    let mut w = workload::Workload::new(TOPIC, a.records, a.partitions);
    w.keys = KEYS_PER_PARTITION * a.partitions as u64;
    w.partition_by_id = true;

    // A whole window first; the rest beside the pipeline, in rounds of half a window
    // (the producer then shares the machine with the pipeline).
    let window = WINDOW_PER_PARTITION * a.partitions as u64;
    let round = (window / 2).max(1);
    let producer = workload::WorkloadProducer::new(&brokers, TOPIC, a.partitions)?;
    let first = w.records.min(window);
    producer.produce(
        &workload::Workload {
            records: first,
            ..w.clone()
        },
        |_| {},
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (processor, stop, w) = (processor.clone(), stop.clone(), w.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut produced = first;
            while produced < w.records {
                // Wait until this round fits in the window.
                while produced - processor.distinct.load(Ordering::Relaxed) > window - round {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let records = (w.records - produced).min(round);
                producer.produce(
                    &workload::Workload {
                        records,
                        first_id: produced,
                        ..w.clone()
                    },
                    |_| {},
                )?;
                produced += records;
            }
            Ok(())
        })
    };
    if first < a.records {
        println!(
            "producing {} records to {TOPIC} ({} partitions): {first} now, the rest while the pipeline runs, at most {window} ahead of it",
            a.records, a.partitions
        );
    } else {
        println!(
            "produced {} records to {TOPIC} ({} partitions)",
            a.records, a.partitions
        );
    }

    let mut config = Config::new(&brokers, GROUP, [TOPIC]);
    if let Some(w) = a.workers {
        config.workers = w;
    }
    config.commits.policy = tidemark::CommitPolicy::EveryMs(100);
    // Caught up (every partition at its end, nothing in flight) and no record for 2 s.
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(2_000));
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let workers = config.workers;
    let result = crate::run::execute(
        tidemark::Pipeline::new(config, processor.clone()),
        None,
        "processing",
        None,
    );
    stop.store(true, Ordering::Relaxed);
    let fed = feeder.join().expect("the producer thread never panics");
    let summary = result?;
    fed.context("producing the demo records")?;
    println!(
        "processed {} records with {} on {} workers: {:.0} records/s ({:.2} s busy, {:.2} s in all with group join and idle wait)",
        summary.records,
        tidemark_bench::kind_name(kind),
        workers,
        summary.records_per_sec(),
        summary.busy.as_secs_f64(),
        summary.elapsed.as_secs_f64(),
    );

    let (limit, what) = limit(
        &brokers,
        kind,
        a.partitions,
        w.payload_bytes,
        workers,
        a.records,
    )?;
    println!(
        "this machine's limit for this work: {:.0} records/s ({what}): tidemark reached {:.0}% of it",
        limit.records_per_s,
        100.0 * summary.records_per_sec() / limit.records_per_s
    );
    if let Some(counted) = &limit.counted {
        println!(
            "counting the consumer's own cost ({:.2} µs of CPU a record for the work + {:.2} µs for a raw poll loop, on {} cores): {:.0} records/s; tidemark reached {:.0}% of it",
            counted.work_us,
            counted.consumer_us,
            counted.cores,
            counted.records_per_s,
            100.0 * summary.records_per_sec() / counted.records_per_s
        );
    }

    let ends = tidemark::high_watermarks(&brokers, TOPIC, Duration::from_secs(10))?;
    let committed = verify::committed_offsets(&brokers, GROUP, TOPIC)?;
    println!(
        "{:>9} {:>12} {:>16} {:>16}",
        "PARTITION", "PRODUCED", "COMMITTED", "HIGH-WATERMARK"
    );
    let mut ok = true;
    for (p, end) in &ends {
        let produced = records_of(a.records, a.partitions, *p) as i64;
        let c = committed.get(p).copied().flatten();
        let mark = if *end != produced {
            ok = false;
            "  <-- the log holds other records than the demo produced"
        } else if *end == 0 {
            "  (no records: nothing to commit)"
        } else if c != Some(*end) {
            ok = false;
            "  <-- not at the high watermark"
        } else {
            ""
        };
        println!(
            "{p:>9} {produced:>12} {:>16} {end:>16}{mark}",
            c.map_or("-".into(), |c| c.to_string())
        );
    }
    let missing: u64 = processor
        .seen
        .iter()
        .flat_map(|p| p.iter())
        .filter(|s| s.load(Ordering::Relaxed) == 0)
        .count() as u64;
    let duplicates: u64 = processor
        .seen
        .iter()
        .flat_map(|p| p.iter())
        .map(|s| s.load(Ordering::Relaxed).saturating_sub(1) as u64)
        .sum();
    if missing > 0 {
        bail!("{missing} records were never processed");
    }
    if !ok {
        bail!("committed offsets differ from the high watermarks");
    }
    println!(
        "verified: all {} records processed at least once ({duplicates} duplicates); committed offsets = high watermarks",
        a.records
    );
    Ok(())
}

/// The demo's limit for its work. For the no-op processor, the raw poll loop
/// (librdkafka's consumer alone, no processing) over a topic of its own; for CPU
/// work, the same processor on `workers` threads over records in memory, and beside
/// it the limit that counts the consumer's own unavoidable cost (issue 33).
struct Limit {
    records_per_s: f64,
    counted: Option<CountedLimit>,
}

/// `cores / (work µs + consumer µs)` records/s: the CPU-bound limit of a pipeline
/// that must also consume its records.
struct CountedLimit {
    records_per_s: f64,
    /// CPU per record of the work in memory, µs.
    work_us: f64,
    /// CPU per record of a raw poll loop on the same cluster, µs.
    consumer_us: f64,
    cores: usize,
}

fn limit(
    brokers: &str,
    kind: Kind,
    partitions: i32,
    payload_bytes: usize,
    workers: usize,
    records: u64,
) -> anyhow::Result<(Limit, String)> {
    let n = records.min(WINDOW_PER_PARTITION * partitions as u64);
    workload::produce(
        brokers,
        &workload::Workload::new(LIMIT_TOPIC, n, partitions),
        |_| {},
    )?;
    let before = tidemark_testkit::memory::cpu_time();
    let raw = tidemark_bench::raw_poll(brokers, LIMIT_TOPIC, partitions, n, false)?.0;
    let consumer_us = (tidemark_testkit::memory::cpu_time() - before).as_secs_f64() * 1e6
        / raw.records.max(1) as f64;
    if kind == Kind::Noop {
        let limit = Limit {
            records_per_s: raw.records_per_sec(),
            counted: None,
        };
        return Ok((
            limit,
            format!("the raw poll loop, no processing, over {n} records"),
        ));
    }
    let (records_per_s, work_us) =
        in_memory_limit(kind, payload_bytes, workers, records.min(50_000))?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let limit = Limit {
        records_per_s,
        counted: Some(CountedLimit {
            records_per_s: cores as f64 * 1e6 / (work_us + consumer_us),
            work_us,
            consumer_us,
            cores,
        }),
    };
    Ok((
        limit,
        format!("the same processor on {workers} workers over records in memory"),
    ))
}

/// Records/s of `kind` over `records` records held in memory, on a rayon pool of
/// `workers` threads, and the CPU it took per record (µs).
fn in_memory_limit(
    kind: Kind,
    payload_bytes: usize,
    workers: usize,
    records: u64,
) -> anyhow::Result<(f64, f64)> {
    use rayon::prelude::*;
    let processor = CliProcessor::new(kind, None);
    let topic: Arc<str> = Arc::from(TOPIC);
    let batch: Vec<tidemark::Record> = (0..records as i64)
        .map(|offset| {
            tidemark::Record::new(topic.clone(), 0, offset)
                .with_payload(format!("{offset:08}{}", "x".repeat(payload_bytes)).into_bytes())
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()?;
    let start = std::time::Instant::now();
    let cpu = tidemark_testkit::memory::cpu_time();
    pool.install(|| {
        batch.par_iter().for_each(|r| {
            std::hint::black_box(processor.process(r).ok());
        })
    });
    let cpu_us =
        (tidemark_testkit::memory::cpu_time() - cpu).as_secs_f64() * 1e6 / records.max(1) as f64;
    Ok((
        records as f64 / start.elapsed().as_secs_f64().max(1e-9),
        cpu_us,
    ))
}
