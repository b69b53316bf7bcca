//! Retries and the dead-letter guard, on the embedded cluster.
//!
//! A record that keeps failing retriably holds back its key only: the other keys of
//! its partition complete while it waits, the other partitions commit to their end,
//! and its partition's committed offset stops exactly at it (as an independent
//! client sees) until it succeeds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidemark::{
    Config, DeadLetterConfig, Error, Outputs, Pipeline, ProcessError, ProcessResult, Processor,
    Record,
};
use tidemark_testkit::{verify, workload, Broker, EmbeddedCluster};

const STUCK: (i32, i64) = (0, 100);

/// Fails the record at `STUCK` retriably until released; logs every completion.
#[derive(Default)]
struct Stuck {
    released: AtomicBool,
    stuck_key: Mutex<Option<Vec<u8>>>,
    /// (partition, offset, key) of every completed record, in completion order.
    done: Mutex<Vec<(i32, i64, Vec<u8>)>>,
}

impl Processor for Stuck {
    fn process(&self, record: &Record) -> ProcessResult {
        let key = record.key.as_deref().unwrap_or_default().to_vec();
        if (record.partition, record.offset) == STUCK && !self.released.load(Ordering::SeqCst) {
            *self.stuck_key.lock() = Some(key);
            return Err(ProcessError::retriable("dependency down"));
        }
        std::thread::sleep(Duration::from_micros(50));
        self.done
            .lock()
            .push((record.partition, record.offset, key));
        Ok(Outputs::none())
    }
}

fn wait_until(what: &str, check: impl FnMut() -> bool) {
    tidemark_testkit::wait_until(what, Duration::from_secs(60), check);
}

#[test]
fn a_retrying_key_holds_back_only_itself() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 4).unwrap();
    let mut w = workload::Workload::new("in", 8_000, 4);
    w.keys = 16;
    workload::produce(&brokers, &w, |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();

    let mut c = Config::new(&brokers, "retry", ["in"]);
    c.workers = 2;
    c.commits.policy = tidemark::CommitPolicy::EveryMs(50);
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(3_000));
    c.failures.retry.max_attempts = 10_000;
    c.failures.retry.initial_backoff = std::time::Duration::from_millis(20);
    c.failures.retry.max_backoff = std::time::Duration::from_millis(100);
    c.consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let processor = Arc::new(Stuck::default());
    let pipeline = Pipeline::new(c, processor.clone());
    let run = std::thread::spawn(move || pipeline.run());

    let committed = || verify::committed_offsets(&brokers, "retry", "in").unwrap();
    // Other partitions commit to their end while the record retries.
    wait_until("other partitions committed to their end", || {
        let c = committed();
        ends.iter()
            .filter(|(p, _)| **p != STUCK.0)
            .all(|(p, e)| c[p] == Some(*e))
    });
    // Its partition commits up to it, never past.
    wait_until("the stuck partition committed up to the record", || {
        committed()[&STUCK.0] == Some(STUCK.1)
    });
    let key = processor.stuck_key.lock().clone().expect("the record ran");
    {
        let done = processor.done.lock();
        let others_after: usize = done
            .iter()
            .filter(|(p, o, k)| *p == STUCK.0 && *o > STUCK.1 && *k != key)
            .count();
        assert!(
            others_after > 0,
            "other keys of the partition were held back"
        );
        let same_key_after: Vec<i64> = done
            .iter()
            .filter(|(p, o, k)| *p == STUCK.0 && *o > STUCK.1 && *k == key)
            .map(|(_, o, _)| *o)
            .collect();
        assert!(
            same_key_after.is_empty(),
            "records of the retrying key ran past it: {same_key_after:?}"
        );
    }
    assert_eq!(
        committed()[&STUCK.0],
        Some(STUCK.1),
        "committed past a retrying record"
    );

    processor.released.store(true, Ordering::SeqCst);
    run.join().unwrap().expect("the pipeline finishes");
    let committed = committed();
    let expected: BTreeMap<i32, Option<i64>> = ends.iter().map(|(p, e)| (*p, Some(*e))).collect();
    assert_eq!(committed, expected);
    // The key went on in offset order after the retried record.
    let done = processor.done.lock();
    let key_offsets: Vec<i64> = done
        .iter()
        .filter(|(p, _, k)| *p == STUCK.0 && *k == key)
        .map(|(_, o, _)| *o)
        .collect();
    assert!(key_offsets.contains(&STUCK.1));
    assert!(
        key_offsets.windows(2).all(|w| w[0] < w[1]),
        "{key_offsets:?}"
    );
}

/// Fails every record permanently.
struct AllBad;

impl Processor for AllBad {
    fn process(&self, _: &Record) -> ProcessResult {
        Err(ProcessError::permanent("bad deploy"))
    }
}

#[test]
fn the_dead_letter_guard_stops_a_pipeline_whose_every_record_fails() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 2).unwrap();
    cluster.create_topic("dlq", 2).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 2_000, 2), |_| {}).unwrap();
    let mut c = Config::new(&brokers, "guard", ["in"]);
    c.workers = 2;
    c.failures.dead_letter = Some(DeadLetterConfig::new("dlq").with_max_consecutive(50));
    c.consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let err = Pipeline::new(c, AllBad).run().unwrap_err();
    match err {
        Error::DeadLetterLimit { count, .. } => assert_eq!(count, 50),
        other => panic!("expected the dead-letter guard, got {other}"),
    }
    let committed: i64 = verify::committed_offsets(&brokers, "guard", "in")
        .unwrap()
        .values()
        .map(|c| c.unwrap_or(0))
        .sum();
    assert!(
        committed < 2_000,
        "the guard let everything through: {committed}"
    );
}
