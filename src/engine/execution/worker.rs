//! What runs on the worker pool: a task through the processor, layer by layer (see
//! `scheduler`), its outputs to the sink, each record's completion as it happens,
//! and the task's end (failures, skipped records) back to the poll thread.
//!
//! **Per-record completion through the default `process_batch`.** The worker
//! hands each `process_batch` call a [`Batch`] that carries a [`Reporter`] bound to
//! exactly that call's records; [`Batch::process_each`] (the default body) reports
//! each record's `Ok` result through it, which sends that record's outputs and marks
//! it complete at once — so a slow record holds back no other record of its layer.
//! An override that builds its own batch (filtered, reordered, split) passes a
//! detached one: its records complete together when it returns, each by its
//! position in the results. Nothing reaches the processor through a thread-local.
//!
//! Workers never touch the consumer nor the tracker; they only set bits and send on
//! the unbounded completion channel, so they can never block on the poll thread
//! (docs/DESIGN.md, invariant 9).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::engine::completion::failure::FailureCause;
use crate::engine::completion::progress::{FailedRecord, PendingTask};
use crate::engine::execution::layers::LayerWalk;
use crate::engine::execution::pool;
use crate::engine::observation::trace::{RecordSpan, Tracer};
use crate::engine::scheduling::scheduler::Task;
use crate::engine::seams::sink::Sink;
use crate::processor::{panic_message, Batch, ProcessError, ProcessResult, Processor};
use crate::record::Record;

/// Handles a record's `Ok` result the moment `process` returns it: sends its
/// outputs and completes it. Made by the worker for one `process_batch` call and
/// reachable only through the [`Batch`] of that call; see the module documentation.
pub(crate) struct Reporter<'a> {
    pending: &'a Arc<PendingTask>,
    sink: Option<&'a Sink>,
    aborts: u64,
    /// The records of the batch and each one's position in the task.
    records: &'a [Record],
    positions: &'a [usize],
    /// Each record's span (feature `otel`; empty when tracing is off).
    spans: &'a [RecordSpan],
    /// Per batch index: completed through this reporter.
    reported: &'a [AtomicBool],
    /// Set when `Batch::process_each` ran with this reporter (its workers account
    /// their own busy time then).
    claimed: AtomicBool,
    /// Where workers add the time they spent claiming and running records, ns.
    pub(crate) busy: &'a AtomicU64,
}

impl<'a> Reporter<'a> {
    /// The records this reporter completes, by index.
    pub(crate) fn records(&self) -> &'a [Record] {
        self.records
    }

    /// The span of record `index` (none when tracing is off).
    pub(crate) fn span(&self, index: usize) -> &'a RecordSpan {
        RecordSpan::at(self.spans, index)
    }

    /// `Batch::process_each` runs with this reporter.
    pub(crate) fn claim(&self) {
        self.claimed.store(true, Ordering::Relaxed);
    }

    /// `result` is record `index`'s of the batch: an `Ok` one's outputs go to the
    /// sink now (left empty in `result`) and the record completes. A record is
    /// completed at most once: a second report of it changes nothing.
    pub(crate) fn report(&self, index: usize, result: &mut ProcessResult) {
        let Ok(outputs) = result else { return };
        if self.reported[index].swap(true, Ordering::Relaxed) {
            return;
        }
        let outputs = std::mem::take(outputs);
        send_outputs(
            self.pending,
            self.sink,
            self.aborts,
            self.positions[index],
            &self.records[index],
            outputs,
            self.span(index),
        );
    }
}

/// Runs `f` over `records` on the worker pool and returns the results in order:
/// the workers *claim* records one at a time from a shared counter
/// ([`pool::claim_each`]), so a worker held by a slow record holds nothing else and
/// the others go on claiming. (rayon's `par_iter` ran a worker's share as sequential
/// leaves — records behind a slow one in its leaf waited for it — and splitting down
/// to one record cost a join per record: ~2 µs of CPU a record on 2 cores,
/// measured.) Each worker adds its time from first claim to last to `busy` (ns).
pub(crate) fn claim_each(
    records: &[Record],
    busy: Option<&AtomicU64>,
    f: impl Fn(usize, &Record) -> ProcessResult + Sync,
) -> Vec<ProcessResult> {
    let slots: Vec<OnceLock<ProcessResult>> = records.iter().map(|_| OnceLock::new()).collect();
    pool::claim_each(records.len(), busy, &|i| {
        let _ = slots[i].set(f(i, &records[i]));
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner().unwrap_or_else(|| {
                Err(ProcessError::permanent(
                    "the worker running this record panicked",
                ))
            })
        })
        .collect()
}

