//! Async commit failures injected with the mock cluster's request errors: the
//! callback sees them, the partitions stay dirty and the next commits retry them, and
//! no committed offset ever moves backwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tidemark::{
    CommitEvent, CommitPolicy, Config, Outputs, Pipeline, ProcessResult, Processor, Record,
};
use tidemark_testkit::{verify, workload, Broker, EmbeddedCluster};

struct Slowish;

impl Processor for Slowish {
    fn process(&self, _: &Record) -> ProcessResult {
        std::thread::sleep(Duration::from_micros(200));
        Ok(Outputs::none())
    }
}

#[test]
fn failed_async_commits_are_retried_and_never_go_back() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 4).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 10_000, 4), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();
    // The first OffsetCommit requests fail with errors librdkafka hands to the app.
    cluster.with_mock(|m| {
        m.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_COMMIT_OFFSET_SIZE; 6],
        )
    });

    let mut config = Config::new(&brokers, "failing-commits", ["in"]);
    config.workers = 2;
    config.commits.policy = CommitPolicy::EveryMs(20);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(2_000));
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    Pipeline::new(config, Slowish)
        .on_commit(move |e: &CommitEvent| sink.lock().push(e.clone()))
        .run()
        .expect("clean stop: the final commit succeeds once the errors are used up");

    let events = events.lock();
    let first_failure = events
        .iter()
        .position(|e| e.result.is_err())
        .expect("an injected failure reached the callback");
    assert!(
        events[first_failure..].iter().any(|e| e.result.is_ok()),
        "no successful commit after the failures"
    );
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.result.is_ok()) {
        for po in &e.offsets {
            let prev = last.entry(po.partition).or_insert(po.offset);
            assert!(
                po.offset >= *prev,
                "partition {} went back from {} to {}",
                po.partition,
                prev,
                po.offset
            );
            *prev = po.offset;
        }
    }
    let committed = verify::committed_offsets(&brokers, "failing-commits", "in").unwrap();
    for (p, end) in &ends {
        assert_eq!(committed[p], Some(*end), "partition {p}");
    }
}
