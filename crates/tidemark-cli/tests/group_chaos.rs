//! Group chaos on Apache Kafka: three members of one group started and stopped at
//! random while they work through the input, with `cooperative-sticky` (tidemark's
//! default assignor). With graceful leaves and kills mixed, no input is lost; with
//! graceful leaves only, none is processed twice either (a leaving member drains and
//! commits its partitions before they move, and the partitions that stay are not
//! disturbed). A watcher asserts that committed offsets never go backwards.
//!
//! Longer run: `TIDEMARK_CHAOS_RECORDS=1000000 TIDEMARK_CHAOS_EVENTS=40 cargo nextest
//! run -p tidemark-cli --test group_chaos`.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::process::Child;
use std::time::Duration;

use rand::Rng;
use tidemark_testkit::{unique_name, workload, Broker, KafkaBroker};

const MEMBERS: usize = 3;

/// Returns the number of duplicates found in the sink; asserts nothing was lost.
fn group_chaos(kills: bool, extra: &[&str]) -> u64 {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("group"));
    let records = common::records(160_000);
    broker.create_topic(&input, 8).unwrap();
    broker.create_topic(&output, 8).unwrap();
    workload::produce(&brokers, &broker.workload(&input, records, 8), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();

    let watcher = common::CommitWatcher::start(&brokers, &group, &input);
    let mut rng = rand::rng();
    let mut members: Vec<Option<Child>> = (0..MEMBERS).map(|_| None).collect();
    // Chaos stops once three quarters are committed, so every event meets a group
    // with work left (fast members could otherwise finish between events).
    let enough = records as i64 * 3 / 4;
    let mut during = 0;
    for _ in 0..common::events(8) {
        let slot = rng.random_range(0..MEMBERS);
        match members[slot].take() {
            None => {
                members[slot] = Some(common::member_with(
                    &brokers, &input, &output, &group, None, extra,
                ))
            }
            Some(child) if kills && rng.random_bool(0.5) => common::kill(child),
            Some(child) => common::stop_gracefully(child),
        }
        // What the group had committed when this event hit it.
        during = common::committed_total(&brokers, &group, &input);
        if during >= enough {
            break;
        }
        let pause = Duration::from_millis(rng.random_range(2_000..5_000));
        let started = std::time::Instant::now();
        while started.elapsed() < pause
            && common::committed_total(&brokers, &group, &input) < enough
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(
        0 < during && during < records as i64,
        "chaos did not overlap the work: {during} committed at the last event"
    );
    // Finish: every slot runs until the input is drained and the group is idle.
    for m in members.iter_mut() {
        if let Some(child) = m.take() {
            common::stop_gracefully(child);
        }
    }
    let mut finishers: Vec<Child> = (0..MEMBERS)
        .map(|_| common::member_with(&brokers, &input, &output, &group, Some(10), extra))
        .collect();
    for child in finishers.iter_mut() {
        let status = child.wait().unwrap();
        assert!(status.success(), "a finishing member exited with {status}");
    }
    let backwards = watcher.finish();
    assert!(
        backwards.is_empty(),
        "committed offsets went backwards: {backwards:?}"
    );

    let report = common::check_sink(&brokers, &output, &ends);
    report.assert_nothing_lost();
    eprintln!(
        "group chaos (kills: {kills}): {records} records, {} duplicates",
        report.duplicates
    );
    report.duplicates
}

#[test]
fn members_coming_and_going_lose_nothing() {
    group_chaos(true, &[]);
}

#[test]
fn graceful_leaves_and_joins_duplicate_nothing() {
    assert_eq!(
        group_chaos(false, &[]),
        0,
        "graceful rebalances must not duplicate"
    );
}
