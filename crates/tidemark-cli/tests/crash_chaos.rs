//! Crash chaos on Apache Kafka: `tidemark run --sink topic:out` is SIGKILLed at random
//! moments and restarted, then finishes with `--exit-when-idle`. An independent
//! consumer of `out` must find every input at least once, with at most the in-flight
//! bound of duplicates per kill, and the committed offsets must never go backwards.
//!
//! Longer run: `TIDEMARK_CHAOS_RECORDS=1000000 TIDEMARK_CHAOS_EVENTS=20 cargo nextest
//! run -p tidemark-cli --test crash_chaos --run-ignored all`.

mod common;

use std::time::Duration;

use rand::Rng;
use tidemark_testkit::{unique_name, workload, Broker, KafkaBroker};

#[test]
fn killed_and_restarted_members_lose_nothing() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("chaos"));
    let records = common::records(100_000);
    let kills = common::events(4);
    broker.create_topic(&input, 8).unwrap();
    broker.create_topic(&output, 8).unwrap();
    workload::produce(&brokers, &broker.workload(&input, records, 8), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();
    assert_eq!(ends.values().sum::<i64>() as u64, records);

    let watcher = common::CommitWatcher::start(&brokers, &group, &input);
    let mut rng = rand::rng();
    for _ in 0..kills {
        let child = common::member(&brokers, &input, &output, &group, None);
        // Long enough for the group to expire the killed member (session timeout 6 s),
        // rejoin, and process for a while.
        std::thread::sleep(Duration::from_millis(rng.random_range(8_000..12_000)));
        common::kill(child);
    }
    // The kills must have hit a member at work, not an idle or finished one.
    let during = common::committed_total(&brokers, &group, &input);
    assert!(
        0 < during && during < records as i64,
        "chaos did not overlap the work: {during} committed"
    );
    let mut last = common::member(&brokers, &input, &output, &group, Some(8));
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
    let bound = (kills * common::MAX_IN_FLIGHT) as u64;
    assert!(
        report.duplicates <= bound,
        "{} duplicates over {kills} kills (bound {bound})",
        report.duplicates
    );
    eprintln!(
        "crash chaos: {records} records, {kills} kills, {} duplicates",
        report.duplicates
    );
}
