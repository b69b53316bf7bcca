//! Group rebalances on Apache Kafka, checked through an independent reader of the
//! sink topic and the committed offsets.
//!
//! - `cooperative-sticky` (tidemark's default): a second member joins a working
//!   member, then leaves gracefully. Nothing is lost, nothing is processed twice,
//!   and the first member is never assigned a partition it already had: under an
//!   eager protocol it would give up all of its partitions and get some back.
//! - KIP-848 (`group.protocol=consumer`): the same join and leave, end to end.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::BTreeMap;
use std::time::Duration;

use tidemark::{
    Config, MetricsHandle, Outputs, Pipeline, ProcessResult, Processor, Record, SinkConfig,
};
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

const PARTITIONS: i32 = 8;
const RECORDS: u64 = 60_000;

/// About 300 µs of work per record, one output per input.
struct Slow;

impl Processor for Slow {
    fn process(&self, record: &Record) -> ProcessResult {
        let until = std::time::Instant::now() + Duration::from_micros(300);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        Ok(Outputs::one(
            record.key.clone(),
            record.payload.clone().unwrap_or_default(),
        ))
    }
}

struct Run {
    ends: BTreeMap<i32, i64>,
    report: verify::SinkReport,
    /// Partitions assigned to the first and the second member over the run.
    assigned: (u64, u64),
}

/// Member A works alone, B joins, B leaves gracefully after some work, A finishes.
fn join_and_leave(properties: &[(&str, &str)]) -> Run {
    tidemark_testkit::init_tracing();
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("g"));
    broker.create_topic(&input, PARTITIONS).unwrap();
    broker.create_topic(&output, PARTITIONS).unwrap();
    let mut w = broker.workload(&input, RECORDS, PARTITIONS);
    w.keys = 256;
    workload::produce(&brokers, &w, |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();

    let config = |idle_ms: Option<u64>| {
        let mut c = Config::new(&brokers, &group, [&input]);
        c.workers = 2;
        c.commits.policy = tidemark::CommitPolicy::EveryMs(100);
        c.flow.max_in_flight_records = 2_000;
        c.lifecycle.exit_when_idle = idle_ms.map(Duration::from_millis);
        c.lifecycle.drain_timeout = std::time::Duration::from_millis(5_000);
        c.sink = SinkConfig::Topic {
            topic: output.clone(),
        };
        for (k, v) in properties {
            c.consumer_properties.insert(k.to_string(), v.to_string());
        }
        c
    };
    let first = Pipeline::new(config(Some(6_000)), Slow);
    let a_progress = first.metrics();
    let a = std::thread::spawn(move || first.run());
    wait_for(&a_progress, 10_000);

    let second = Pipeline::new(config(None), Slow);
    let b_progress = second.metrics();
    let b_stop = second.shutdown_handle();
    let b = std::thread::spawn(move || second.run());
    wait_for(&b_progress, 5_000);
    b_stop.shutdown();
    b.join().unwrap().expect("the second member stops cleanly");
    a.join().unwrap().expect("the first member stops cleanly");

    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    for (p, e) in &ends {
        assert_eq!(
            committed[p],
            Some(*e),
            "partition {p} not committed to its end"
        );
    }
    let report = verify::sink_report(&brokers, &output, &ends).unwrap();
    report.assert_nothing_lost();
    Run {
        ends,
        report,
        assigned: (
            a_progress.snapshot().assigned,
            b_progress.snapshot().assigned,
        ),
    }
}

