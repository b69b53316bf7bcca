//! What the offset map will rely on, on Apache Kafka: the metadata string of an
//! OffsetCommit comes back with the committed offset, both to an independent
//! OffsetFetch and to the next member of the group in its assignment.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tidemark_testkit::{unique_name, workload, Broker, KafkaBroker};

fn member(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap()
}

#[test]
fn commit_metadata_round_trips_through_the_broker() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (topic, group) = (unique_name("meta"), unique_name("g"));
    broker.create_topic(&topic, 2).unwrap();
    workload::produce(&brokers, &workload::Workload::new(&topic, 100, 2), |_| {}).unwrap();
    // Printable, near the broker's default budget (offset.metadata.max.bytes = 4096).
    let metadata: Vec<String> = (0..2)
        .map(|p| format!("tm1:{p}:{}", "AbC/+=9".repeat(500)))
        .collect();

    let first = member(&brokers, &group);
    first.subscribe(&[&topic]).unwrap();
    while first.assignment().unwrap().count() < 2 {
        first.poll(Duration::from_millis(100));
    }
    let mut tpl = TopicPartitionList::new();
    for (p, m) in metadata.iter().enumerate() {
        tpl.add_partition_offset(&topic, p as i32, Offset::Offset(10 + p as i64))
            .unwrap();
        tpl.find_partition(&topic, p as i32)
            .unwrap()
            .set_metadata(m.clone());
    }
    first
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    drop(first); // leaves the group

    // The next member of the group reads it back for its assignment.
    let next = member(&brokers, &group);
    next.subscribe(&[&topic]).unwrap();
    while next.assignment().unwrap().count() < 2 {
        next.poll(Duration::from_millis(100));
    }
    let assigned = next.assignment().unwrap();
    let got = next
        .committed_offsets(assigned, Duration::from_secs(10))
        .unwrap();
    for (p, m) in metadata.iter().enumerate() {
        let e = got.find_partition(&topic, p as i32).unwrap();
        assert_eq!(e.offset(), Offset::Offset(10 + p as i64));
        assert_eq!(e.metadata(), m.as_str(), "partition {p}: metadata lost");
    }

    // Over the broker's budget the commit is refused (OFFSET_METADATA_TOO_LARGE),
    // which is why the offset map must fit it.
    let mut big = TopicPartitionList::new();
    big.add_partition_offset(&topic, 0, Offset::Offset(20))
        .unwrap();
    big.find_partition(&topic, 0)
        .unwrap()
        .set_metadata("x".repeat(5_000));
    let refused = next.commit(&big, rdkafka::consumer::CommitMode::Sync);
    let committed = next
        .committed_offsets(next.assignment().unwrap(), Duration::from_secs(10))
        .unwrap();
    assert!(
        refused.is_err()
            || committed.find_partition(&topic, 0).unwrap().offset() == Offset::Offset(10),
        "a commit over offset.metadata.max.bytes was stored"
    );
}
