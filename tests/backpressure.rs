//! Back-pressure on Apache Kafka: a processor far slower than `max.poll.interval.ms` allows
//! for a whole batch keeps its membership because polling never stops; and the
//! in-flight counters never exceed their bounds under a large backlog.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::time::Duration;

use tidemark::{Config, MetricsHandle, Pipeline};
use tidemark_testkit::memory::{peak_rss_kib, reset_peak_rss};
use tidemark_testkit::processors::Sleepy;
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

/// 60 ms per record, 2 workers, batches of up to 2,000 records: a whole batch would
/// take 60 s, ten times `max.poll.interval.ms` (6 s). The member must keep its
/// assignment (no rebalance, no MAXPOLL) for three poll intervals, with pause/resume
/// at work, and commit exactly what it completed.
#[test]
fn slow_processor_keeps_membership() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("in"), unique_name("group"));
    broker.create_topic(&input, 4).unwrap();
    workload::produce(&brokers, &broker.workload(&input, 2_000, 4), |_| {}).unwrap();

    let mut config = Config::new(&brokers, &group, [&input]);
    config.workers = 2;
    config.flow.max_batch_records = 2_000;
    config.flow.max_in_flight_records = 20;
    config.commits.policy = tidemark::CommitPolicy::EveryMs(500);
    config.lifecycle.drain_timeout = std::time::Duration::from_millis(2_000);
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("max.poll.interval.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        config.consumer_properties.insert(k.into(), v.into());
    }
    let pipeline = Pipeline::new(config, Sleepy(Duration::from_millis(60)));
    let progress = pipeline.metrics();
    let stop = pipeline.shutdown_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(22));
        stop.shutdown();
    });
    let summary = pipeline.run().expect("clean stop");
    stopper.join().unwrap();

    let m = progress.snapshot();
    assert_eq!(
        m.max_poll_exceeded, 0,
        "MAXPOLL: the member missed max.poll.interval.ms"
    );
    assert_eq!(m.lost, 0, "assignment lost");
    assert_eq!(
        m.assigned, 4,
        "partitions were re-assigned: a rebalance happened"
    );
    assert!(
        m.pauses >= 1 && m.resumes >= 1,
        "pause/resume never happened"
    );
    assert!(m.peak_in_flight_records <= 20);
    assert!(
        summary.records > 100,
        "only {} records processed",
        summary.records
    );
    // Exactly what completed is committed (graceful stop), nothing more.
    let committed: i64 = verify::committed_offsets(&brokers, &group, &input)
        .unwrap()
        .values()
        .map(|c| c.unwrap_or(0))
        .sum();
    assert_eq!(committed as u64, summary.records);
}

/// A backlog of 1 KB records far larger than the byte bound: the gauges never pass
/// their bounds (bytes: by at most the one record that crossed it). Peak RSS is
/// printed for BENCHMARKS.md. Sized by `TIDEMARK_MEMORY_RECORDS` (default 100,000;
/// BENCHMARKS.md uses 1,000,000).
#[test]
fn in_flight_stays_within_bounds() {
    const MAX_BYTES: usize = 16 << 20;
    // High enough that the byte bound is the one that binds.
    const MAX_RECORDS: usize = 100_000;
    const RECORD: usize = 1_024;
    let records: u64 = std::env::var("TIDEMARK_MEMORY_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("in"), unique_name("group"));
    broker.create_topic(&input, 8).unwrap();
    let mut w = broker.workload(&input, records, 8);
    w.payload_bytes = RECORD;
    workload::produce(&brokers, &w, |_| {}).unwrap();

    let mut config = Config::new(&brokers, &group, [&input]);
    config.workers = 2;
    config.flow.max_in_flight_bytes = MAX_BYTES;
    config.flow.max_in_flight_records = MAX_RECORDS;
    config.commits.policy = tidemark::CommitPolicy::EveryMs(200);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(5_000));
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let rss_before = peak_rss_kib();
    // Reset VmHWM so the peak below is the pipeline's, not the workload producer's.
    reset_peak_rss();
    // Slower than fetching, so the backlog piles up against the bounds.
    let pipeline = Pipeline::new(config, Sleepy(Duration::from_micros(300)));
    let progress: MetricsHandle = pipeline.metrics();
    let summary = pipeline.run().expect("clean stop");
    assert_eq!(summary.records, records);

    let peak_bytes = progress.snapshot().peak_in_flight_bytes as usize;
    let peak_records = progress.snapshot().peak_in_flight_records as usize;
    assert!(
        peak_records <= MAX_RECORDS,
        "records in flight peaked at {peak_records}"
    );
    assert!(
        peak_bytes <= MAX_BYTES + 2 * RECORD,
        "bytes in flight peaked at {peak_bytes}"
    );
    eprintln!(
        "bounded memory: {records} records of {RECORD} B, max_in_flight_bytes {MAX_BYTES}: \
         peak in flight {peak_records} records / {peak_bytes} B; peak RSS during the run {} MiB (after producing {} MiB); {:.0} records/s",
        peak_rss_kib() / 1024,
        rss_before / 1024,
        summary.records_per_sec()
    );
}
