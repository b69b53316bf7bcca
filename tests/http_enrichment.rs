//! The HTTP enrichment example (`examples/http_enrichment.rs`) on Apache Kafka with
//! its real HTTP service: every record the service knows is enriched exactly once
//! (those it first refused with 503 included, after a retry), every record it
//! answered 404 is in the dead-letter topic and nowhere else, and the committed
//! offsets are at the end — as an independent client reads the topics.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

#[path = "../examples/http_enrichment.rs"]
#[allow(dead_code)]
mod example;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tidemark::{Pipeline, HEADER_ERROR, HEADER_SRC_OFFSET, HEADER_SRC_PARTITION};
use tidemark_testkit::verify::{self, ReadRecord};
use tidemark_testkit::{unique_name, workload, Broker, KafkaBroker};

const RECORDS: u64 = 2_000;
const PARTITIONS: i32 = 4;

fn read(brokers: &str, topic: &str) -> Vec<ReadRecord> {
    let ends = verify::high_watermarks(brokers, topic).unwrap();
    verify::read_topic(
        brokers,
        topic,
        &ends,
        "read_committed",
        Duration::from_secs(60),
    )
    .unwrap()
}

/// (source partition, source offset) of each output or dead letter.
fn sources(records: &[ReadRecord]) -> Vec<(i32, i64)> {
    records
        .iter()
        .map(|r| {
            let p = r
                .header(HEADER_SRC_PARTITION)
                .expect("source partition header");
            let o = r.header(HEADER_SRC_OFFSET).expect("source offset header");
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}

#[test]
fn known_customers_are_enriched_once_and_unknown_ones_dead_lettered() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, dlq, group) = (
        unique_name("in"),
        unique_name("out"),
        unique_name("dlq"),
        unique_name("group"),
    );
    for topic in [&input, &output, &dlq] {
        broker.create_topic(topic, PARTITIONS).unwrap();
    }
    workload::produce(
        &brokers,
        &broker.workload(&input, RECORDS, PARTITIONS),
        |_| {},
    )
    .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (summary, stats) = runtime.block_on(async {
        let (addr, stats) = example::start_service().await.unwrap();
        let processor =
            example::Enrich::new(format!("http://{addr}"), Duration::from_secs(5)).unwrap();
        let config = example::config(&brokers, &group, &input, &output, &dlq, 2_000);
        let summary = Pipeline::new_async(config, processor)
            .run_async()
            .await
            .expect("the pipeline stops cleanly when idle");
        (summary, stats)
    });

    // Which input records name a customer the service does not know (id % 97 == 0).
    let inputs = read(&brokers, &input);
    let id = |r: &ReadRecord| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        v["id"].as_u64().unwrap()
    };
    let unknown: BTreeSet<(i32, i64)> = inputs
        .iter()
        .filter(|r| id(r) % 97 == 0)
        .map(|r| (r.partition, r.offset))
        .collect();
    let known: BTreeSet<(i32, i64)> = inputs
        .iter()
        .map(|r| (r.partition, r.offset))
        .filter(|c| !unknown.contains(c))
        .collect();

    assert_eq!(
        summary.records as usize,
        known.len(),
        "records completed by the run"
    );

    let outputs = sources(&read(&brokers, &output));
    assert_eq!(
        outputs.len(),
        known.len(),
        "one output per known customer, no duplicate"
    );
    assert_eq!(outputs.into_iter().collect::<BTreeSet<_>>(), known);

    let letters = read(&brokers, &dlq);
    assert_eq!(
        sources(&letters).into_iter().collect::<BTreeSet<_>>(),
        unknown
    );
    assert_eq!(letters.len(), unknown.len());
    for letter in &letters {
        let error = letter.header(HEADER_ERROR).unwrap_or_default();
        assert!(error.contains("404"), "dead letter error: {error:?}");
    }

    // The 503s were real, and each was followed by a retry that succeeded or ended
    // in the dead-letter topic: every id ending in 3 was asked twice.
    let unavailable = stats.unavailable.load(Ordering::Relaxed);
    assert_eq!(unavailable, RECORDS / 10, "ids ending in 3");
    assert_eq!(
        stats.requests.load(Ordering::Relaxed),
        RECORDS + unavailable,
        "one request per record, one more per 503"
    );
    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    let ends = verify::high_watermarks(&brokers, &input).unwrap();
    for (partition, end) in ends {
        assert_eq!(committed[&partition], Some(end), "partition {partition}");
    }
}
