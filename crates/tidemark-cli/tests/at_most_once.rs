//! At-most-once across a kill, on the embedded cluster (the child `tidemark run`
//! connects to it over loopback): no input ever reaches the sink twice, and the kill
//! loses at most the records in flight.

mod common;

use std::time::Duration;

use tidemark_testkit::{workload, Broker, EmbeddedCluster};

const IN_FLIGHT: usize = common::MAX_IN_FLIGHT;

#[test]
fn at_most_once_never_duplicates_across_a_kill() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 4).unwrap();
    cluster.create_topic("out", 4).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 20_000, 4), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();
    let args = ["--delivery", "at-most-once"];

    let mut child = common::member_with(&brokers, "in", "out", "amo", None, &args);
    // Wait until it has committed some but not all, then kill it mid-work.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = common::committed_total(&brokers, "amo", "in");
        if done > 2_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress before the kill"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the member exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    common::kill(child);
    let at_kill = common::committed_total(&brokers, "amo", "in");
    let mut last = common::member_with(&brokers, "in", "out", "amo", Some(12), &args);
    assert!(last.wait().unwrap().success());

    let report = common::check_sink(&brokers, "out", &ends);
    assert_eq!(
        report.duplicates, 0,
        "at-most-once processed a record twice"
    );
    assert!(
        report.missing.len() <= IN_FLIGHT,
        "the kill lost {} records, more than the {IN_FLIGHT} in flight",
        report.missing.len()
    );
    eprintln!(
        "at-most-once: {at_kill} committed at the kill; the kill lost {} records, 0 duplicates",
        report.missing.len()
    );
}
