//! Exactly-once across crashes, on Apache Kafka: `tidemark run --delivery
//! exactly-once --transactional-id ID --sink topic:out` is SIGKILLed at random
//! moments and restarted with the same id (its first transaction fences the killed
//! instance and aborts what it left open). A `read_committed` reader of `out` must
//! find every input's output exactly once — no duplicate, nothing missing — and the
//! group's committed offsets must equal the input's high watermarks.

mod common;

use std::time::Duration;

use rand::Rng;
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
    let watcher = common::CommitWatcher::start(&brokers, &group, &input);
    let mut rng = rand::rng();
    for _ in 0..kills {
        let child = common::member_with(&brokers, &input, &output, &group, None, &eos);
        // Long enough for the group to expire the killed member (session timeout 6 s)
        // and for the new one to commit a few transactions.
        std::thread::sleep(Duration::from_millis(rng.random_range(9_000..13_000)));
        common::kill(child);
    }
    let during = common::committed_total(&brokers, &group, &input);
    assert!(
        0 < during && during < records as i64,
        "chaos did not overlap the work: {during} committed"
    );
    let mut last = common::member_with(&brokers, &input, &output, &group, Some(8), &eos);
    let status = last.wait().unwrap();
    assert!(status.success(), "final run exited with {status}");
    let backwards = watcher.finish();
    assert!(
        backwards.is_empty(),
        "committed offsets went backwards: {backwards:?}"
    );

    let committed = tidemark_testkit::verify::committed_offsets(&brokers, &group, &input).unwrap();
    for (p, end) in &ends {
        assert_eq!(
            committed[p],
            Some(*end),
            "partition {p} not committed to its end"
        );
    }
    let report = common::check_sink(&brokers, &output, &ends);
    report.assert_nothing_lost();
    assert_eq!(
        report.duplicates, 0,
        "exactly-once published an input's output twice over {kills} kills"
    );
    eprintln!("exactly-once chaos: {records} records, {kills} kills, 0 duplicates");
}
