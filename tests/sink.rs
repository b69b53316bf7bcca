//! With a topic sink, every input's coordinates reach the output topic (read back by an
//! independent client), and the committed offsets still end at the high watermarks.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tidemark::{Config, Outputs, Pipeline, ProcessResult, Processor, Record, SinkConfig};
use tidemark::{HEADER_SRC_OFFSET, HEADER_SRC_PARTITION};
use tidemark_testkit::{unique_name, verify, workload, Broker, EmbeddedCluster, KafkaBroker};

struct Echo;

impl Processor for Echo {
    fn process(&self, record: &Record) -> ProcessResult {
        Ok(Outputs::one(
            record.key.clone(),
            record.payload.clone().unwrap_or_default(),
        ))
    }
}

fn every_input_reaches_the_sink(broker: &dyn Broker) {
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("sink"));
    broker.create_topic(&input, 4).unwrap();
    broker.create_topic(&output, 4).unwrap();
    let mut w = broker.workload(&input, 20_000, 4);
    w.keys = 32;
    workload::produce(&brokers, &w, |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();

    let mut config = Config::new(&brokers, &group, [&input]);
    config.workers = 3;
    config.commits.policy = tidemark::CommitPolicy::EveryMs(100);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(4_000));
    config.sink = SinkConfig::Topic {
        topic: output.clone(),
    };
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let summary = Pipeline::new(config, Echo).run().unwrap();
    assert_eq!(summary.records, 20_000);

    let out_ends = tidemark::high_watermarks(&brokers, &output, Duration::from_secs(10)).unwrap();
    let out = verify::read_topic(
        &brokers,
        &output,
        &out_ends,
        "read_committed",
        Duration::from_secs(60),
    )
    .unwrap();
    let got: BTreeSet<(i32, i64)> = out
        .iter()
        .map(|r| {
            let p = r
                .header(HEADER_SRC_PARTITION)
                .expect("partition header")
                .parse()
                .unwrap();
            let o = r
                .header(HEADER_SRC_OFFSET)
                .expect("offset header")
                .parse()
                .unwrap();
            (p, o)
        })
        .collect();
    let want: BTreeSet<(i32, i64)> = ends
        .iter()
        .flat_map(|(p, e)| (0..*e).map(move |o| (*p, o)))
        .collect();
    let missing: Vec<_> = want.difference(&got).take(10).collect();
    assert!(missing.is_empty(), "inputs without output: {missing:?}");

    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    let expected: BTreeMap<i32, Option<i64>> = ends.iter().map(|(p, e)| (*p, Some(*e))).collect();
    assert_eq!(committed, expected);
}

#[test]
fn embedded_cluster_sink() {
    every_input_reaches_the_sink(&EmbeddedCluster::start(3).unwrap());
}

#[test]
fn kafka_sink() {
    every_input_reaches_the_sink(KafkaBroker::shared());
}
