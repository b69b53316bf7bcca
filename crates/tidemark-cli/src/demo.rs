//! `tidemark demo`: the whole story on an embedded cluster, verified.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use tidemark::{Config, Outputs, ProcessResult, Processor, Record};
use tidemark_testkit::{verify, workload, Broker, EmbeddedCluster};

use crate::processors::{CliProcessor, Kind};

const TOPIC: &str = "demo-input";
const GROUP: &str = "demo";

/// Run the demo on an embedded mock cluster (or `--brokers`).
#[derive(clap::Args)]
pub struct Args {
    /// Records to produce and process.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Worker threads (default: number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// SHA-256 rounds per record (the CPU-bound work).
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Use these brokers instead of the embedded cluster (the topic must not hold
    /// older records of another run).
    #[arg(long)]
    brokers: Option<String>,
}

/// Marks every record it sees, then runs the real processor (the demo has no sink:
/// its outputs are dropped here).
struct Recording<P> {
    inner: P,
    seen: Vec<Vec<AtomicU8>>,
}

impl<P: Processor> Processor for Recording<P> {
    fn process(&self, record: &Record) -> ProcessResult {
        self.inner.process(record)?;
        if let Some(slot) = self
            .seen
            .get(record.partition as usize)
            .and_then(|p| p.get(record.offset as usize))
        {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Outputs::none())
    }
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let embedded;
    let brokers = match &a.brokers {
        Some(b) => {
            workload::ensure_topic(b, TOPIC, a.partitions)?;
            b.clone()
        }
        None => {
            embedded = EmbeddedCluster::start(3).context("starting the embedded cluster")?;
            embedded.create_topic(TOPIC, a.partitions)?;
            println!("embedded mock cluster at {}", embedded.bootstrap_servers());
            embedded.bootstrap_servers()
        }
    };

    let bar = crate::spinner("producing");
    let mut w = workload::Workload::new(TOPIC, a.records, a.partitions);
    w.keys = 64;
    workload::produce(&brokers, &w, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    let ends = tidemark::high_watermarks(&brokers, TOPIC, std::time::Duration::from_secs(10))?;
    println!(
        "produced {} records to {TOPIC} ({} partitions)",
        a.records,
        ends.len()
    );

    let processor = Arc::new(Recording {
        inner: CliProcessor::new(Kind::Sha256 { rounds: a.rounds }, None),
        seen: ends
            .values()
            .map(|end| (0..*end).map(|_| AtomicU8::new(0)).collect())
            .collect(),
    });
    let mut config = Config::new(&brokers, GROUP, [TOPIC]);
    if let Some(w) = a.workers {
        config.workers = w;
    }
    config.commit = tidemark::CommitPolicy::EveryMs(100);
    config.exit_when_idle_ms = Some(2_000);
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let workers = config.workers;
    let summary = crate::run::execute(config, processor.clone(), None, "processing", None)?;
    println!(
        "processed {} records with sha256:{} on {} workers: {:.0} records/s ({:.2} s busy, {:.2} s in all with group join and idle wait)",
        summary.records,
        a.rounds,
        workers,
        summary.records_per_sec(),
        summary.busy.as_secs_f64(),
        summary.elapsed.as_secs_f64(),
    );

    let limit = in_memory_limit(a.rounds, w.payload_bytes, workers, a.records.min(50_000))?;
    println!(
        "this machine's limit for this work: {limit:.0} records/s (the same processor on {workers} workers over records in memory): tidemark reached {:.0}% of it",
        100.0 * summary.records_per_sec() / limit
    );

    let committed = verify::committed_offsets(&brokers, GROUP, TOPIC)?;
    println!(
        "{:>9} {:>16} {:>16}",
        "PARTITION", "COMMITTED", "HIGH-WATERMARK"
    );
    let mut ok = true;
    for (p, end) in &ends {
        let c = committed.get(p).copied().flatten();
        let mark = if c == Some(*end) {
            ""
        } else {
            "  <-- not at the high watermark"
        };
        ok &= c == Some(*end);
        println!(
            "{p:>9} {:>16} {end:>16}{mark}",
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
        ends.values().sum::<i64>()
    );
    Ok(())
}

/// Records/s of the demo's processor over `records` records held in memory, on a
/// rayon pool of `workers` threads: the most any consumer could reach for this
/// work on this machine.
fn in_memory_limit(
    rounds: u32,
    payload_bytes: usize,
    workers: usize,
    records: u64,
) -> anyhow::Result<f64> {
    use rayon::prelude::*;
    use tidemark::Processor;
    let processor = CliProcessor::new(Kind::Sha256 { rounds }, None);
    let topic: Arc<str> = Arc::from(TOPIC);
    let batch: Vec<tidemark::Record> = (0..records as i64)
        .map(|offset| tidemark::Record {
            topic: topic.clone(),
            partition: 0,
            offset,
            timestamp_ms: None,
            key: None,
            payload: Some(
                format!("{offset:08}{}", "x".repeat(payload_bytes))
                    .into_bytes()
                    .into(),
            ),
            headers: Vec::new(),
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()?;
    let start = std::time::Instant::now();
    pool.install(|| {
        batch.par_iter().for_each(|r| {
            std::hint::black_box(processor.process(r).ok());
        })
    });
    Ok(records as f64 / start.elapsed().as_secs_f64().max(1e-9))
}