fn wait_for(progress: &MetricsHandle, completed: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while progress.snapshot().completed < completed {
        assert!(
            std::time::Instant::now() < deadline,
            "the member never completed {completed} records"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cooperative_sticky_moves_only_what_it_must_and_duplicates_nothing() {
    let run = join_and_leave(&[
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ]);
    let (a, b) = run.assigned;
    assert!(b > 0, "the second member never got a partition");
    // Every partition A was assigned after its first 8 came back from B: with an
    // eager protocol A would also be re-assigned the partitions it kept.
    assert_eq!(
        a,
        PARTITIONS as u64 + b,
        "the first member was re-assigned partitions it kept (assigned {a}, the second {b})"
    );
    assert_eq!(
        run.report.duplicates, 0,
        "graceful cooperative rebalances must not duplicate"
    );
    assert_eq!(
        run.report.outputs.len() as i64,
        run.ends.values().sum::<i64>()
    );
}

/// KIP-848: the broker assigns; librdkafka refuses the classic assignor, session and
/// heartbeat settings, and tidemark sets none of them under this protocol.
/// librdkafka 2.12 (rdkafka 0.39) is reported to stall fetches and fail commits with
/// stale member epochs under it, so only "nothing lost, committed to the end" is
/// asserted, and duplicates are printed.
#[test]
fn kip848_consumer_protocol_join_and_leave() {
    let run = join_and_leave(&[("group.protocol", "consumer")]);
    assert!(
        run.assigned.1 > 0,
        "the second member never got a partition"
    );
    eprintln!(
        "KIP-848: assigned {:?}, {} duplicates",
        run.assigned, run.report.duplicates
    );
}

/// Under KIP-848 a classic-only property is a configuration error, before connecting.
#[test]
fn kip848_refuses_classic_only_properties() {
    let mut c = Config::new("127.0.0.1:1", "g", ["t"]);
    c.consumer_properties
        .insert("group.protocol".into(), "consumer".into());
    c.consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let err = Pipeline::new(c, Slow).run().unwrap_err();
    assert!(
        matches!(&err, tidemark::Error::Config(m) if m.contains("session.timeout.ms")),
        "got {err}"
    );
}

/// A processor with per-partition state: a count of the records it processed per
/// partition, built on assignment, added to `flushed` on revoke (before the commit
/// that covers it), dropped when lost.
#[derive(Clone, Default)]
struct Tally {
    current: std::sync::Arc<std::sync::Mutex<BTreeMap<i32, u64>>>,
    flushed: std::sync::Arc<std::sync::Mutex<BTreeMap<i32, u64>>>,
}

impl Processor for Tally {
    fn process(&self, record: &Record) -> ProcessResult {
        Slow.process(record)?;
        *self
            .current
            .lock()
            .unwrap()
            .get_mut(&record.partition)
            .expect("a record of a partition this member was not assigned") += 1;
        Ok(Outputs::none())
    }

    fn partitions_assigned(&self, partitions: &[tidemark::TopicPartition]) {
        let mut current = self.current.lock().unwrap();
        for tp in partitions {
            assert!(current.insert(tp.partition, 0).is_none(), "assigned twice");
        }
    }

    fn partitions_revoked(&self, partitions: &[tidemark::TopicPartition]) {
        let (mut current, mut flushed) =
            (self.current.lock().unwrap(), self.flushed.lock().unwrap());
        for tp in partitions {
            *flushed.entry(tp.partition).or_default() += current.remove(&tp.partition).unwrap_or(0);
        }
    }

    fn partitions_lost(&self, partitions: &[tidemark::TopicPartition]) {
        let mut current = self.current.lock().unwrap();
        for tp in partitions {
            current.remove(&tp.partition);
        }
    }
}

/// Issue 32: per-partition state flushed on revoke under cooperative rebalances (B
/// joins A, then leaves gracefully; A finishes and stops): every partition's flushed
/// counts add up to its high watermark — nothing lost, nothing counted twice — and
/// the committed offsets an independent client reads are at the high watermarks.
#[test]
fn per_partition_state_flushed_on_revoke_counts_every_record_once() {
    tidemark_testkit::init_tracing();
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("in"), unique_name("hooks"));
    broker.create_topic(&input, PARTITIONS).unwrap();
    workload::produce(
        &brokers,
        &broker.workload(&input, RECORDS, PARTITIONS),
        |_| {},
    )
    .unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();
    let config = |idle_ms: Option<u64>| {
        let mut c = Config::new(&brokers, &group, [&input]);
        c.workers = 2;
        c.commits.policy = tidemark::CommitPolicy::EveryMs(100);
        c.lifecycle.exit_when_idle = idle_ms.map(Duration::from_millis);
        c.consumer_properties
            .insert("session.timeout.ms".into(), "6000".into());
        c
    };
    let (a_tally, b_tally) = (Tally::default(), Tally::default());
    let first = Pipeline::new(config(Some(6_000)), a_tally.clone());
    let a_progress = first.metrics();
    let a = std::thread::spawn(move || first.run());
    wait_for(&a_progress, 5_000);
    let second = Pipeline::new(config(None), b_tally.clone());
    let (b_progress, b_stop) = (second.metrics(), second.shutdown_handle());
    let b = std::thread::spawn(move || second.run());
    wait_for(&b_progress, 2_000);
    b_stop.shutdown();
    b.join().unwrap().expect("the second member stops cleanly");
    a.join().unwrap().expect("the first member stops cleanly");

    assert!(
        b_progress.snapshot().assigned > 0,
        "the second member never got a partition"
    );
    let mut counted: BTreeMap<i32, u64> = BTreeMap::new();
    for tally in [&a_tally, &b_tally] {
        assert!(
            tally.current.lock().unwrap().is_empty(),
            "state left unflushed at the stop"
        );
        for (p, n) in tally.flushed.lock().unwrap().iter() {
            *counted.entry(*p).or_default() += n;
        }
    }
    let expected: BTreeMap<i32, u64> = ends.iter().map(|(p, e)| (*p, *e as u64)).collect();
    assert_eq!(
        counted, expected,
        "flushed counts per partition against the high watermarks"
    );
    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    for (p, e) in &ends {
        assert_eq!(
            committed[p],
            Some(*e),
            "partition {p} not committed to its end"
        );
    }
}
