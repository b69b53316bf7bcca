//! Crash chaos on Apache Kafka: `tidemark run --sink topic:out` is SIGKILLed at random
//! moments and restarted, then finishes with `--exit-when-idle`. An independent
//! consumer of `out` must find every input at least once, with at most the in-flight
//! bound of duplicates per kill, and the committed offsets must never go backwards.
//!
//! Longer run: `TIDEMARK_CHAOS_RECORDS=1000000 TIDEMARK_CHAOS_EVENTS=20 cargo nextest
//! run -p tidemark-cli --test crash_chaos --run-ignored all`.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::time::Duration;

use tidemark_testkit::{unique_name, workload, Broker, KafkaBroker};

/// Kills and restarts `tidemark run` (with `extra` arguments) over `records` inputs
/// on 8 partitions, then asserts every input reached the output at least once and
/// duplicates stay within the in-flight bound per kill.
fn kill_and_check(records: u64, extra: &[&str], label: &str) {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("chaos"));
    let records = common::records(records);
    let kills = common::events(4);
    broker.create_topic(&input, 8).unwrap();
    broker.create_topic(&output, 8).unwrap();
    workload::produce(&brokers, &broker.workload(&input, records, 8), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();
    assert_eq!(ends.values().sum::<i64>() as u64, records);

    let report = common::kill_and_recover(
        &brokers,
        &input,
        &output,
        &group,
        &ends,
        kills,
        8_000..12_000,
        extra,
    );
    report.assert_nothing_lost();
    let bound = (kills * common::MAX_IN_FLIGHT) as u64;
    assert!(
        report.duplicates <= bound,
        "{} duplicates over {kills} kills (bound {bound})",
        report.duplicates
    );
    eprintln!(
        "{label}: {records} records, {kills} kills, {} duplicates",
        report.duplicates
    );
}

#[test]
fn killed_and_restarted_members_lose_nothing() {
    kill_and_check(100_000, &[], "crash chaos");
}

/// The same chaos with an async processor: `io:500` (each record awaits a 500 µs
/// timer) with up to 2,000 records processed at once — futures in flight when a
/// member is SIGKILLed are lost with it, and their records are processed again by
/// the next owner, never skipped.
#[test]
fn killed_and_restarted_async_members_lose_nothing() {
    // An async member is fast: one 200 ms commit interval can cover ten thousand
    // records, so a kill lands up to that far past its trigger. 200,000 records keep
    // four kills from consuming the input before the last member (it did with 50,000).
    kill_and_check(
        200_000,
        &["--processor", "io:500", "--concurrency", "2000"],
        "async crash chaos",
    );
}
