//! The offset map across a SIGKILL, on Apache Kafka: a member holds one record
//! (it keeps failing retriably, or its `process` sleeps: a slow call, which used to
//! hold back every record dispatched with it) while every other record completes;
//! once the
//! committed metadata (read by an independent client) marks them complete, the
//! member is SIGKILLed. The next member processes the held record and nothing else:
//! the sink topic holds every input exactly once. Without the map the next member
//! would process again every record above the held one.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]
// Offset ranges compared as one-element lists.
#![allow(clippy::single_range_in_vec_init)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tidemark::offsets::OffsetMap;
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

const HELD: (i32, i64) = (0, 100);

#[test]
fn after_a_sigkill_the_next_member_redoes_only_what_the_last_commit_did_not_cover() {
    let hold = format!("{}:{}", HELD.0, HELD.1);
    held_then_killed(&[
        "--test-hold",
        &hold,
        "--ordering",
        "unordered",
        "--max-attempts",
        "1000000000",
        "--retry-backoff-ms",
        "10:50",
    ]);
}

/// The realistic case: the record does not fail, its `process` sleeps.
#[test]
fn a_sleeping_record_holds_back_only_itself_across_a_sigkill() {
    let sleep = format!("{}:{}", HELD.0, HELD.1);
    held_then_killed(&["--test-sleep", &sleep, "--ordering", "unordered"]);
}

/// A member runs with `member_args` (which hold the record at `HELD`) until the
/// commits an independent client reads cover every other record, is SIGKILLed, and
/// the next member must process the held record and no other.
fn held_then_killed(member_args: &[&str]) {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("g"));
    broker.create_topic(&input, 2).unwrap();
    broker.create_topic(&output, 2).unwrap();
    workload::produce(&brokers, &broker.workload(&input, 3_000, 2), |_| {}).unwrap();
    let ends = verify::high_watermarks(&brokers, &input).unwrap();

    // The commit-lag bound above every record of the topic (a later flag wins): the
    // held record keeps its partition's completed records uncommitted, and at the
    // default test bound (2,000) a slow commit of the other partition could pause
    // the held one for good before it is read to its end — by design, and not
    // what this test is about.
    let mut args = member_args.to_vec();
    args.extend(["--max-uncommitted-records", "100000"]);
    let mut first = member_with(&brokers, &input, &output, &group, None, &args);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed = verify::committed_with_metadata(&brokers, &group, &input).unwrap();
        let covered = committed.iter().all(|(p, c)| match c {
            Some((o, m)) if *p == HELD.0 => {
                *o == HELD.1
                    && OffsetMap::decode(m)
                        .is_ok_and(|map| map.completed() == [HELD.1 + 1..ends[p]])
            }
            Some((o, _)) => *o == ends[p],
            None => false,
        });
        if covered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the commits never covered the completed records: {committed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    kill_child(&mut first);

    // Idle limit past the session timeout (6 s) the group waits out before it
    // gives the killed member's partitions away.
    let mut second = member(&brokers, &input, &output, &group, Some(10));
    assert!(second.wait().unwrap().success());
    assert_committed_to_end(&brokers, &group, &input, &ends);
    let report = check_sink(&brokers, &output, &ends);
    report.assert_nothing_lost();
    assert_eq!(
        report.duplicates, 0,
        "records completed before the kill were processed again"
    );
}
