//! The idle stop (`LifecycleConfig::exit_when_idle`) on Apache Kafka means caught up: a
//! member whose partitions sit held back at the in-flight bound while slow records run
//! has seen no new record for longer than the idle time, yet has records left to
//! read; it must not stop until every partition is read to its end and everything
//! polled is complete. Checked by an independent client: the committed offsets equal
//! the high watermarks.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::time::Duration;

use tidemark::{Config, Pipeline, ProcessingOrder};
use tidemark_testkit::processors::Sleepy;
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

/// 2 workers, 2 ms a record, at most 2,000 records in flight: a full window takes
/// about 2 s while the partitions are held back and nothing arrives, twice the idle
/// time. The old rule (nothing in flight, no record for the idle time) stopped at the
/// first resume with most records unread and exited as if done.
#[test]
fn the_idle_stop_waits_until_every_partition_is_read_to_its_end() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("in"), unique_name("group"));
    broker.create_topic(&input, 8).unwrap();
    workload::produce(&brokers, &broker.workload(&input, 6_000, 8), |_| {}).unwrap();
    let ends = verify::high_watermarks(&brokers, &input).unwrap();

    let mut config = Config::new(&brokers, &group, [&input]);
    config.workers = 2;
    config.ordering = ProcessingOrder::Unordered;
    config.flow.max_in_flight_records = 2_000;
    config.commits.policy = tidemark::CommitPolicy::EveryMs(200);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    let summary = Pipeline::new(config, Sleepy(Duration::from_millis(2)))
        .run()
        .expect("clean stop");

    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    for (p, end) in &ends {
        assert_eq!(
            committed.get(p).copied().flatten().unwrap_or(0),
            *end,
            "partition {p} not committed to its high watermark when the idle stop fired: {committed:?}"
        );
    }
    assert_eq!(summary.records, 6_000);
}
