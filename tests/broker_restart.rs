//! The broker is stopped and started again (same log dir) while a pipeline runs: the
//! member rides it out (its commits fail meanwhile and are retried), nothing is lost,
//! and after the restart commits resume up to the high watermarks, as an independent
//! client sees them.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidemark::{CommitEvent, Config, Outputs, Pipeline, ProcessResult, Processor, Record};
use tidemark_testkit::{verify, workload, Broker, KafkaBroker};

#[derive(Default)]
struct Slow(Mutex<HashMap<(i32, i64), u32>>);

impl Processor for Slow {
    fn process(&self, record: &Record) -> ProcessResult {
        std::thread::sleep(Duration::from_micros(400));
        *self
            .0
            .lock()
            .entry((record.partition, record.offset))
            .or_default() += 1;
        Ok(Outputs::none())
    }
}

#[test]
fn a_broker_restart_mid_run_loses_nothing() {
    let mut broker = KafkaBroker::start().expect("a broker of this test's own");
    let brokers = broker.bootstrap_servers();
    broker.create_topic("in", 4).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 40_000, 4), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();

    let mut c = Config::new(&brokers, "restart", ["in"]);
    c.workers = 2;
    c.commits.policy = tidemark::CommitPolicy::EveryMs(100);
    c.flow.max_in_flight_records = 2_000;
    c.consumer_properties
        .insert("session.timeout.ms".into(), "30000".into());
    let processor = Arc::new(Slow::default());
    let failed_commits = Arc::new(Mutex::new(0u32));
    let failures = failed_commits.clone();
    let pipeline = Pipeline::new(c, processor.clone()).on_commit(move |e: &CommitEvent| {
        if e.result.is_err() {
            *failures.lock() += 1;
        }
    });
    let progress = pipeline.metrics();
    let stop = pipeline.shutdown_handle();
    let run = std::thread::spawn(move || pipeline.run());
    while progress.snapshot().completed < 8_000 {
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.stop();
    let at_stop = progress.snapshot().completed;
    std::thread::sleep(Duration::from_secs(4));
    broker.restart().expect("the broker starts again");
    // The member reconnects on its own (librdkafka's reconnect backoff grows to
    // `reconnect.backoff.max.ms`, 10 s): wait until an independent client sees every
    // partition committed to its end, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let committed = verify::committed_offsets(&brokers, "restart", "in").ok();
        if committed
            .as_ref()
            .is_some_and(|c| ends.iter().all(|(p, e)| c[p] == Some(*e)))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "commits did not reach the high watermarks after the restart: {committed:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.shutdown();
    let summary = run
        .join()
        .unwrap()
        .expect("the pipeline rides the restart out");
    assert!(
        at_stop < 40_000,
        "the restart did not overlap the work ({at_stop} completed)"
    );

    let seen = processor.0.lock();
    let missing: Vec<_> = ends
        .iter()
        .flat_map(|(p, e)| (0..*e).map(move |o| (*p, o)))
        .filter(|k| !seen.contains_key(k))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "records never processed: {missing:?}");
    let committed = verify::committed_offsets(&brokers, "restart", "in").unwrap();
    for (p, e) in &ends {
        assert_eq!(
            committed[p],
            Some(*e),
            "partition {p}: commits did not resume"
        );
    }
    eprintln!(
        "broker restart: {} records, {} failed commits while the broker was away",
        summary.records,
        failed_commits.lock()
    );
}
