//! Decorators over the default `process_batch` (issue 29): whatever an override does
//! with its batch before an inner processor's default runs, every output reaches the
//! sink under its own input's coordinates and every kept record completes — against
//! the fake consumer and producer. On the code with the thread-local reporter the
//! filter, reverse and split shapes attributed outputs to other records.

use super::*;
use crate::processor::Batch;

/// Echoes each record's payload to the sink.
struct Payload;

impl Processor for Payload {
    fn process(&self, record: &Record) -> ProcessResult {
        Ok(Outputs::one(
            None,
            record.payload.clone().unwrap_or_default(),
        ))
    }
}

/// Drops every third offset; the inner default sees a filtered copy.
struct Filter<P>(P);

impl<P: Processor> Processor for Filter<P> {
    fn process(&self, r: &Record) -> ProcessResult {
        self.0.process(r)
    }
    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        let keep: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].offset % 3 != 0)
            .collect();
        let inner: Vec<Record> = keep.iter().map(|&i| batch[i].clone()).collect();
        let mut results = self.0.process_batch(Batch::new(&inner)).into_iter();
        let mut out: Vec<ProcessResult> = batch.iter().map(|_| Ok(Outputs::none())).collect();
        for &i in &keep {
            out[i] = results.next().unwrap();
        }
        out
    }
}

/// The batch reversed for the inner default, the results reversed back.
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

/// Two sub-batches for the inner default, the back half first.
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

/// The engine's batch passed on to the inner default on a scoped thread.
struct OnAnotherThread<P>(P);

impl<P: Processor> Processor for OnAnotherThread<P> {
    fn process(&self, r: &Record) -> ProcessResult {
        self.0.process(r)
    }
    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        std::thread::scope(|s| s.spawn(|| self.0.process_batch(batch)).join().unwrap())
    }
}

/// The engine's batch passed on, and outputs the inner default already sent
/// "changed" afterwards (the change is ignored and logged: the sent outputs stand).
struct ChangesSentResults<P>(P);

impl<P: Processor> Processor for ChangesSentResults<P> {
    fn process(&self, r: &Record) -> ProcessResult {
        self.0.process(r)
    }
    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        self.0
            .process_batch(batch)
            .into_iter()
            .map(|r| r.map(|_| Outputs::one(None, b"changed".to_vec())))
            .collect()
    }
}

/// Runs `processor` over offsets 0..30 of partition 0 with a topic sink; returns
/// each output's (source offset, payload), sorted, and the committed offset.
fn outputs_of(processor: impl Processor) -> (Vec<(i64, String)>, Option<i64>) {
    let producer = FakeProducer::default();
    let sink = Sink::over(Box::new(producer.clone()), Some("out"), None);
    let c = config(|_| {});
    let mut d = driver_over(
        &c,
        CommitTarget::Group(CommitMode::Sync),
        blocking(processor),
        Some(Arc::new(sink)),
    );
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..30);
    d.turn(&fake);
    drain_all(&d);
    assert!(!d.engine.state.lock().must_stop());
    d.finish(&fake).unwrap();
    let mut outputs: Vec<(i64, String)> = producer
        .log()
        .visible
        .iter()
        .map(|p| {
            let offset = p.header(crate::HEADER_SRC_OFFSET).unwrap().parse().unwrap();
            (
                offset,
                String::from_utf8(p.payload.clone().unwrap_or_default().to_vec()).unwrap(),
            )
        })
        .collect();
    outputs.sort();
    (outputs, fake.committed(T, 0))
}

/// Each of `offsets` once, with its own payload.
fn own(offsets: impl Iterator<Item = i64>) -> Vec<(i64, String)> {
    offsets.map(|o| (o, format!("p{o}"))).collect()
}

#[test]
fn a_filtering_decorator_keeps_each_output_with_its_input() {
    let (outputs, committed) = outputs_of(Filter(Payload));
    assert_eq!(outputs, own((0..30).filter(|o| o % 3 != 0)));
    assert_eq!(committed, Some(30));
}

#[test]
fn a_reversing_decorator_keeps_each_output_with_its_input() {
    let (outputs, committed) = outputs_of(Reverse(Payload));
    assert_eq!(outputs, own(0..30));
    assert_eq!(committed, Some(30));
}

#[test]
fn a_splitting_decorator_keeps_each_output_with_its_input() {
    let (outputs, committed) = outputs_of(Split(Payload));
    assert_eq!(outputs, own(0..30));
    assert_eq!(committed, Some(30));
}

#[test]
fn a_decorator_calling_the_default_from_another_thread_keeps_each_output_with_its_input() {
    let (outputs, committed) = outputs_of(OnAnotherThread(Payload));
    assert_eq!(outputs, own(0..30));
    assert_eq!(committed, Some(30));
}

#[test]
fn results_changed_after_early_completion_never_reach_another_record() {
    let (outputs, committed) = outputs_of(ChangesSentResults(Payload));
    assert_eq!(outputs, own(0..30), "each record's own output, once");
    assert_eq!(committed, Some(30));
}

#[test]
fn the_engines_batch_completes_a_record_while_another_of_it_is_stuck() {
    // Early completion is kept through a decorator that passes the batch on.
    let gated = Gated::blocking([1]);
    let open = gated.opener();
    let c = config(|_| {});
    let (mut d, fake) = synced(&c, OnAnotherThread(gated), &[0]);
    fake.queue(T, 0, 0..4);
    d.turn(&fake);
    let deadline = Instant::now() + Duration::from_secs(20);
    while committable(&d, 0) != Some(1) {
        d.engine.apply_ready(&mut d.engine.state.lock());
        assert!(
            Instant::now() < deadline,
            "record 0 never completed on its own"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    open();
    drain_all(&d);
    assert_eq!(committable(&d, 0), Some(4));
}
