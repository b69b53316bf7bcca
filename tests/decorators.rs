//! Decorators over the default `process_batch` (issue 29): an override that filters,
//! reverses, splits or hands its batch to another thread before calling an inner
//! processor's default keeps every output attributed to its own input. Read back by
//! an independent client on Apache Kafka: each kept input has exactly one output
//! carrying its own payload under its own source headers, dropped inputs have none,
//! and the committed offsets are at the high watermarks.
//!
//! On the code before the fix (a reporter in a thread-local, taken by whichever
//! default ran first) the filter attributed ~13,000 of ~13,300 outputs to other
//! inputs.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tidemark::{Batch, Config, Outputs, Pipeline, ProcessResult, Processor, Record, SinkConfig};
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

/// Echoes a record's payload; sleeps a little on some records so batches finish out
/// of order (the realistic case: a slow record among fast ones).
struct Echo;

impl Processor for Echo {
    fn process(&self, record: &Record) -> ProcessResult {
        if record.offset % 97 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Outputs::one(
            record.key.clone(),
            record.payload.clone().unwrap_or_default(),
        ))
    }
}

fn dropped(record: &Record) -> bool {
    record.offset % 3 == 0
}

/// Drops every third offset; the inner default sees a filtered copy.
struct Filter<P>(P);

impl<P: Processor> Processor for Filter<P> {
    fn process(&self, r: &Record) -> ProcessResult {
        if dropped(r) {
            Ok(Outputs::none())
        } else {
            self.0.process(r)
        }
    }
    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        let keep: Vec<usize> = (0..batch.len()).filter(|&i| !dropped(&batch[i])).collect();
        let inner: Vec<Record> = keep.iter().map(|&i| batch[i].clone()).collect();
        let mut results = self.0.process_batch(Batch::new(&inner)).into_iter();
        let mut out: Vec<ProcessResult> = batch.iter().map(|_| Ok(Outputs::none())).collect();
        for &i in &keep {
            out[i] = results.next().unwrap();
        }
        out
    }
}

/// Hands the inner default its batch reversed, and reverses the results back.
struct Reverse<P>(P);

impl<P: Processor> Processor for Reverse<P> {
    fn process(&self, r: &Record) -> ProcessResult {
        self.0.process(r)
    }
    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        let reversed: Vec<Record> = batch.iter().rev().cloned().collect();
        let mut results = self.0.process_batch(Batch::new(&reversed));
        results.reverse();
        results
    }
}

/// Splits the batch in two sub-batches for the inner default, the back half first.
struct Split<P>(P);

impl<P: Processor> Processor for Split<P> {
    fn process(&self, r: &Record) -> ProcessResult {
        self.0.process(r)
    }
    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        // The back half first, so neither sub-batch starts where the batch does.
        let (front, back) = batch.split_at(batch.len() / 2);
        let back = self.0.process_batch(Batch::new(back));
        let mut results = self.0.process_batch(Batch::new(front));
        results.extend(back);
        results
    }
}

/// Calls the inner default with the engine's own batch from a scoped thread.
struct OnAnotherThread<P>(P);

impl<P: Processor> Processor for OnAnotherThread<P> {
    fn process(&self, r: &Record) -> ProcessResult {
        self.0.process(r)
    }
    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        std::thread::scope(|s| s.spawn(|| self.0.process_batch(batch)).join().unwrap())
    }
}

/// Runs `processor` over 20,000 records on 4 partitions with a topic sink and checks
/// the outputs against the inputs, both read by an independent client.
fn attributes_every_output(processor: impl Processor, drops: bool) {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("deco"));
    broker.create_topic(&input, 4).unwrap();
    broker.create_topic(&output, 4).unwrap();
    let mut w = broker.workload(&input, 20_000, 4);
    w.keys = 64;
    workload::produce(&brokers, &w, |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();

    let mut config = Config::new(&brokers, &group, [&input]);
    config.workers = 3;
    config.commits.policy = tidemark::CommitPolicy::EveryMs(100);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(4_000));
    config.sink = SinkConfig::Topic {
        topic: output.clone(),
    };
    Pipeline::new(config, processor).run().unwrap();

    let inputs = verify::read_topic(
        &brokers,
        &input,
        &ends,
        "read_committed",
        Duration::from_secs(60),
    )
    .unwrap();
    let payloads: HashMap<(i32, i64), Vec<u8>> = inputs
        .into_iter()
        .map(|r| ((r.partition, r.offset), r.payload))
        .collect();
    let out_ends = tidemark::high_watermarks(&brokers, &output, Duration::from_secs(10)).unwrap();
    let outputs = verify::read_topic(
        &brokers,
        &output,
        &out_ends,
        "read_committed",
        Duration::from_secs(60),
    )
    .unwrap();
    let mut per_input: HashMap<(i32, i64), u32> = HashMap::new();
    let mut foreign = 0;
    for out in &outputs {
        let source = out.source().expect("source headers");
        *per_input.entry(source).or_default() += 1;
        if payloads.get(&source) != Some(&out.payload) {
            foreign += 1;
        }
    }
    assert_eq!(foreign, 0, "outputs carrying another input's payload");
    let mut missing = Vec::new();
    let mut unexpected = Vec::new();
    for (&(p, o), _) in &payloads {
        let kept = !(drops && o % 3 == 0);
        match (kept, per_input.get(&(p, o)).copied().unwrap_or(0)) {
            (true, 1) | (false, 0) => {}
            (true, n) => missing.push(((p, o), n)),
            (false, n) => unexpected.push(((p, o), n)),
        }
    }
    missing.sort();
    unexpected.sort();
    assert!(
        missing.is_empty(),
        "kept inputs without exactly one output ({}): {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        unexpected.is_empty(),
        "dropped inputs with an output ({}): {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(10)]
    );

    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    let expected: BTreeMap<i32, Option<i64>> = ends.iter().map(|(p, e)| (*p, Some(*e))).collect();
    assert_eq!(committed, expected);
}

#[test]
fn kafka_a_filtering_decorator_keeps_outputs_with_their_inputs() {
    attributes_every_output(Filter(Echo), true);
}

#[test]
fn kafka_a_reversing_decorator_keeps_outputs_with_their_inputs() {
    attributes_every_output(Reverse(Echo), false);
}

#[test]
fn kafka_a_splitting_decorator_keeps_outputs_with_their_inputs() {
    attributes_every_output(Split(Echo), false);
}

#[test]
fn kafka_a_decorator_calling_the_default_from_another_thread_keeps_outputs_with_their_inputs() {
    attributes_every_output(OnAnotherThread(Echo), false);
}
