//! Exactly-once on the embedded cluster. Its transaction support runs the whole
//! protocol (InitProducerId, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, fencing by
//! epoch) but writes no commit/abort markers and stores no transactional offsets, so
//! what these tests check is tidemark's side: the offsets sent in each transaction,
//! the rewind after an abort (every record of the aborted transaction is processed
//! again, and nothing else). It does not fence an older producer when a newer one
//! with the same `transactional.id` starts, so the fenced path (`Error::Transaction`)
//! is not exercised here; `crates/tidemark-cli/tests/exactly_once_crash.rs` runs
//! exactly-once end to end, across kills, on Apache Kafka.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tidemark::{
    CommitEvent, CommitPolicy, Config, Delivery, Outputs, Pipeline, ProcessResult, Processor,
    Record, SinkConfig, TopicPartition, HEADER_SRC_OFFSET, HEADER_SRC_PARTITION,
};
use tidemark_testkit::{verify, Broker, EmbeddedCluster};

const RECORDS: u64 = 4_000;
const PARTITIONS: i32 = 4;

struct Echo;

impl Processor for Echo {
    fn process(&self, record: &Record) -> ProcessResult {
        std::thread::sleep(Duration::from_micros(100));
        Ok(Outputs::one(
            None,
            record.payload.clone().unwrap_or_default(),
        ))
    }
}

fn setup() -> (EmbeddedCluster, String, BTreeMap<i32, i64>) {
    tidemark_testkit::init_tracing();
    let (cluster, brokers) = EmbeddedCluster::with_workload("in", PARTITIONS, RECORDS).unwrap();
    cluster.create_topic("out", PARTITIONS).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();
    (cluster, brokers, ends)
}

fn eos_config(brokers: &str, group: &str) -> Config {
    let mut config = Config::new(brokers, group, ["in"]);
    config.workers = 2;
    config.delivery = Delivery::ExactlyOnce;
    config.sink = SinkConfig::Topic {
        topic: "out".into(),
    };
    config.commits.policy = CommitPolicy::EveryMs(50);
    // Several transactions over the input.
    config.flow.max_in_flight_records = 500;
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_500));
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    config
}

/// How many outputs each input `(partition, offset)` has in `out` (read uncommitted:
/// the embedded cluster writes no abort markers, so aborted outputs stay visible).
fn outputs_per_input(brokers: &str) -> HashMap<(i32, i64), u64> {
    let ends = tidemark::high_watermarks(brokers, "out", Duration::from_secs(10)).unwrap();
    let mut seen = HashMap::new();
    for r in verify::read_topic(
        brokers,
        "out",
        &ends,
        "read_uncommitted",
        Duration::from_secs(60),
    )
    .unwrap()
    {
        let p = r.header(HEADER_SRC_PARTITION).unwrap().parse().unwrap();
        let o = r.header(HEADER_SRC_OFFSET).unwrap().parse().unwrap();
        *seen.entry((p, o)).or_insert(0) += 1;
    }
    seen
}

#[test]
fn an_aborted_transaction_is_processed_again_and_nothing_else() {
    let (cluster, brokers, ends) = setup();
    // The second transaction's TxnOffsetCommit fails with an error that makes
    // librdkafka require an abort.
    cluster.with_mock(|m| {
        m.request_errors(
            RDKafkaApiKey::TxnOffsetCommit,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
            ],
        )
    });
    let events = Arc::new(Mutex::new(Vec::<CommitEvent>::new()));
    let record = events.clone();
    let pipeline = Pipeline::new(eos_config(&brokers, "eos-abort"), Echo)
        .on_commit(move |e: &CommitEvent| record.lock().push(e.clone()));
    let progress = pipeline.metrics();
    let summary = pipeline.run().expect("clean stop");
    assert!(
        progress.snapshot().aborts >= 1,
        "the injected error did not abort a transaction"
    );

    // The records of each aborted transaction: from the offsets the last committed
    // transaction carried up to the offsets the aborted one tried to commit.
    let events = events.lock();
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    let mut aborted_records = 0i64;
    for e in events.iter() {
        for po in &e.offsets {
            let from = committed.get(&po.partition).copied().unwrap_or(0);
            if e.result.is_ok() {
                assert!(po.offset >= from, "partition {} went back", po.partition);
                committed.insert(po.partition, po.offset);
            } else {
                aborted_records += po.offset - from;
            }
        }
    }
    assert!(
        aborted_records > 0,
        "no transaction was aborted: {events:?}"
    );
    for (p, end) in &ends {
        assert_eq!(committed.get(p), Some(end), "partition {p}");
        assert_eq!(
            summary.committed.get(&TopicPartition::new("in", *p)),
            Some(end)
        );
    }

    // Every input has an output; the only inputs with two are those of the aborted
    // transaction (whose outputs a read_committed reader would never see).
    let seen = outputs_per_input(&brokers);
    for (p, end) in &ends {
        for o in 0..*end {
            assert!(seen.contains_key(&(*p, o)), "input {p}@{o} has no output");
        }
    }
    let duplicates: u64 = seen.values().map(|n| n - 1).sum();
    assert_eq!(
        duplicates as i64, aborted_records,
        "outputs beyond the first must be exactly the aborted transaction's"
    );
}
