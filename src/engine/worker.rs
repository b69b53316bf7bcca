//! What runs on the worker pool: a task through the processor, layer by layer (see
//! `scheduler`), its outputs to the sink, each record's completion as it happens,
//! and the task's end (failures, skipped records) back to the poll thread.
//!
//! **Per-record completion through the default `process_batch`.** The worker
//! installs a [`Reporter`] for the duration of each `process_batch` call; the
//! default `process_batch` takes it and, as each record's `process` returns `Ok`,
//! sends that record's outputs and marks it complete at once — so a slow record
//! holds back no other record of its layer. An overriding `process_batch` never
//! takes it: its records complete together when it returns.
//!
//! Workers never touch the consumer nor the tracker; they only set bits and send on
//! the unbounded completion channel, so they can never block on the poll thread
//! (docs/DESIGN.md, invariant 9).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::completion::{FailedRecord, PendingTask};
use super::failure::FailureCause;
use super::pool;
use super::scheduler::Task;
use super::sink::Sink;
use crate::processor::{panic_message, ProcessError, ProcessResult, Processor};
use crate::record::Record;

/// A record of a layer with its position in it (its lane).
type Positioned<'a> = (usize, &'a Record);

/// Handles a record's `Ok` result the moment `process` returns it: sends its
/// outputs and completes it. Installed by the worker around one `process_batch`
/// call; see the module documentation.
pub(crate) struct Reporter<'a> {
    pending: &'a Arc<PendingTask>,
    sink: Option<&'a Sink>,
    aborts: u64,
    /// The records of the batch and each one's position in the task.
    records: &'a [Record],
    positions: &'a [usize],
    /// Per batch index: completed through this reporter.
    reported: &'a [AtomicBool],
    /// Where workers add the time they spent claiming and running records, ns.
    pub(crate) busy: &'a AtomicU64,
}

impl Reporter<'_> {
    /// `result` is record `index`'s of the batch: an `Ok` one's outputs go to the
    /// sink now (left empty in `result`) and the record completes.
    pub(crate) fn report(&self, index: usize, result: &mut ProcessResult) {
        let Ok(outputs) = result else { return };
        let outputs = std::mem::take(outputs);
        send_outputs(
            self.pending,
            self.sink,
            self.aborts,
            self.positions[index],
            &self.records[index],
            outputs,
        );
        self.reported[index].store(true, Ordering::Relaxed);
    }
}

thread_local! {
    /// The reporter of the `process_batch` call running on this thread, as a raw
    /// pointer: it lives on the worker's stack for exactly that call.
    static REPORTER: Cell<Option<*const Reporter<'static>>> = const { Cell::new(None) };
}

/// For the default `process_batch`: takes the reporter of the call it runs in, if
/// the engine installed one. The returned reference is valid until the
/// `process_batch` call that took it returns (the worker clears and drops the
/// reporter only after that).
pub(crate) fn take_reporter<'a>() -> Option<&'a Reporter<'a>> {
    // SAFETY: the pointer was made from a reference to a Reporter that outlives
    // the process_batch call (see `run_batch`), and only that call's default body
    // takes it; it is used only within that body.
    REPORTER
        .with(|r| r.take())
        .map(|p| unsafe { &*(p as *const Reporter<'a>) })
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

/// Sends `outputs` of the record at task position `position`, then completes it
/// (now, or with its last acknowledgement).
pub(crate) fn send_outputs(
    pending: &Arc<PendingTask>,
    sink: Option<&Sink>,
    aborts: u64,
    position: usize,
    record: &Record,
    outputs: crate::record::Outputs,
) {
    match sink {
        Some(sink) if sink.has_output() => {
            for (index, output) in outputs.0.into_iter().enumerate() {
                let ack = pending.expect_ack(position, false);
                sink.send(record, index, output, ack, aborts);
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
pub(crate) fn run_task(
    processor: &dyn Processor,
    sink: Option<&Sink>,
    task: Task,
    pending: Arc<PendingTask>,
    busy: &AtomicU64,
) {
    let _span = tracing::trace_span!("task", topic = %task.topic, partition = task.partition, records = task.records.len()).entered();
    let layer = task.layer.max(1);
    let mut stopped = vec![false; layer];
    let mut any_stopped = false;
    let mut positions: Vec<usize> = Vec::with_capacity(layer);
    let reported: Vec<AtomicBool> = (0..layer).map(|_| AtomicBool::new(false)).collect();
    for (n, chunk) in task.records.chunks(layer).enumerate() {
        let base = n * layer;
        let (live, skipped): (Vec<Positioned<'_>>, Vec<Positioned<'_>>) =
            chunk.iter().enumerate().partition(|(j, _)| !stopped[*j]);
        positions.clear();
        positions.extend(live.iter().map(|(j, _)| base + j));
        let started = std::time::Instant::now();
        let owned: Vec<Record>;
        let records: &[Record] = if !any_stopped {
            chunk
        } else {
            owned = live.iter().map(|(_, r)| (*r).clone()).collect();
            &owned
        };
        let reporter = Reporter {
            pending: &pending,
            sink,
            aborts: task.aborts,
            records,
            positions: &positions,
            reported: &reported[..records.len()],
            busy,
        };
        let results = run_batch(processor, records, &task, &reporter);
        let mut failed = Vec::new();
        for (i, ((j, record), result)) in live.iter().zip(results).enumerate() {
            if reported[i].swap(false, Ordering::Relaxed) {
                continue;
            }
            match result {
                Ok(outputs) => send_outputs(&pending, sink, task.aborts, base + j, record, outputs),
                Err(e) => {
                    stopped[*j] = true;
                    any_stopped = true;
                    failed.push(FailedRecord {
                        offset: record.offset,
                        cause: FailureCause::Processor(e),
                        record: Some((*record).clone()),
                    });
                }
            }
        }
        pending.processed(
            failed,
            skipped.into_iter().map(|(_, r)| r.clone()),
            started.elapsed(),
        );
    }
    pending.release();
}

/// `process_batch` over `records` with `reporter` installed, its panics caught (a
/// panic in an overriding `process_batch` fails every record not reported yet; the
/// default catches each record's own) and its result count checked.
fn run_batch(
    processor: &dyn Processor,
    records: &[Record],
    task: &Task,
    reporter: &Reporter<'_>,
) -> Vec<ProcessResult> {
    let pointer = reporter as *const Reporter<'_> as *const Reporter<'static>;
    REPORTER.with(|r| r.set(Some(pointer)));
    let started = Instant::now();
    let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process_batch(records)
    }));
    // Whether or not the default body took it, it is gone before `reporter` is.
    if REPORTER.with(|r| r.take()).is_some() {
        // An overriding process_batch: its calling worker was busy all along.
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
