//! A processor error stops the pipeline cleanly: the error names the failed record, and
//! the committed offset of its partition stops exactly at it (never past).

use std::time::Duration;

use tidemark::{Config, Error, Outputs, Pipeline, ProcessError, ProcessResult, Processor, Record};
use tidemark_testkit::{verify, workload, Broker, EmbeddedCluster};

const BAD_PARTITION: i32 = 1;
const BAD_OFFSET: i64 = 1_234;

struct FailsOnce;

impl Processor for FailsOnce {
    fn process(&self, record: &Record) -> ProcessResult {
        if record.partition == BAD_PARTITION && record.offset == BAD_OFFSET {
            return Err(ProcessError::permanent("poison record"));
        }
        Ok(Outputs::none())
    }
}

#[test]
fn processor_error_stops_at_the_failed_record() {
    stops_at_the_failed_record(tidemark::CommitPolicy::EveryMs(20), "fail-test");
}

/// With librdkafka's auto-commit, what it commits is only ever the stored watermark.
#[test]
fn librdkafka_auto_commit_never_passes_the_failed_record() {
    stops_at_the_failed_record(tidemark::CommitPolicy::Auto(20), "fail-auto");
}

fn stops_at_the_failed_record(policy: tidemark::CommitPolicy, group: &str) {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 4).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 40_000, 4), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();

    let mut config = Config::new(&brokers, group, ["in"]);
    config.workers = 2;
    config.commit = policy;
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let err = Pipeline::new(config, FailsOnce).run().unwrap_err();
    match err {
        Error::Processor {
            topic,
            partition,
            offset,
            source,
        } => {
            assert_eq!(
                (topic.as_str(), partition, offset),
                ("in", BAD_PARTITION, BAD_OFFSET)
            );
            assert_eq!(source.message, "poison record");
        }
        other => panic!("expected a processor error, got {other}"),
    }
    let committed = verify::committed_offsets(&brokers, group, "in").unwrap();
    // Everything below the failed record completed before the stop, nothing at or
    // above it may be committed on its partition.
    assert_eq!(committed[&BAD_PARTITION], Some(BAD_OFFSET));
    for (p, c) in committed {
        assert!(
            c.unwrap_or(0) <= ends[&p],
            "partition {p} committed past its end"
        );
    }
}
