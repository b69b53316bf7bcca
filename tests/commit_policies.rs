//! Every commit policy and mode on the embedded cluster: each run ends with the
//! committed offsets at the high watermarks, the callback's successful commits never
//! go backwards and its last ones equal what the broker holds, and the number of
//! commits is what the policy promises.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidemark::{
    CommitEvent, CommitMode, CommitPolicy, Config, Outputs, Pipeline, ProcessResult, Processor,
    Record,
};
use tidemark_testkit::{verify, EmbeddedCluster};

const RECORDS: u64 = 4_000;
const PARTITIONS: i32 = 4;

struct Noop;

impl Processor for Noop {
    fn process(&self, _: &Record) -> ProcessResult {
        Ok(Outputs::none())
    }
}

/// Runs `policy`/`mode` over a fresh workload; returns the successful commit events.
fn run(policy: CommitPolicy, mode: CommitMode) -> Vec<CommitEvent> {
    run_with(policy, mode, Noop, |_| {})
}

/// [`run`] with `tune` applied to the config.
fn run_with(
    policy: CommitPolicy,
    mode: CommitMode,
    processor: impl Processor + 'static,
    tune: impl FnOnce(&mut Config),
) -> Vec<CommitEvent> {
    let (_cluster, brokers) = EmbeddedCluster::with_workload("in", PARTITIONS, RECORDS).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();

    let mut config = Config::new(&brokers, "policies", ["in"]);
    config.workers = 2;
    config.commits.policy = policy;
    config.commits.mode = mode;
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_500));
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    tune(&mut config);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    Pipeline::new(config, processor)
        .on_commit(move |e: &CommitEvent| sink.lock().push(e.clone()))
        .run()
        .expect("clean stop");
    let events: Vec<CommitEvent> = events
        .lock()
        .drain(..)
        .filter(|e| e.result.is_ok())
        .collect();

    // Monotonic per partition, and the last ones are what the broker holds.
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for e in &events {
        for po in &e.offsets {
            let prev = last.entry(po.partition).or_insert(po.offset);
            assert!(
                po.offset >= *prev,
                "{policy:?}/{mode:?}: partition {} went back",
                po.partition
            );
            *prev = po.offset;
        }
    }
    let committed = verify::committed_offsets(&brokers, "policies", "in").unwrap();
    for (p, end) in &ends {
        assert_eq!(
            committed[p],
            Some(*end),
            "{policy:?}/{mode:?}: partition {p}"
        );
        assert_eq!(
            last.get(p),
            Some(end),
            "{policy:?}/{mode:?}: callback's last commit of {p}"
        );
    }
    events
}

#[test]
fn every_ms_async_and_sync() {
    for mode in [CommitMode::Async, CommitMode::Sync] {
        let events = run(CommitPolicy::EveryMs(50), mode);
        assert!(!events.is_empty());
    }
}

#[test]
fn every_records_commits_once_per_n_completed() {
    let n = 500;
    let events = run(CommitPolicy::EveryRecords(n), CommitMode::Async);
    // Each policy commit covers at least n newly completed records; the final
    // (and revoke) commits come on top.
    assert!(
        events.len() as u64 <= RECORDS / n + 2,
        "{} commits",
        events.len()
    );
}

#[test]
fn every_batch_commits_after_batches() {
    // Poll rounds of at most 500 records (`max_batch_records`) of records taking
    // 1 ms each: the batches complete over about two seconds, not at once (batches
    // that complete before the poll thread looks share a commit, so with a no-op
    // processor one commit could cover everything).
    let events = run_with(
        CommitPolicy::EveryBatch,
        CommitMode::Async,
        tidemark::from_fn(|_: &Record| {
            std::thread::sleep(Duration::from_millis(1));
            Ok(Outputs::none())
        }),
        |c| c.flow.max_batch_records = 500,
    );
    assert!(events.len() >= 2, "{} commits", events.len());
}

#[test]
fn every_record_commits_once_per_record() {
    let events = run(CommitPolicy::EveryRecord, CommitMode::Sync);
    // One commit per completed record (its partition's watermark), nothing dirty
    // remains for the final commit.
    assert_eq!(events.len() as u64, RECORDS);
    assert!(events.iter().all(|e| e.offsets.len() == 1));
}

#[test]
fn every_record_async_commits_at_most_once_per_record() {
    // One async commit at a time: records completed while one is unanswered share
    // the next (`run` checks they never go back and end at the high watermarks).
    let events = run(CommitPolicy::EveryRecord, CommitMode::Async);
    assert!(!events.is_empty());
    assert!(events.len() as u64 <= RECORDS, "{} commits", events.len());
}

#[test]
fn at_end_commits_only_at_the_end() {
    let events = run(CommitPolicy::AtEnd, CommitMode::Async);
    assert_eq!(events.len(), 1, "one final commit: {events:?}");
    assert_eq!(events[0].offsets.len(), PARTITIONS as usize);
}

#[test]
fn librdkafka_auto_commit_commits_the_stored_committable_offsets() {
    // Its results reach the callback (librdkafka's OFFSET_COMMIT events).
    let events = run(CommitPolicy::Auto(50), CommitMode::Async);
    assert!(events.len() >= 2, "{} commits", events.len());
}

/// A commit of one partition on demand commits that partition only, at its
/// watermark; the others wait for the policy (here: the end).
#[test]
fn commit_handle_commits_one_partition_on_demand() {
    let (_cluster, brokers) = EmbeddedCluster::with_workload("in", PARTITIONS, RECORDS).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();

    let mut config = Config::new(&brokers, "on-demand", ["in"]);
    config.workers = 2;
    config.commits.policy = CommitPolicy::AtEnd;
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let events = Arc::new(Mutex::new(Vec::<CommitEvent>::new()));
    let record = events.clone();
    let pipeline =
        Pipeline::new(config, Noop).on_commit(move |e: &CommitEvent| record.lock().push(e.clone()));
    let progress = pipeline.metrics();
    let commits = pipeline.commit_handle();
    let stop = pipeline.shutdown_handle();
    let b = brokers.clone();
    let driver = std::thread::spawn(move || {
        while progress.completed() < RECORDS {
            std::thread::sleep(Duration::from_millis(10));
        }
        commits.commit_partition("in", 2);
        while progress.snapshot().commits < 1 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let before_stop = verify::committed_offsets(&b, "on-demand", "in").unwrap();
        stop.shutdown();
        before_stop
    });
    pipeline.run().expect("clean stop");
    let before_stop = driver.join().unwrap();
    for (p, end) in &ends {
        let expected = (*p == 2).then_some(*end);
        assert_eq!(before_stop[p], expected, "partition {p} before the stop");
    }
    let events = events.lock();
    assert_eq!(events[0].offsets.len(), 1, "{:?}", events[0]);
    assert_eq!(events[0].offsets[0].partition, 2);
    assert_eq!(events[0].offsets[0].offset, ends[&2]);
    let after = verify::committed_offsets(&brokers, "on-demand", "in").unwrap();
    for (p, end) in &ends {
        assert_eq!(after[p], Some(*end), "partition {p} after the stop");
    }
}
