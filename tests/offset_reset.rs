//! `auto.offset.reset` for a fresh group (no committed offsets), on the embedded
//! cluster: `earliest` reads what is there, `latest` only what comes after the start,
//! `error` stops with a clear error and processes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidemark::{Config, Error, Outputs, Pipeline, ProcessResult, Processor, Record};
use tidemark_testkit::{workload, Broker, EmbeddedCluster};

#[derive(Default)]
struct Count(AtomicU64);

impl Processor for Count {
    fn process(&self, _: &Record) -> ProcessResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Outputs::none())
    }
}

fn setup() -> (EmbeddedCluster, String) {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 2).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 1_000, 2), |_| {}).unwrap();
    (cluster, brokers)
}

fn config(brokers: &str, reset: &str) -> Config {
    let mut c = Config::new(brokers, format!("reset-{reset}"), ["in"]);
    c.exit_when_idle_ms = Some(2_000);
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
    let progress = pipeline.progress();
    let running = std::thread::spawn(move || pipeline.run());
    // Once assigned (positions resolved to the end), append 300 more records.
    while tidemark::Progress::get(&progress.assigned) < 2 {
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
