//! Async processors on Apache Kafka: a slow future holds back only its own key, and a
//! panicking future fails its record alone (to the dead-letter topic) while the
//! pipeline goes on. Results are checked as an independent client sees them
//! (committed offsets, the dead-letter topic).

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark::{
    AsyncProcessor, Config, DeadLetterConfig, Outputs, Pipeline, ProcessResult, ProcessingOrder,
    Record, HEADER_SRC_OFFSET, HEADER_SRC_PARTITION,
};
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

const SLOW: (i32, i64) = (0, 100);
const PER_PARTITION: i64 = 2_000;

/// Awaits (without blocking a thread) in the record at `SLOW` until released; every
/// record first awaits a 1 ms timer. Records (partition, offset, key) as each
/// starts.
#[derive(Default)]
struct SlowAt100 {
    release: Arc<AtomicBool>,
    started: Arc<Mutex<Vec<(i32, i64, Vec<u8>)>>>,
}

impl AsyncProcessor for SlowAt100 {
    async fn process(&self, record: &Record) -> ProcessResult {
        let key = record.key.as_deref().unwrap_or_default().to_vec();
        self.started
            .lock()
            .unwrap()
            .push((record.partition, record.offset, key));
        tokio::time::sleep(Duration::from_millis(1)).await;
        if (record.partition, record.offset) == SLOW {
            while !self.release.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(Outputs::none())
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_slow_future_holds_back_only_its_own_key() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("in"), unique_name("group"));
    broker.create_topic(&input, 2).unwrap();
    // 20 keys, record id → partition id % 2: ten keys a partition.
    let mut w = broker.workload(&input, 2 * PER_PARTITION as u64, 2);
    w.keys = 20;
    w.partition_by_id = true;
    workload::produce(&brokers, &w, |_| {}).unwrap();

    let processor = SlowAt100::default();
    let (release, started) = (processor.release.clone(), processor.started.clone());
    let mut config = Config::new(&brokers, &group, [&input]);
    config.ordering = ProcessingOrder::Key;
    config.concurrency = 64;
    config.commits.policy = tidemark::CommitPolicy::EveryMs(200);
    let pipeline = Pipeline::new_async(config, processor);
    let stop = pipeline.shutdown_handle();
    let run = std::thread::spawn(move || pipeline.run());

    let committed = || verify::committed_offsets(&brokers, &group, &input).unwrap();
    // While offset 100 awaits: committed exactly at it on its partition, the other
    // partition at its end, and the other keys of partition 0 past it.
    wait_for("the others completed around the slow record", || {
        let c = committed();
        c.get(&SLOW.0) == Some(&Some(SLOW.1)) && c.get(&1) == Some(&Some(PER_PARTITION))
    });
    {
        let started = started.lock().unwrap();
        let slow_key = started
            .iter()
            .find(|(p, o, _)| (*p, *o) == SLOW)
            .map(|(_, _, k)| k.clone())
            .expect("the slow record started");
        let others_after = started
            .iter()
            .filter(|(p, o, k)| *p == SLOW.0 && *o > SLOW.1 && *k != slow_key)
            .count();
        assert!(
            others_after > 0,
            "other keys were held back by the slow one"
        );
        let same_key_after: Vec<i64> = started
            .iter()
            .filter(|(p, o, k)| *p == SLOW.0 && *o > SLOW.1 && *k == slow_key)
            .map(|(_, o, _)| *o)
            .collect();
        assert!(
            same_key_after.is_empty(),
            "records of the slow key ran past it: {same_key_after:?}"
        );
    }
    assert_eq!(
        committed()[&SLOW.0],
        Some(SLOW.1),
        "committed past the slow record"
    );

    release.store(true, Ordering::Relaxed);
    wait_for("everything committed once released", || {
        committed().values().all(|c| *c == Some(PER_PARTITION))
    });
    stop.shutdown();
    run.join().unwrap().expect("clean stop");
    // Key order held: each key's offsets started in increasing order.
    let started = started.lock().unwrap();
    let mut by_key: BTreeMap<(i32, Vec<u8>), Vec<i64>> = BTreeMap::new();
    for (p, o, k) in started.iter() {
        by_key.entry((*p, k.clone())).or_default().push(*o);
    }
    for (key, offsets) in by_key {
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "{key:?}: {offsets:?}"
        );
    }
}

