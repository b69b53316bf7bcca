//! A free consumer (no group): it reads the partitions it is given, starts where its
//! offset store says, and saves its watermarks there; a second run resumes from the
//! store and processes only what is new.

use std::collections::BTreeMap;
use std::time::Duration;

use tidemark::{
    CommitPolicy, Config, FileOffsetStore, Outputs, Pipeline, ProcessResult, Processor, Record,
    TopicPartition,
};
use tidemark_testkit::{workload, EmbeddedCluster};

const PARTITIONS: i32 = 4;
/// The free consumer reads two of the four partitions.
const ASSIGNED: [i32; 2] = [0, 2];

struct Noop;

impl Processor for Noop {
    fn process(&self, _: &Record) -> ProcessResult {
        Ok(Outputs::none())
    }
}

fn run_free(brokers: &str, store: &std::path::Path) -> (u64, BTreeMap<TopicPartition, i64>) {
    let assignment = ASSIGNED
        .iter()
        .map(|p| TopicPartition::new("in", *p))
        .collect();
    let mut config = Config::free(brokers, assignment);
    config.workers = 2;
    config.commits.policy = CommitPolicy::EveryMs(50);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    let summary = Pipeline::new(config, Noop)
        .with_offset_store(FileOffsetStore::open(store).unwrap())
        .run()
        .expect("clean stop");
    (
        summary.records,
        FileOffsetStore::open(store).unwrap().offsets(),
    )
}

#[test]
fn free_consumer_resumes_from_its_store() {
    let (_cluster, brokers) = EmbeddedCluster::with_workload("in", PARTITIONS, 4_000).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offsets");

    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();
    let (records, saved) = run_free(&brokers, &path);
    let expected: BTreeMap<TopicPartition, i64> = ASSIGNED
        .iter()
        .map(|p| (TopicPartition::new("in", *p), ends[p]))
        .collect();
    assert_eq!(
        saved, expected,
        "the store holds the assigned partitions' ends"
    );
    assert_eq!(records as i64, expected.values().sum::<i64>());

    // More input; a new run processes only what its store does not cover.
    let mut more = workload::Workload::new("in", 400, PARTITIONS);
    more.first_id = 4_000;
    workload::produce(&brokers, &more, |_| {}).unwrap();
    let ends2 = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();
    let (records2, saved2) = run_free(&brokers, &path);
    let new: i64 = ASSIGNED.iter().map(|p| ends2[p] - ends[p]).sum();
    assert_eq!(
        records2 as i64, new,
        "the second run processed only new records"
    );
    for p in ASSIGNED {
        assert_eq!(saved2[&TopicPartition::new("in", p)], ends2[&p]);
    }
}

#[test]
fn a_free_consumer_needs_a_store_and_no_group() {
    let config = Config::free("127.0.0.1:1", vec!["in:0".parse().unwrap()]);
    assert!(matches!(
        Pipeline::new(config, Noop).run(),
        Err(tidemark::Error::Config(m)) if m.contains("offset store")
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new("127.0.0.1:1", "g", ["in"]);
    assert!(matches!(
        Pipeline::new(config, Noop)
            .with_offset_store(FileOffsetStore::open(dir.path().join("o")).unwrap())
            .run(),
        Err(tidemark::Error::Config(_))
    ));
}
