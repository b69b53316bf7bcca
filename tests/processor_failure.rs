//! A processor error stops the pipeline cleanly: the error names the failed record, and
//! the committed offset of its partition stops exactly at it (never past). A panic in
//! user code is such an error too: the process survives it.

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

/// Panics on the bad record instead of returning an error.
struct PanicsOnce;

impl Processor for PanicsOnce {
    fn process(&self, record: &Record) -> ProcessResult {
        if record.partition == BAD_PARTITION && record.offset == BAD_OFFSET {
            panic!("poison record");
        }
        Ok(Outputs::none())
    }
}

/// Overrides `process_batch` and panics in it for the batch holding the bad record.
struct BatchPanics;

impl Processor for BatchPanics {
    fn process(&self, _: &Record) -> ProcessResult {
        Ok(Outputs::none())
    }

    fn process_batch(&self, records: tidemark::Batch<'_>) -> Vec<ProcessResult> {
        if records
            .iter()
            .any(|r| r.partition == BAD_PARTITION && r.offset == BAD_OFFSET)
        {
            panic!("poison batch");
        }
        records.iter().map(|r| self.process(r)).collect()
    }
}

#[test]
fn processor_error_stops_at_the_failed_record() {
    let err = stops_at_the_failed_record(
        tidemark::CommitPolicy::EveryMs(20),
        "fail-test",
        FailsOnce,
        Some(BAD_OFFSET),
    );
    assert_eq!(err.message, "poison record");
}

/// With librdkafka's auto-commit, what it commits is only ever the stored watermark.
#[test]
fn librdkafka_auto_commit_never_passes_the_failed_record() {
    stops_at_the_failed_record(
        tidemark::CommitPolicy::Auto(20),
        "fail-auto",
        FailsOnce,
        Some(BAD_OFFSET),
    );
}

/// A panic in `process` fails that record alone: the process survives, the error
/// carries the panic message, the commit stops exactly at the record.
#[test]
fn a_panicking_processor_stops_at_the_record_without_aborting() {
    let err = stops_at_the_failed_record(
        tidemark::CommitPolicy::EveryMs(20),
        "panic-test",
        PanicsOnce,
        Some(BAD_OFFSET),
    );
    assert_eq!(err.kind, tidemark::FailureKind::Permanent);
    assert!(err.message.contains("poison record"), "{}", err.message);
}

/// A panic in an overriding `process_batch` fails the batch's records: the commit
/// stops at or below the bad record, never past it.
#[test]
fn a_panicking_process_batch_stops_without_aborting() {
    let err = stops_at_the_failed_record(
        tidemark::CommitPolicy::EveryMs(20),
        "batch-panic-test",
        BatchPanics,
        None,
    );
    assert!(err.message.contains("poison batch"), "{}", err.message);
}

/// Runs `processor` until it fails; asserts the error names partition `BAD_PARTITION`
/// (at offset `exact`, when given, else at or below `BAD_OFFSET`) and that the
/// committed offset there equals the failed offset. Returns the processor's error.
fn stops_at_the_failed_record(
    policy: tidemark::CommitPolicy,
    group: &str,
    processor: impl Processor,
    exact: Option<i64>,
) -> ProcessError {
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("in", 4).unwrap();
    workload::produce(&brokers, &workload::Workload::new("in", 40_000, 4), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, "in", Duration::from_secs(10)).unwrap();

    let mut config = Config::new(&brokers, group, ["in"]);
    config.workers = 2;
    config.commits.policy = policy;
    config
        .consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let err = Pipeline::new(config, processor).run().unwrap_err();
    let (failed_at, source) = match err {
        Error::Processor {
            topic,
            partition,
            offset,
            source,
        } => {
            assert_eq!((topic.as_str(), partition), ("in", BAD_PARTITION));
            match exact {
                Some(o) => assert_eq!(offset, o),
                None => assert!(offset <= BAD_OFFSET, "failed at {offset}"),
            }
            (offset, source)
        }
        other => panic!("expected a processor error, got {other}"),
    };
    let committed = verify::committed_offsets(&brokers, group, "in").unwrap();
    // Everything below the failed record completed before the stop, nothing at or
    // above it may be committed on its partition.
    assert_eq!(committed[&BAD_PARTITION], Some(failed_at));
    for (p, c) in committed {
        assert!(
            c.unwrap_or(0) <= ends[&p],
            "partition {p} committed past its end"
        );
    }
    source
}
