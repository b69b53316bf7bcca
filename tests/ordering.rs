//! Processing order on the embedded cluster, with random per-record jitter on a
//! parallel pool:
//! - `key`: for every key, records are processed one at a time (start and end
//!   events never interleave) and in offset order;
//! - `partition`: the same per partition;
//! - `unordered`: records of one key really run concurrently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use tidemark::{Config, Outputs, Pipeline, ProcessResult, ProcessingOrder, Processor, Record};
use tidemark_testkit::{workload, Broker, EmbeddedCluster};

/// Watches one lane (a key, or a partition) at a time: how many of its records run
/// now, the most that ever ran at once, and the offsets in the order they started.
/// A partition, and a key (empty when watching whole partitions).
type LaneId = (i32, Vec<u8>);

#[derive(Default)]
struct Watch {
    lanes: Mutex<HashMap<LaneId, Arc<Lane>>>,
    processed: AtomicUsize,
}

#[derive(Default)]
struct Lane {
    running: AtomicUsize,
    max_running: AtomicUsize,
    started: Mutex<Vec<i64>>,
}

struct Watched {
    watch: Arc<Watch>,
    /// Lane of a record: by key, or by partition.
    by_key: bool,
    max_jitter_us: u64,
}

impl Processor for Watched {
    fn process(&self, record: &Record) -> ProcessResult {
        let key = if self.by_key {
            record.key.as_deref().unwrap_or_default().to_vec()
        } else {
            Vec::new()
        };
        let lane = self
            .watch
            .lanes
            .lock()
            .entry((record.partition, key))
            .or_default()
            .clone();
        let now = lane.running.fetch_add(1, Ordering::SeqCst) + 1;
        lane.max_running.fetch_max(now, Ordering::SeqCst);
        lane.started.lock().push(record.offset);
        let spin = Duration::from_micros(rand::rng().random_range(0..=self.max_jitter_us));
        let start = Instant::now();
        while start.elapsed() < spin {
            std::hint::spin_loop();
        }
        lane.running.fetch_sub(1, Ordering::SeqCst);
        self.watch.processed.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

/// Runs `records` records over 4 partitions with `keys` keys in `order`; returns
/// the watch (lanes by key when `by_key`, else by partition).
fn run(
    order: ProcessingOrder,
    keys: u64,
    records: u64,
    by_key: bool,
    jitter_us: u64,
) -> Arc<Watch> {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 4).unwrap();
    let mut w = workload::Workload::new("in", records, 4);
    w.keys = keys;
    workload::produce(&brokers, &w, |_| {}).unwrap();
    let mut c = Config::new(&brokers, "order", ["in"]);
    c.workers = 4;
    c.ordering = order;
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(2_000));
    c.consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let watch = Arc::new(Watch::default());
    let summary = Pipeline::new(
        c,
        Watched {
            watch: watch.clone(),
            by_key,
            max_jitter_us: jitter_us,
        },
    )
    .run()
    .unwrap();
    assert_eq!(summary.records, records);
    assert_eq!(watch.processed.load(Ordering::Relaxed) as u64, records);
    watch
}

fn assert_one_at_a_time_in_offset_order(watch: &Watch, what: &str) {
    let lanes = watch.lanes.lock();
    assert!(lanes.len() > 1);
    for ((partition, key), lane) in lanes.iter() {
        let key = String::from_utf8_lossy(key);
        assert_eq!(
            lane.max_running.load(Ordering::SeqCst),
            1,
            "{what} {partition}/{key}: records ran concurrently"
        );
        let started = lane.started.lock();
        assert!(
            started.windows(2).all(|w| w[0] < w[1]),
            "{what} {partition}/{key}: not in offset order: {:?}",
            &started[..started.len().min(20)]
        );
    }
}

#[test]
fn key_order_runs_each_key_one_at_a_time_in_offset_order() {
    let watch = run(ProcessingOrder::Key, 64, 20_000, true, 30);
    assert_one_at_a_time_in_offset_order(&watch, "key");
}

#[test]
fn partition_order_runs_each_partition_one_at_a_time_in_offset_order() {
    let watch = run(ProcessingOrder::Partition, 64, 4_000, false, 30);
    assert_one_at_a_time_in_offset_order(&watch, "partition");
}

#[test]
fn unordered_runs_records_of_one_key_concurrently() {
    let watch = run(ProcessingOrder::Unordered, 1, 4_000, true, 500);
    let lanes = watch.lanes.lock();
    let max = lanes
        .values()
        .map(|l| l.max_running.load(Ordering::SeqCst))
        .max()
        .unwrap();
    assert!(max > 1, "one key's records never ran concurrently");
}
