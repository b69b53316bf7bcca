//! Poison records and retries through the CLI, on Apache Kafka, checked by an
//! independent reader of the output and dead-letter topics and of the committed
//! offsets.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

fn tidemark_run(brokers: &str, input: &str, group: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args([
        "run",
        "--brokers",
        brokers,
        "--topic",
        input,
        "--group",
        group,
    ])
    .args(["--workers", "2", "--commit", "every-ms:200"])
    .args(["-X", "session.timeout.ms=6000"])
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    cmd
}

/// `tidemark run --processor json --dead-letter-topic DLQ --sink topic:OUT` over a
/// keyed topic holding some malformed records: exit 0, every good input in OUT in
/// per-key offset order, every malformed one in DLQ with its coordinates and error,
/// lag 0.
#[test]
fn poison_records_go_to_the_dead_letter_topic_and_the_rest_goes_on() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, dlq, group) = (
        unique_name("in"),
        unique_name("out"),
        unique_name("dlq"),
        unique_name("g"),
    );
    broker.create_topic(&input, 4).unwrap();
    let mut w = broker.workload(&input, 6_000, 4);
    w.keys = 40;
    workload::produce(&brokers, &w, |_| {}).unwrap();
    // Malformed records under the same keys, then more good ones after them.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in 0..30 {
        let key = format!("k{}", i % 40);
        producer
            .send(
                BaseRecord::to(&input)
                    .key(&key)
                    .payload(&format!("not json {i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut more = broker.workload(&input, 2_000, 4);
    more.keys = 40;
    more.first_id = 6_000;
    workload::produce(&brokers, &more, |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();

    let status = tidemark_run(
        &brokers,
        &input,
        &group,
        &[
            "--processor",
            "json",
            "--sink",
            &format!("topic:{output}"),
            "--dead-letter-topic",
            &dlq,
            "--exit-when-idle",
            "4",
        ],
    )
    .status()
    .unwrap();
    assert!(status.success(), "tidemark run exited with {status}");

    // What the input holds, as an independent reader sees it.
    let inputs = verify::read_topic(
        &brokers,
        &input,
        &ends,
        "read_committed",
        Duration::from_secs(60),
    )
    .unwrap();
    let malformed: BTreeMap<(i32, i64), Vec<u8>> = inputs
        .iter()
        .filter(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).is_err())
        .map(|r| ((r.partition, r.offset), r.payload.clone()))
        .collect();
    assert_eq!(malformed.len(), 30);

    // The dead-letter topic holds exactly the malformed records, with their headers.
    let dlq_ends = verify::high_watermarks(&brokers, &dlq).unwrap();
    let letters = verify::read_topic(
        &brokers,
        &dlq,
        &dlq_ends,
        "read_committed",
        Duration::from_secs(60),
    )
    .unwrap();
    let mut seen = BTreeMap::new();
    for l in &letters {
        let (p, o) = l.source().expect("source coordinates in the headers");
        assert_eq!(l.header(tidemark::HEADER_SRC_TOPIC), Some(input.as_str()));
        assert!(l
            .header(tidemark::HEADER_ERROR)
            .unwrap()
            .contains("malformed JSON"));
        assert_eq!(l.header(tidemark::HEADER_ATTEMPTS), Some("1"));
        seen.insert((p, o), l.payload.clone());
    }
    assert_eq!(
        seen, malformed,
        "the dead-letter topic must hold exactly the poison records"
    );

    // Every good input reached the sink; per key, in offset order.
    let report = verify::sink_report(&brokers, &output, &ends).unwrap();
    let missing: Vec<_> = report
        .missing
        .iter()
        .filter(|k| !malformed.contains_key(k))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "good inputs missing from the sink: {missing:?}"
    );
    let out_ends = verify::high_watermarks(&brokers, &output).unwrap();
    let outs = verify::read_topic(
        &brokers,
        &output,
        &out_ends,
        "read_committed",
        Duration::from_secs(60),
    )
    .unwrap();
    let key_of: HashMap<(i32, i64), String> = inputs
        .iter()
        .map(|r| {
            let v: serde_json::Value =
                serde_json::from_slice(&r.payload).unwrap_or(serde_json::Value::Null);
            (
                (r.partition, r.offset),
                v["key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut last: HashMap<(i32, String), i64> = HashMap::new();
    for r in &outs {
        let p: i32 = r
            .header(tidemark::HEADER_SRC_PARTITION)
            .unwrap()
            .parse()
            .unwrap();
        let o: i64 = r
            .header(tidemark::HEADER_SRC_OFFSET)
            .unwrap()
            .parse()
            .unwrap();
        let key = key_of[&(p, o)].clone();
        if let Some(prev) = last.insert((p, key.clone()), o) {
            assert!(
                prev < o,
                "key {key} of partition {p}: output of {o} after {prev}"
            );
        }
    }

    // Lag 0.
    common::assert_committed_to_end(&brokers, &group, &input, &ends);
}

/// A member SIGKILLed while records wait in their retry backoff: after a restart
/// those records are processed (at least once) and nothing is lost.
#[test]
fn a_member_killed_while_records_wait_for_a_retry_loses_nothing() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("g"));
    broker.create_topic(&input, 4).unwrap();
    broker.create_topic(&output, 4).unwrap();
    workload::produce(&brokers, &broker.workload(&input, 8_000, 4), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();
    let sink = format!("topic:{output}");
    // Offsets 0, 500, 1000, ... of each partition fail their first 3 attempts, with
    // 2 s between attempts: 6 s of backoff each, and the kill comes after 3 s.
    let flaky = [
        "--sink",
        sink.as_str(),
        "--test-flaky",
        "500:3",
        "--max-attempts",
        "5",
        "--retry-backoff-ms",
        "2000:2000",
    ];
    let mut first = tidemark_run(&brokers, &input, &group, &flaky)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    common::kill_child(&mut first);
    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    for (p, e) in &ends {
        assert!(
            committed[p].unwrap_or(0) < *e,
            "partition {p} was done before the kill: the kill did not hit a backoff"
        );
    }

    let mut args = flaky.to_vec();
    args.extend(["--exit-when-idle", "4"]);
    let status = tidemark_run(&brokers, &input, &group, &args)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the restarted member exited with {status}"
    );
    let report = verify::sink_report(&brokers, &output, &ends).unwrap();
    report.assert_nothing_lost();
    common::assert_committed_to_end(&brokers, &group, &input, &ends);
}
