//! The PostgreSQL upsert example (`examples/postgres_upsert.rs`) on Apache Kafka and a
//! real PostgreSQL: every key's row counts each of its inputs exactly once and holds
//! its last one — and a second consumer group that processes every record again
//! (what a new owner does after a crash, at worst) changes nothing, as an independent
//! client reads the table.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

#[path = "../examples/postgres_upsert.rs"]
#[allow(dead_code)]
mod example;

use std::collections::BTreeMap;

use tidemark::Pipeline;
use tidemark_testkit::verify::{self, ReadRecord};
use tidemark_testkit::{unique_name, workload, Broker, KafkaBroker, PostgresServer};

/// What each key's row must hold: (records, last id, last offset).
fn expected(inputs: &[ReadRecord]) -> BTreeMap<String, (i64, i64, i64)> {
    let mut by_key: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for r in inputs {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let entry = by_key.entry(key).or_insert((0, -1, -1));
        entry.0 += 1;
        if r.offset > entry.2 {
            entry.1 = v["id"].as_i64().unwrap();
            entry.2 = r.offset;
        }
    }
    by_key
}

#[test]
fn each_input_counts_once_even_when_processed_again() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let server = PostgresServer::shared();
    let db = server.client().unwrap();
    // The example's table has a fixed name: start from an empty one.
    db.execute(&format!("DROP TABLE IF EXISTS {}", example::TABLE))
        .unwrap();
    let input = unique_name("events");
    broker.create_topic(&input, 4).unwrap();
    let mut w = broker.workload(&input, 6_000, 4);
    w.keys = 50;
    workload::produce(&brokers, &w, |_| {}).unwrap();
    let ends = verify::high_watermarks(&brokers, &input).unwrap();
    let inputs = verify::read_topic(
        &brokers,
        &input,
        &ends,
        "read_committed",
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let want = expected(&inputs);
    assert_eq!(want.len(), 50);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let table = || -> BTreeMap<String, (i64, i64, i64)> {
        db.query(&format!(
            "SELECT key, records, last_id, src_offset FROM {}",
            example::TABLE
        ))
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
    };
    for round in 0..2 {
        // Round 1 is a group of its own: every record is processed a second time.
        let group = unique_name("upsert");
        let summary = runtime
            .block_on(async {
                let processor = example::Upsert::connect(server.url()).await.unwrap();
                Pipeline::new_async(example::config(&brokers, &group, &input, 2_000), processor)
                    .run_async()
                    .await
            })
            .unwrap();
        assert_eq!(summary.records, 6_000, "round {round}");
        assert_eq!(
            table(),
            want,
            "round {round}: the table is not one count per input"
        );
        let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
        for (p, end) in &ends {
            assert_eq!(committed[p], Some(*end), "round {round}: partition {p}");
        }
    }
}
