//! A slow record holds back only itself, on Apache Kafka. A record whose `process`
//! *sleeps* (not a retriable failure, which leaves its task at once) used to hold
//! back the completion of every record dispatched with it: its partition stayed
//! committed at 0 while offset 100 slept, and the next owner redid 1,015 records.
//! Now, while it sleeps, an independent client reads the committed offset exactly at
//! it and an offset map marking every record above it complete; after a graceful
//! stop the next owner processes that record again and no other of its partition.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark::offsets::OffsetMap;
use tidemark::{Config, Outputs, Pipeline, ProcessResult, Processor, Record};
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

const SLOW: (i32, i64) = (0, 100);
const PER_PARTITION: i64 = 3_000;

/// Sleeps in the record at `SLOW` until released; records the offsets of
/// partition 0 it processed.
#[derive(Default)]
struct SleepsAt100 {
    release: Arc<AtomicBool>,
    partition0: Arc<Mutex<Vec<i64>>>,
    sleep: bool,
}

impl Processor for SleepsAt100 {
    fn process(&self, record: &Record) -> ProcessResult {
        if record.partition == SLOW.0 {
            self.partition0.lock().unwrap().push(record.offset);
        }
        if self.sleep && (record.partition, record.offset) == SLOW {
            while !self.release.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(Outputs::none())
    }
}

fn config(brokers: &str, group: &str, input: &str) -> Config {
    let mut config = Config::new(brokers, group, [input]);
    config.workers = 4;
    config.commits.policy = tidemark::CommitPolicy::EveryMs(200);
    config.lifecycle.drain_timeout = std::time::Duration::from_millis(500);
    config
}

#[test]
fn a_sleeping_record_holds_back_only_itself() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("in"), unique_name("group"));
    broker.create_topic(&input, 3).unwrap();
    // Unique keys (key order, the default), record id to partition id % 3.
    let mut w = broker.workload(&input, 3 * PER_PARTITION as u64, 3);
    w.keys = w.records;
    w.partition_by_id = true;
    workload::produce(&brokers, &w, |_| {}).unwrap();

    let first = SleepsAt100 {
        sleep: true,
        ..SleepsAt100::default()
    };
    let release = first.release.clone();
    let pipeline = Pipeline::new(config(&brokers, &group, &input), first);
    let stop = pipeline.shutdown_handle();
    let run = std::thread::spawn(move || pipeline.run());

    // While offset 100 sleeps: committed exactly at it, the rest marked complete.
    let expected_map = [SLOW.1 + 1..PER_PARTITION];
    let covered = |c: &BTreeMap<i32, Option<(i64, String)>>| {
        c.iter().all(|(p, c)| match c {
            Some((o, m)) if *p == SLOW.0 => {
                *o == SLOW.1
                    && OffsetMap::decode(m).is_ok_and(|map| map.completed() == expected_map)
            }
            Some((o, _)) => *o == PER_PARTITION,
            None => false,
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let committed = verify::committed_with_metadata(&brokers, &group, &input).unwrap();
        if covered(&committed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "while record 100 sleeps, the commits never covered the others: {committed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A graceful stop: the drain times out on the sleeping record, the final
    // commit keeps it and the map.
    stop.shutdown();
    run.join().unwrap().expect("clean stop");
    let committed = verify::committed_with_metadata(&brokers, &group, &input).unwrap();
    assert!(covered(&committed), "after the stop: {committed:?}");
    release.store(true, Ordering::Relaxed);

    // The next owner processes record 100 again and no other of partition 0.
    let next = SleepsAt100::default();
    let redone = next.partition0.clone();
    let mut c = config(&brokers, &group, &input);
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    Pipeline::new(c, next).run().expect("clean run");
    assert_eq!(*redone.lock().unwrap(), vec![SLOW.1]);
    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    assert!(
        committed.values().all(|c| *c == Some(PER_PARTITION)),
        "{committed:?}"
    );
}
