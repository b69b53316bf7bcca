//! Exactly-once across crashes, on Apache Kafka: `tidemark run --delivery
//! exactly-once --transactional-id ID --sink topic:out` is SIGKILLed at random
//! moments and restarted with the same id (its first transaction fences the killed
//! instance and aborts what it left open). A `read_committed` reader of `out` must
//! find every input's output exactly once — no duplicate, nothing missing — and the
//! group's committed offsets must equal the input's high watermarks.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::time::Duration;

use tidemark_testkit::{unique_name, workload, Broker, KafkaBroker};

#[test]
fn killed_exactly_once_members_publish_every_output_once() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("eos"));
    let transactional_id = unique_name("tidemark-eos");
    let records = common::records(100_000);
    let kills = common::events(4);
    broker.create_topic(&input, 8).unwrap();
    broker.create_topic(&output, 8).unwrap();
    workload::produce(&brokers, &broker.workload(&input, records, 8), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();

    let eos = [
        "--delivery",
        "exactly-once",
        "--transactional-id",
        &transactional_id,
    ];
    // Each member lives long enough to commit a few transactions.
    let report = common::kill_and_recover(
        &brokers,
        &input,
        &output,
        &group,
        &ends,
        kills,
        9_000..13_000,
        &eos,
    );
    report.assert_nothing_lost();
    assert_eq!(
        report.duplicates, 0,
        "exactly-once published an input's output twice over {kills} kills"
    );
    eprintln!("exactly-once chaos: {records} records, {kills} kills, 0 duplicates");
}