/// Adds the time since `started` to the workers' busy time.
fn add_busy(busy: Option<&AtomicU64>, started: Instant) {
    if let Some(busy) = busy {
        busy.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Sends `outputs` of the record at task position `position` (each carrying
/// `span`'s trace context), then completes it (now, or with its last
/// acknowledgement).
pub(crate) fn send_outputs(
    pending: &Arc<PendingTask>,
    sink: Option<&Sink>,
    aborts: u64,
    position: usize,
    record: &Record,
    outputs: crate::record::Outputs,
    span: &RecordSpan,
) {
    span.complete();
    match sink {
        Some(sink) if sink.has_output() => {
            for (index, output) in outputs.0.into_iter().enumerate() {
                let ack = pending.expect_ack(position, false);
                sink.send(record, index, output, ack, aborts, span);
            }
        }
        _ if !outputs.is_empty() => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "the processor returned outputs but no sink is configured: they are dropped"
                )
            });
        }
        _ => {}
    }
    pending.succeeded(position);
}

/// Runs `task` through `processor`. Each record completes as it succeeds (its
/// outputs acknowledged); the task's end reaches the poll thread once every record
/// is processed and every output acknowledged. Each layer goes to `process_batch`;
/// a lane stops at its first failure (the rest of its chain comes back skipped).
/// Each record of a layer gets its span from `tracer` when the layer starts.
pub(crate) fn run_task(
    processor: &dyn Processor,
    sink: Option<&Sink>,
    tracer: &Tracer,
    task: Task,
    pending: Arc<PendingTask>,
    busy: &AtomicU64,
) {
    let _span = tracing::trace_span!("task", topic = %task.topic, partition = task.partition, records = task.records.len()).entered();
    let reported: Vec<AtomicBool> = (0..task.layer.max(1))
        .map(|_| AtomicBool::new(false))
        .collect();
    let mut walk = LayerWalk::new(&task.records, task.layer);
    while let Some(step) = walk.next_layer() {
        let started = std::time::Instant::now();
        let records: &[Record] = &step.records;
        let mut spans = tracer.spans(records);
        let reporter = Reporter {
            pending: &pending,
            sink,
            aborts: task.aborts,
            records,
            positions: &step.live,
            spans: &spans,
            reported: &reported[..records.len()],
            claimed: AtomicBool::new(false),
            busy,
        };
        let results = run_batch(processor, &task, &reporter);
        let mut failed = Vec::new();
        for (i, ((&position, record), result)) in
            step.live.iter().zip(records).zip(results).enumerate()
        {
            if reported[i].swap(false, Ordering::Relaxed) {
                if !matches!(&result, Ok(outputs) if outputs.is_empty()) {
                    warn_changed_result(&task, record.offset);
                }
                continue;
            }
            match result {
                Ok(outputs) => {
                    let span = RecordSpan::at(&spans, i);
                    send_outputs(&pending, sink, task.aborts, position, record, outputs, span)
                }
                Err(e) => {
                    walk.fail(position);
                    failed.push(FailedRecord {
                        offset: record.offset,
                        cause: FailureCause::Processor(e),
                        record: Some(record.clone()),
                        span: RecordSpan::take(&mut spans, i),
                    });
                }
            }
        }
        pending.processed(failed, step.skipped, started.elapsed());
    }
    pending.release();
}

/// `process_batch` over the engine's batch of `reporter`'s records, its panics
/// caught (a panic in an overriding `process_batch` fails every record not reported
/// yet; the default catches each record's own) and its result count checked.
fn run_batch(
    processor: &dyn Processor,
    task: &Task,
    reporter: &Reporter<'_>,
) -> Vec<ProcessResult> {
    let records = reporter.records();
    let started = Instant::now();
    let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process_batch(Batch::with_early_completion(reporter))
    }));
    if !reporter.claimed.load(Ordering::Relaxed) {
        // An override that did not pass the batch on: its calling worker was busy all along.
        add_busy(Some(reporter.busy), started);
    }
    let mut results = results.unwrap_or_else(|panic| {
        let message = panic_message(&*panic);
        tracing::error!(topic = %task.topic, partition = task.partition, %message, "process_batch panicked: failing its records");
        let error = ProcessError::permanent(format!("process_batch panicked: {message}"));
        records.iter().map(|_| Err(error.clone())).collect()
    });
    if results.len() != records.len() {
        tracing::error!(
            expected = records.len(),
            got = results.len(),
            "process_batch returned the wrong number of results"
        );
        results.resize_with(records.len(), || {
            Err(ProcessError::permanent(
                "process_batch returned no result for this record",
            ))
        });
    }
    results
}

/// An override returned a changed result for a record its inner default had
/// completed already: the record's outputs were sent with it, the change is ignored.
/// Logged once per process (an error, since the override's intent is lost).
fn warn_changed_result(task: &Task, offset: i64) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::error!(
            topic = %task.topic,
            partition = task.partition,
            offset,
            "process_batch changed the result of a record that its inner default had completed already: \
             the change is ignored (pass a detached Batch::new to the inner processor to change its results)"
        )
    });
}
