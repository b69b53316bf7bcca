//! Where a fresh group starts, on the embedded cluster (and Apache Kafka for timestamps):
//! `auto.offset.reset` `earliest` reads what is there, `latest` only what comes after
//! the start, `error` stops with a clear error and processes nothing; an explicit
//! `StartPosition` applies to partitions without a committed offset only.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidemark::{
    Config, Error, Membership, Outputs, Pipeline, ProcessResult, Processor, Record, StartPosition,
};
use tidemark_testkit::{unique_name, workload, Broker, EmbeddedCluster, KafkaBroker};

#[derive(Default)]
struct Count(AtomicU64);

impl Processor for Count {
    fn process(&self, _: &Record) -> ProcessResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

fn setup() -> (EmbeddedCluster, String) {
    tidemark_testkit::init_tracing();
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 2).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 1_000, 2), |_| {}).unwrap();
    (cluster, brokers)
}

fn config(brokers: &str, reset: &str) -> Config {
    let mut c = Config::new(brokers, format!("reset-{reset}"), ["in"]);
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(5_000));
    c.consumer_properties
        .insert("auto.offset.reset".into(), reset.into());
    c.consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    c
}

#[test]
fn earliest_reads_everything() {
    let (_cluster, brokers) = setup();
    let count = Arc::new(Count::default());
    Pipeline::new(config(&brokers, "earliest"), count.clone())
        .run()
        .unwrap();
    assert_eq!(count.0.load(Ordering::Relaxed), 1_000);
}

#[test]
fn latest_reads_only_new_records() {
    let (_cluster, brokers) = setup();
    let count = Arc::new(Count::default());
    let pipeline = Pipeline::new(config(&brokers, "latest"), count.clone());
    let progress = pipeline.metrics();
    let running = std::thread::spawn(move || pipeline.run());
    // Once assigned (positions resolved to the end), append 300 more records.
    while progress.snapshot().assigned < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut more = workload::Workload::new("in", 300, 2);
    more.first_id = 1_000;
    workload::produce(&brokers, &more, |_| {}).unwrap();
    running.join().unwrap().unwrap();
    assert_eq!(count.0.load(Ordering::Relaxed), 300);
}

#[test]
fn error_stops_with_a_clear_error() {
    let (_cluster, brokers) = setup();
    let count = Arc::new(Count::default());
    let err = Pipeline::new(config(&brokers, "error"), count.clone())
        .run()
        .unwrap_err();
    assert!(matches!(err, Error::OffsetReset(_)), "got {err}");
    assert_eq!(count.0.load(Ordering::Relaxed), 0);
}

fn start_config(brokers: &str, group: &str, start: StartPosition) -> Config {
    let mut c = config(brokers, "earliest");
    c.membership = Membership::Group {
        group_id: group.into(),
        topics: c.input_topics(),
    };
    c.start_position = Some(start);
    c
}

#[test]
fn start_offset_applies_to_a_fresh_group_only() {
    let (_cluster, brokers) = setup();
    // 1,000 records round-robin over 2 partitions: offsets 0..500 on each.
    let count = Arc::new(Count::default());
    Pipeline::new(
        start_config(&brokers, "start", StartPosition::Offset(400)),
        count.clone(),
    )
    .run()
    .unwrap();
    assert_eq!(
        count.0.load(Ordering::Relaxed),
        200,
        "100 per partition from offset 400"
    );

    // Now the group has committed offsets: a start position no longer applies.
    let mut more = workload::Workload::new("in", 100, 2);
    more.first_id = 1_000;
    workload::produce(&brokers, &more, |_| {}).unwrap();
    let again = Arc::new(Count::default());
    Pipeline::new(
        start_config(&brokers, "start", StartPosition::Beginning),
        again.clone(),
    )
    .run()
    .unwrap();
    assert_eq!(
        again.0.load(Ordering::Relaxed),
        100,
        "resumed from the committed offsets"
    );
}

#[test]
fn start_at_end_skips_what_is_there() {
    let (_cluster, brokers) = setup();
    let count = Arc::new(Count::default());
    Pipeline::new(
        start_config(&brokers, "start-end", StartPosition::End),
        count.clone(),
    )
    .run()
    .unwrap();
    assert_eq!(count.0.load(Ordering::Relaxed), 0);
}

/// By timestamp needs a broker that answers ListOffsets by time (the mock cluster
/// does not): Apache Kafka.
#[test]
fn kafka_start_at_a_timestamp() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let input = unique_name("in");
    broker.create_topic(&input, 2).unwrap();
    workload::produce(&brokers, &broker.workload(&input, 200, 2), |_| {}).unwrap();
    std::thread::sleep(Duration::from_millis(1_100));
    let from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    std::thread::sleep(Duration::from_millis(1_100));
    let mut more = broker.workload(&input, 60, 2);
    more.first_id = 200;
    workload::produce(&brokers, &more, |_| {}).unwrap();

    let count = Arc::new(Count::default());
    let mut c = start_config(
        &brokers,
        &unique_name("start-ts"),
        StartPosition::Timestamp(from),
    );
    c.membership = Membership::Group {
        group_id: c.group_id().unwrap().into(),
        topics: vec![input.clone()],
    };
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(5_000));
    Pipeline::new(c, count.clone()).run().unwrap();
    assert_eq!(
        count.0.load(Ordering::Relaxed),
        60,
        "only the records after the timestamp"
    );
}
