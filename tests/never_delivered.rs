//! Offsets that are never delivered must never hold a watermark (invariant 1), on
//! Apache Kafka: a compacted topic (the log cleaner removed most offsets) and a
//! transactional input read under `read_committed` (commit/abort markers take
//! offsets; aborted records are never delivered). The pipeline finishes, the
//! committed offsets equal the high watermarks, exactly the records an independent
//! reader sees are processed, and no aborted record is.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_executor::block_on;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::sync::Arc;
use tidemark::{Config, Outputs, Pipeline, ProcessResult, Processor, Record};
use tidemark_testkit::{unique_name, verify, Broker, KafkaBroker};

/// Remembers every processed record's offset and payload.
#[derive(Default)]
struct Collect(Mutex<BTreeMap<(i32, i64), String>>);

impl Processor for Collect {
    fn process(&self, record: &Record) -> ProcessResult {
        let payload = String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default());
        self.0
            .lock()
            .insert((record.partition, record.offset), payload.into_owned());
        Ok(Outputs::none())
    }
}

fn producer(brokers: &str, transactional_id: Option<&str>) -> BaseProducer {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5");
    if let Some(id) = transactional_id {
        cc.set("transactional.id", id);
    }
    cc.create().expect("producer")
}

fn send(p: &BaseProducer, topic: &str, key: &str, payload: &str) {
    p.send(BaseRecord::to(topic).key(key).payload(payload))
        .map_err(|(e, _)| e)
        .expect("queued");
    p.poll(Duration::ZERO);
}

/// Runs a pipeline over `topic` until idle; returns what it processed, after checking
/// that its committed offsets equal the high watermarks.
fn run_to_the_end(brokers: &str, topic: &str) -> BTreeMap<(i32, i64), String> {
    let group = unique_name("g");
    let processed = Arc::new(Collect::default());
    let mut c = Config::new(brokers, &group, [topic]);
    c.workers = 2;
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(3_000));
    c.commits.policy = tidemark::CommitPolicy::EveryMs(100);
    c.consumer_properties
        .insert("isolation.level".into(), "read_committed".into());
    Pipeline::new(c, processed.clone())
        .run()
        .expect("the pipeline finishes");
    let ends = tidemark::high_watermarks(brokers, topic, Duration::from_secs(10)).unwrap();
    let committed = verify::committed_offsets(brokers, &group, topic).unwrap();
    let expected: BTreeMap<i32, Option<i64>> = ends.iter().map(|(p, e)| (*p, Some(*e))).collect();
    assert_eq!(
        committed, expected,
        "committed offsets must reach the high watermarks"
    );
    let seen = std::mem::take(&mut *processed.0.lock());
    seen
}

#[test]
fn transaction_markers_and_aborted_records_hold_nothing() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let topic = unique_name("txn-in");
    broker.create_topic(&topic, 2).unwrap();
    let p = producer(&brokers, Some(&unique_name("txn")));
    let t = Duration::from_secs(30);
    p.init_transactions(t).unwrap();
    let mut committed_ids = BTreeSet::new();
    for round in 0..6 {
        p.begin_transaction().unwrap();
        let abort = round % 3 == 1;
        for i in 0..200 {
            let id = format!("{round}-{i}");
            send(&p, &topic, &format!("k{i}"), &id);
            if !abort {
                committed_ids.insert(id);
            }
        }
        // Serve the delivery reports first (a BaseProducer has no thread for them).
        p.flush(t).unwrap();
        if abort {
            p.abort_transaction(t).unwrap();
        } else {
            p.commit_transaction(t).unwrap();
        }
    }
    // The log ends with a commit marker on every partition.

    let seen = run_to_the_end(&brokers, &topic);
    let processed: BTreeSet<String> = seen.values().cloned().collect();
    assert_eq!(processed.len(), seen.len(), "a record was processed twice");
    let aborted: Vec<_> = processed.difference(&committed_ids).take(5).collect();
    assert!(aborted.is_empty(), "aborted records processed: {aborted:?}");
    assert_eq!(processed, committed_ids, "committed records not processed");
}

#[test]
fn compacted_away_offsets_hold_nothing() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let topic = unique_name("compacted");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "100")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("min.compaction.lag.ms", "0")
        .set("delete.retention.ms", "100");
    let created = block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // 50 keys rewritten 20 times, in rounds far enough apart that segments roll
    // (segment.ms) and the cleaner may compact all but the active one.
    let p = producer(&brokers, None);
    for round in 0..20 {
        for k in 0..50 {
            send(&p, &topic, &format!("k{k}"), &format!("{round}"));
        }
        p.flush(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let ends = tidemark::high_watermarks(&brokers, &topic, Duration::from_secs(10)).unwrap();
    assert_eq!(ends[&0], 1_000);

    // Wait until the cleaner has removed most offsets, as an independent reader sees.
    let deadline = Instant::now() + Duration::from_secs(90);
    let present = loop {
        let read = verify::read_topic(
            &brokers,
            &topic,
            &ends,
            "read_committed",
            Duration::from_secs(30),
        )
        .unwrap();
        if read.len() < 500 {
            break read;
        }
        assert!(Instant::now() < deadline, "the log cleaner never ran");
        // New appends roll the active segment so that it can be cleaned too.
        send(&p, &topic, "roll", "x");
        p.flush(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    };
    let ends = tidemark::high_watermarks(&brokers, &topic, Duration::from_secs(10)).unwrap();

    let seen = run_to_the_end(&brokers, &topic);
    let offsets: BTreeSet<i64> = seen.keys().map(|(_, o)| *o).collect();
    let present: BTreeSet<i64> = present.iter().map(|r| r.offset).collect();
    // Everything present when the cleaner was done is processed (records appended
    // since to roll segments may be there too); nothing below the end is missing.
    assert!(
        present.is_subset(&offsets),
        "records present in the log not processed"
    );
    assert!(
        offsets.len() < ends[&0] as usize,
        "nothing was compacted away"
    );
}