/// Panics in the record at `PANICS`; the others await 100 µs.
struct PanicsAt50;

const PANICS: (i32, i64) = (1, 50);

impl AsyncProcessor for PanicsAt50 {
    async fn process(&self, record: &Record) -> ProcessResult {
        tokio::time::sleep(Duration::from_micros(100)).await;
        if (record.partition, record.offset) == PANICS {
            panic!("a bug in the processor");
        }
        Ok(Outputs::none())
    }
}

#[test]
fn a_panicking_future_fails_its_record_alone_and_the_pipeline_goes_on() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group, dlq) = (unique_name("in"), unique_name("group"), unique_name("dlq"));
    broker.create_topic(&input, 2).unwrap();
    broker.create_topic(&dlq, 2).unwrap();
    let mut w = broker.workload(&input, 1_000, 2);
    w.partition_by_id = true;
    workload::produce(&brokers, &w, |_| {}).unwrap();

    let mut config = Config::new(&brokers, &group, [&input]);
    config.ordering = ProcessingOrder::Unordered;
    config.failures.dead_letter = Some(DeadLetterConfig::new(&dlq));
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    Pipeline::new_async(config, PanicsAt50)
        .run()
        .expect("the pipeline goes on");

    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    assert!(
        committed.values().all(|c| *c == Some(500)),
        "committed: {committed:?}"
    );
    let ends = verify::high_watermarks(&brokers, &dlq).unwrap();
    let letters = verify::read_topic(
        &brokers,
        &dlq,
        &ends,
        "read_committed",
        Duration::from_secs(30),
    )
    .unwrap();
    let coordinates: Vec<(String, String)> = letters
        .iter()
        .map(|r| {
            (
                r.header(HEADER_SRC_PARTITION).unwrap_or("?").to_string(),
                r.header(HEADER_SRC_OFFSET).unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(coordinates, vec![("1".to_string(), "50".to_string())]);
    let error = letters[0].header(tidemark::HEADER_ERROR).unwrap_or("");
    assert!(
        error.contains("a bug in the processor"),
        "error header: {error:?}"
    );
}

/// Awaits 5 ms per record.
struct Io5ms;

impl AsyncProcessor for Io5ms {
    async fn process(&self, _: &Record) -> ProcessResult {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(Outputs::none())
    }
}

#[test]
fn thousands_in_flight_keep_the_member_in_its_group_and_hold_back_at_the_bound() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("in"), unique_name("group"));
    broker.create_topic(&input, 4).unwrap();
    workload::produce(&brokers, &broker.workload(&input, 40_000, 4), |_| {}).unwrap();

    let mut config = Config::new(&brokers, &group, [&input]);
    config.ordering = ProcessingOrder::Unordered;
    config.concurrency = 2_000;
    config.flow.max_in_flight_records = 4_000;
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    config.lifecycle.drain_timeout = std::time::Duration::from_millis(3_000);
    // The poll thread must keep polling while thousands of futures wait.
    config
        .consumer_properties
        .insert("max.poll.interval.ms".into(), "6000".into());
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let pipeline = Pipeline::new_async(config, Io5ms);
    let metrics = pipeline.metrics();
    pipeline.run().expect("clean run");

    let m = metrics.snapshot();
    assert!(
        m.peak_in_flight_records >= 2_000,
        "never thousands in flight: peak {}",
        m.peak_in_flight_records
    );
    assert!(
        m.pauses > 0,
        "back-pressure never held back at the in-flight bound"
    );
    assert_eq!(m.max_poll_exceeded, 0, "max.poll.interval.ms breached");
    let ends = verify::high_watermarks(&brokers, &input).unwrap();
    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    let expected: BTreeMap<i32, Option<i64>> = ends.iter().map(|(p, e)| (*p, Some(*e))).collect();
    assert_eq!(committed, expected);
}
