//! A free consumer (`--assign`, `--offset-store file:PATH`) killed mid-work resumes
//! from its store: nothing is lost, the kill costs at most the in-flight bound in
//! duplicates, and the store ends at the high watermarks. On the embedded cluster
//! (the child connects to it over loopback).

mod common;

use std::time::{Duration, Instant};

use tidemark::{FileOffsetStore, TopicPartition};
use tidemark_testkit::{workload, Broker, EmbeddedCluster};

fn saved_total(path: &std::path::Path) -> i64 {
    // A missing file (nothing saved yet) is an empty store.
    FileOffsetStore::open(path)
        .map(|s| s.offsets().values().sum())
        .unwrap_or(0)
}

#[test]
fn free_consumer_resumes_from_its_store_after_a_kill() {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 4).unwrap();
    cluster.create_topic("out", 4).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 20_000, 4), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("offsets");
    let assign = "in:0,in:1,in:2,in:3";

    let child = common::free_member(&brokers, assign, &store, "out", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while saved_total(&store) < 4_000 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    common::kill(child);
    let at_kill = saved_total(&store);
    assert!(at_kill < 20_000, "the kill came after the end");
    let mut last = common::free_member(&brokers, assign, &store, "out", Some(3));
    assert!(last.wait().unwrap().success());

    let saved = FileOffsetStore::open(&store).unwrap().offsets();
    for (p, end) in &ends {
        assert_eq!(saved[&TopicPartition::new("in", *p)], *end, "partition {p}");
    }
    let report = common::check_sink(&brokers, "out", &ends);
    report.assert_nothing_lost();
    assert!(
        report.duplicates <= common::MAX_IN_FLIGHT as u64,
        "{} duplicates from one kill, more than the in-flight bound",
        report.duplicates
    );
}
