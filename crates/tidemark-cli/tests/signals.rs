//! SIGTERM (what Kubernetes and systemd send) through `ShutdownHandle::stop_on_signals`,
//! which `tidemark run` uses as the examples do: the member drains what is in flight
//! and commits, so its committed offsets cover exactly what it processed, and a
//! restarted member processes only the rest — no input twice, none lost — as an
//! independent client of the output topic and the group's offsets sees it.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::time::{Duration, Instant};

use tidemark_testkit::{unique_name, workload, Broker, KafkaBroker};

#[test]
fn sigterm_mid_run_commits_what_was_processed_and_a_restart_doubles_nothing() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("term"));
    broker.create_topic(&input, 4).unwrap();
    broker.create_topic(&output, 4).unwrap();
    workload::produce(&brokers, &broker.workload(&input, 20_000, 4), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();

    let member = common::member(&brokers, &input, &output, &group, None);
    // SIGTERM while it works: once it has committed something, before it is done.
    let deadline = Instant::now() + Duration::from_secs(120);
    while common::committed_total(&brokers, &group, &input) < 2_000 {
        assert!(Instant::now() < deadline, "the member never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    common::stop_gracefully(member);
    let stopped_at = common::committed_total(&brokers, &group, &input);
    assert!(stopped_at < 20_000, "the member finished before the signal");
    // Everything processed before the stop was committed with it: the outputs so far
    // are exactly the inputs below the committed offsets, each once.
    let committed = tidemark_testkit::verify::committed_offsets(&brokers, &group, &input).unwrap();
    let below: std::collections::BTreeMap<i32, i64> = committed
        .iter()
        .map(|(p, c)| (*p, c.unwrap_or(0)))
        .collect();
    let report = common::check_sink(&brokers, &output, &below);
    report.assert_nothing_lost();
    assert_eq!(report.duplicates, 0);
    let outputs: u64 = report.outputs.values().sum();
    assert_eq!(
        outputs, stopped_at as u64,
        "an output past the committed offsets"
    );

    // The restart does the rest, and nothing twice.
    let mut again = common::member(&brokers, &input, &output, &group, Some(3));
    assert!(again.wait().unwrap().success());
    let report = common::check_sink(&brokers, &output, &ends);
    report.assert_nothing_lost();
    assert_eq!(
        report.duplicates, 0,
        "a graceful stop must leave nothing to redo"
    );
    common::assert_committed_to_end(&brokers, &group, &input, &ends);
}
