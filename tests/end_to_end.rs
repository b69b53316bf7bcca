//! End to end on both brokers: 100k records over 8 partitions, 4 workers, a processor
//! with random per-record jitter so completions arrive out of order.
//!
//! Asserted: every record is processed at least once; the final committed offsets
//! equal the high watermarks; committed offsets seen by the commit callback never
//! decrease; after a clean shutdown a restart in the same group processes 0 records.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use tidemark::{CommitEvent, Config, Outputs, Pipeline, ProcessResult, Processor, Record};
use tidemark_testkit::{unique_name, verify, workload, Broker, EmbeddedCluster, KafkaBroker};

const RECORDS: u64 = 100_000;
const PARTITIONS: i32 = 8;
const WORKERS: usize = 4;

/// Spins a random 0–20 µs per record and counts how often each record was seen.
#[derive(Default)]
struct Jitter {
    seen: Mutex<HashMap<(i32, i64), u32>>,
    calls: AtomicU64,
}

impl Processor for Jitter {
    fn process(&self, record: &Record) -> ProcessResult {
        let spin = Duration::from_micros(rand::rng().random_range(0..20));
        let start = Instant::now();
        while start.elapsed() < spin {
            std::hint::spin_loop();
        }
        *self
            .seen
            .lock()
            .entry((record.partition, record.offset))
            .or_default() += 1;
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

fn config(brokers: &str, group: &str, topic: &str) -> Config {
    let mut c = Config::new(brokers, group, [topic]);
    c.workers = WORKERS;
    c.commits.policy = tidemark::CommitPolicy::EveryMs(50);
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(4_000));
    c.consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    c
}

/// Runs the pipeline; returns the processor and every successful commit's offsets.
fn run(brokers: &str, group: &str, topic: &str) -> (Arc<Jitter>, Vec<CommitEvent>) {
    let processor = Arc::new(Jitter::default());
    let commits = Arc::new(Mutex::new(Vec::new()));
    let sink = commits.clone();
    Pipeline::new(config(brokers, group, topic), processor.clone())
        .on_commit(move |e: &CommitEvent| sink.lock().push(e.clone()))
        .run()
        .expect("the pipeline stops cleanly");
    let commits = std::mem::take(&mut *commits.lock());
    (processor, commits)
}

fn at_least_once_end_to_end(broker: &dyn Broker) {
    tidemark_testkit::init_tracing();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("input"), unique_name("e2e"));
    broker.create_topic(&input, PARTITIONS).unwrap();
    workload::produce(
        &brokers,
        &broker.workload(&input, RECORDS, PARTITIONS),
        |_| {},
    )
    .expect("workload produced");
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();
    assert_eq!(ends.values().sum::<i64>() as u64, RECORDS);

    let (processor, commits) = run(&brokers, &group, &input);

    // Every record processed at least once.
    let seen = processor.seen.lock();
    let missing: Vec<(i32, i64)> = ends
        .iter()
        .flat_map(|(p, end)| (0..*end).map(move |o| (*p, o)))
        .filter(|k| !seen.contains_key(k))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "records never processed: {missing:?}");

    // Committed offsets seen by the callback never decrease, per partition.
    let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for event in commits.iter().filter(|e| e.result.is_ok()) {
        for po in &event.offsets {
            let prev = last
                .entry((po.topic.clone(), po.partition))
                .or_insert(po.offset);
            assert!(
                po.offset >= *prev,
                "commit of {}/{} went back from {} to {}",
                po.topic,
                po.partition,
                prev,
                po.offset
            );
            *prev = po.offset;
        }
    }
    assert!(
        !last.is_empty(),
        "the commit callback saw no successful commit: {commits:?}"
    );

    // The final committed offsets equal the high watermarks, as another client sees.
    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    let expected: BTreeMap<i32, Option<i64>> = ends.iter().map(|(p, e)| (*p, Some(*e))).collect();
    assert_eq!(committed, expected);

    // A restart in the same group after a clean shutdown processes nothing.
    let (again, _) = run(&brokers, &group, &input);
    assert_eq!(
        again.calls.load(Ordering::Relaxed),
        0,
        "restart re-processed records"
    );
}

#[test]
fn embedded_cluster_at_least_once() {
    let cluster = EmbeddedCluster::start(3).expect("mock cluster");
    at_least_once_end_to_end(&cluster);
}

#[test]
fn kafka_at_least_once() {
    at_least_once_end_to_end(KafkaBroker::shared());
}
