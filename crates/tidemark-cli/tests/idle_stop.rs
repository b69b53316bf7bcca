//! `--exit-when-idle` never fires before the member has an assignment, on Apache
//! Kafka: a member started while the group still waits out a SIGKILLed member's
//! session timeout (6 s here) waits longer than its idle time for its first
//! assignment. Before, it stopped after the idle time with nothing processed and
//! exited 0. Checked by an independent client: committed offsets = high watermarks.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

#[test]
fn a_member_waiting_for_its_first_assignment_is_not_idle() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("g"));
    broker.create_topic(&input, 4).unwrap();
    broker.create_topic(&output, 4).unwrap();
    workload::produce(&brokers, &broker.workload(&input, 2_000, 4), |_| {}).unwrap();
    let ends = verify::high_watermarks(&brokers, &input).unwrap();

    // A member that joins, commits a little, and is SIGKILLed: it stays in the group
    // until its session times out (6 s). It holds partition 0's record 10 (a
    // retriable failure, over and over), so work is certainly left for the next one.
    let mut first = member_with(
        &brokers,
        &input,
        &output,
        &group,
        None,
        &[
            "--test-hold",
            "0:10",
            "--max-attempts",
            "1000000000",
            "--retry-backoff-ms",
            "10:50",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_total(&brokers, &group, &input) == 0 {
        assert!(
            Instant::now() < deadline,
            "the first member never committed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_child(&mut first);

    // Idle time 2 s, well below the 6 s the join waits.
    let mut second = member(&brokers, &input, &output, &group, Some(2));
    let status = second.wait().unwrap();
    assert!(status.success(), "second member exited with {status}");
    assert_committed_to_end(&brokers, &group, &input, &ends);
    check_sink(&brokers, &output, &ends).assert_nothing_lost();
}
