//! The offset map on Apache Kafka: a partition's next owner does not process again
//! the records its previous owner completed above the committed offset.
//!
//! A processor holds one record (until the test releases it) while every other
//! record completes. The committed offset stops at the held record; its metadata
//! (read by an independent client) marks the others complete; and the next member of
//! the group processes exactly the held record again — after a graceful stop, and
//! after a graceful rebalance between two members. (The SIGKILL case is a CLI test:
//! `crates/tidemark-cli/tests/offset_map_crash.rs`.)

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]
// Offset ranges compared as one-element lists.
#![allow(clippy::single_range_in_vec_init)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidemark::offsets::OffsetMap;
use tidemark::{
    CommitPolicy, Config, Outputs, Pipeline, ProcessError, ProcessResult, ProcessingOrder,
    Processor, Record,
};
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

/// Holds the records at `held` until released: they fail retriably, so each waits
/// for its retry without occupying a worker, in flight and holding its partition's
/// committed offset. Logs every record it completes.
struct Holding {
    held: Vec<(i32, i64)>,
    released: AtomicBool,
    done: Mutex<Vec<(i32, i64)>>,
}

impl Holding {
    fn new(held: &[(i32, i64)]) -> Arc<Self> {
        Arc::new(Holding {
            held: held.to_vec(),
            released: AtomicBool::new(false),
            done: Mutex::new(Vec::new()),
        })
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    fn done(&self) -> Vec<(i32, i64)> {
        self.done.lock().clone()
    }
}

impl Processor for Holding {
    fn process(&self, record: &Record) -> ProcessResult {
        let at = (record.partition, record.offset);
        if self.held.contains(&at) && !self.released.load(Ordering::SeqCst) {
            return Err(ProcessError::retriable("held by the test"));
        }
        self.done.lock().push(at);
        Ok(Outputs::none())
    }
}

fn wait_until(what: &str, check: impl FnMut() -> bool) {
    tidemark_testkit::wait_until(what, Duration::from_secs(90), check);
}

fn config(brokers: &str, group: &str, topic: &str) -> Config {
    let mut c = Config::new(brokers, group, [topic]);
    c.workers = 2;
    c.commits.policy = CommitPolicy::EveryMs(100);
    c.lifecycle.drain_timeout = std::time::Duration::from_millis(300);
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(2_000));
    // The held record must not hold back others of its key.
    c.ordering = ProcessingOrder::Unordered;
    c.failures.retry.max_attempts = u32::MAX;
    c.failures.retry.initial_backoff = std::time::Duration::from_millis(10);
    c.failures.retry.max_backoff = std::time::Duration::from_millis(50);
    c.consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    c
}

/// How many times each (partition, offset) completed.
fn counts(started: &[(i32, i64)]) -> BTreeMap<(i32, i64), usize> {
    let mut counts = BTreeMap::new();
    for r in started {
        *counts.entry(*r).or_default() += 1;
    }
    counts
}

struct Topic {
    brokers: String,
    name: String,
    group: String,
    ends: BTreeMap<i32, i64>,
}

fn topic(partitions: i32, records: u64) -> Topic {
    tidemark_testkit::init_tracing();
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (name, group) = (unique_name("map"), unique_name("g"));
    broker.create_topic(&name, partitions).unwrap();
    workload::produce(
        &brokers,
        &workload::Workload::new(&name, records, partitions),
        |_| {},
    )
    .unwrap();
    let ends = tidemark::high_watermarks(&brokers, &name, Duration::from_secs(10)).unwrap();
    Topic {
        brokers,
        name,
        group,
        ends,
    }
}

