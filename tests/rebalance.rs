//! Rebalances in-process on the embedded cluster: a second member joins a working
//! group and later both leave when idle. Nothing is lost with either an eager
//! (`range`) or the cooperative (`cooperative-sticky`) protocol, and the final
//! commits reach the high watermarks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidemark::{Config, Outputs, Pipeline, ProcessResult, Processor, Record};
use tidemark_testkit::{verify, workload, Broker, EmbeddedCluster};

#[derive(Default)]
struct Counting {
    seen: Mutex<HashMap<(i32, i64), u32>>,
}

impl Processor for Counting {
    fn process(&self, record: &Record) -> ProcessResult {
        std::thread::sleep(Duration::from_millis(1));
        *self
            .seen
            .lock()
            .entry((record.partition, record.offset))
            .or_default() += 1;
        Ok(Outputs::none())
    }
}

fn second_member_joins(strategy: &str) -> (u64, u64) {
    tidemark_testkit::init_tracing();
    let cluster = EmbeddedCluster::start(3).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 6).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 20_000, 6), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();

    let processor = Arc::new(Counting::default());
    let config = || {
        let mut c = Config::new(&brokers, "rebalance", ["in"]);
        c.workers = 2;
        c.commits.policy = tidemark::CommitPolicy::EveryMs(100);
        c.flow.max_in_flight_records = 1_000;
        // The duplicate bound below: records not covered by a confirmed commit.
        c.flow.max_uncommitted_records = 1_000;
        c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(8_000));
        c.lifecycle.drain_timeout = std::time::Duration::from_millis(3_000);
        for (k, v) in [
            ("partition.assignment.strategy", strategy),
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "500"),
            ("max.poll.interval.ms", "6000"),
        ] {
            c.consumer_properties.insert(k.into(), v.into());
        }
        c
    };
    let first = Pipeline::new(config(), processor.clone());
    let first_progress = first.metrics();
    let a = std::thread::spawn(move || first.run());
    // Let the first member work alone for a while, then add the second.
    while first_progress.snapshot().completed < 5_000 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = Pipeline::new(config(), processor.clone());
    let second_progress = second.metrics();
    let b = std::thread::spawn(move || second.run());
    a.join().unwrap().expect("first member stops cleanly");
    b.join().unwrap().expect("second member stops cleanly");
    assert!(
        second_progress.snapshot().assigned > 0,
        "the second member never got a partition"
    );
    assert!(
        first_progress.snapshot().revoked > 0,
        "the first member never gave a partition up"
    );

    let seen = processor.seen.lock();
    let missing: Vec<_> = ends
        .iter()
        .flat_map(|(p, e)| (0..*e).map(move |o| (*p, o)))
        .filter(|k| !seen.contains_key(k))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "lost records with {strategy}: {missing:?}"
    );
    let committed = verify::committed_offsets(&brokers, "rebalance", "in").unwrap();
    for (p, e) in &ends {
        assert_eq!(committed[p], Some(*e), "partition {p} with {strategy}");
    }
    let duplicates: u64 = seen.values().map(|n| (*n - 1) as u64).sum();
    (seen.len() as u64, duplicates)
}

#[test]
fn eager_rebalance_loses_nothing() {
    let (_, duplicates) = second_member_joins("range");
    // The mock cluster refuses commits during an eager rebalance
    // (REBALANCE_IN_PROGRESS, for about session.timeout.ms − 1 s while the member
    // keeps processing), so the revoked partitions' uncommitted records may be
    // processed again: what the member that lost them held uncommitted. The
    // commit-lag bound (1,000) pauses only the partitions over their share, so a
    // member can hold up to twice it, and an eager group rebalances twice here (the
    // second member joins; the first leaves when idle): at most 4 × 1,000. (At most
    // 1,000 was asserted before; the old engine also went past it under load, 2,301
    // seen, and record-granular completion reaches the bound more often.)
    assert!(duplicates <= 4_000, "{duplicates} duplicates");
}

#[test]
fn cooperative_rebalance_loses_nothing() {
    let (_, duplicates) = second_member_joins("cooperative-sticky");
    assert!(duplicates <= 1_000, "{duplicates} duplicates");
}