#[test]
fn after_a_graceful_stop_the_next_member_redoes_only_the_held_record() {
    let t = topic(1, 500);
    let end = t.ends[&0];
    let held = (0, 100);

    let first = Holding::new(&[held]);
    let mut c = config(&t.brokers, &t.group, &t.name);
    c.lifecycle.exit_when_idle = None;
    let pipeline = Pipeline::new(c, first.clone());
    let stop = pipeline.shutdown_handle();
    let metrics = pipeline.metrics();
    let run = std::thread::spawn(move || pipeline.run());
    wait_until("every record but the held one completed", || {
        first.done().len() as i64 == end - 1
    });
    assert_eq!(
        metrics.health(),
        tidemark::Health {
            live: true,
            ready: true
        },
        "running with its partition"
    );
    // Let the last completions land before the stop (its drain times out on the
    // held record only).
    wait_until("the committed map covers the completed records", || {
        let c = verify::committed_with_metadata(&t.brokers, &t.group, &t.name).unwrap();
        c[&0].as_ref().is_some_and(|(o, m)| {
            *o == held.1
                && OffsetMap::decode(m)
                    .is_ok_and(|map| map.completed_count() as i64 == end - held.1 - 1)
        })
    });
    stop.shutdown();
    run.join().unwrap().expect("the first member stops");
    first.release();
    assert_eq!(
        metrics.health(),
        tidemark::Health {
            live: false,
            ready: false
        },
        "stopped"
    );
    // The typed snapshot agrees with the independent client below.
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.partitions[0].committed_offset, Some(held.1));
    assert!(snapshot.partitions[0].offset_map_bytes > 0, "the map gauge");

    // What an independent client sees: the offset stops at the held record, and the
    // metadata marks everything above it complete.
    let committed = verify::committed_with_metadata(&t.brokers, &t.group, &t.name).unwrap();
    let (offset, metadata) = committed[&0].clone().expect("committed");
    assert_eq!(offset, held.1, "never past the held record");
    let map = OffsetMap::decode(&metadata).expect("a tidemark offset map");
    assert_eq!(map.completed(), &[held.1 + 1..end]);

    let second = Holding::new(&[]);
    let pipeline = Pipeline::new(config(&t.brokers, &t.group, &t.name), second.clone());
    let progress = pipeline.metrics();
    pipeline.run().expect("the second member finishes");
    assert_eq!(
        second.done(),
        vec![held],
        "processed again: only the held record"
    );
    assert_eq!(
        progress.snapshot().skipped_by_offset_map as i64,
        end - held.1 - 1
    );
    let committed = verify::committed_offsets(&t.brokers, &t.group, &t.name).unwrap();
    assert_eq!(committed[&0], Some(end), "committed to the end");
}

#[test]
fn a_graceful_rebalance_redoes_only_what_was_in_flight() {
    const PARTITIONS: i32 = 4;
    let t = topic(PARTITIONS, 2_000);
    // One held record per partition: whichever partitions move, each has completed
    // records above a record in flight.
    let held: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 50)).collect();

    let a = Holding::new(&held);
    let mut c = config(&t.brokers, &t.group, &t.name);
    c.lifecycle.exit_when_idle = None;
    let pipeline = Pipeline::new(c.clone(), a.clone());
    let a_stop = pipeline.shutdown_handle();
    let a_run = std::thread::spawn(move || pipeline.run());
    let total: i64 = t.ends.values().sum();
    wait_until("member A completed everything but the held records", || {
        a.done().len() as i64 == total - PARTITIONS as i64
    });

    // B joins (cooperative-sticky: A gives up some partitions, draining them for up
    // to 300 ms — the held records stay in flight — and commits them with maps).
    let b = Holding::new(&[]);
    let pipeline = Pipeline::new(c, b.clone());
    let b_progress = pipeline.metrics();
    let b_stop = pipeline.shutdown_handle();
    let b_run = std::thread::spawn(move || pipeline.run());
    wait_until(
        "B redid a held record and committed its partitions to the end",
        || {
            let moved: Vec<i32> = b.done().iter().map(|(p, _)| *p).collect();
            let committed = verify::committed_offsets(&t.brokers, &t.group, &t.name).unwrap();
            !moved.is_empty()
                && b_progress.snapshot().assigned == moved.len() as u64
                && moved.iter().all(|p| committed[p] == Some(t.ends[p]))
        },
    );
    b_stop.shutdown();
    b_run.join().unwrap().expect("member B stops");
    a_stop.shutdown();
    a_run.join().unwrap().expect("member A stops");
    a.release();

    let moved: Vec<i32> = b.done().iter().map(|(p, _)| *p).collect();
    assert!(!moved.is_empty(), "no partition moved to B");
    let expected: Vec<(i32, i64)> = held
        .iter()
        .copied()
        .filter(|(p, _)| moved.contains(p))
        .collect();
    let mut redone = b.done();
    redone.sort();
    assert_eq!(
        redone, expected,
        "B processed again only the held records of its partitions"
    );
    assert!(b_progress.snapshot().skipped_by_offset_map > 0);
    // Across both members every record completed exactly once, except the held
    // records of the partitions A kept, which it never completed.
    let all = counts(&[a.done(), b.done()].concat());
    assert_eq!(
        all.len() as i64,
        total - (held.len() - expected.len()) as i64
    );
    assert!(all.values().all(|n| *n == 1), "a record completed twice");
}
