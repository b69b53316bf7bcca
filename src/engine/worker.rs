//! What runs on the rayon pool: a task through the processor, layer by layer (see
//! `scheduler`), its outputs to the sink, and one [`TaskDone`] back to the poll
//! thread.
//!
//! Workers never touch the consumer nor the tracker; they only send on the unbounded
//! completion channel, so they can never block on the poll thread (docs/DESIGN.md,
//! invariant 9).

use crossbeam_channel::Sender;

use super::completion::{FailedRecord, PendingTask, TaskDone};
use super::failure::FailureCause;
use super::scheduler::Task;
use super::sink::Sink;
use crate::processor::{panic_message, ProcessError, ProcessResult, Processor};
use crate::record::Record;

/// A record of a layer with its position in it (its lane).
type Positioned<'a> = (usize, &'a Record);

/// Runs `task` through `processor`; its outcome reaches `done` once every record is
/// processed and every output acknowledged. Each layer goes to `process_batch`; a
/// lane stops at its first failure (the rest of its chain comes back skipped).
pub(crate) fn run_task(
    processor: &dyn Processor,
    sink: Option<&Sink>,
    task: Task,
    done: Sender<TaskDone>,
) {
    let _span = tracing::trace_span!("task", topic = %task.topic, partition = task.partition, records = task.records.len()).entered();
    let pending = PendingTask::new(
        task.id,
        task.topic.clone(),
        task.partition,
        task.epoch,
        task.bytes,
        done,
    );
    let layer = task.layer.max(1);
    let mut stopped = vec![false; layer];
    let mut any_stopped = false;
    let mut warned = false;
    for chunk in task.records.chunks(layer) {
        let (live, skipped): (Vec<Positioned<'_>>, Vec<Positioned<'_>>) =
            chunk.iter().enumerate().partition(|(j, _)| !stopped[*j]);
        let started = std::time::Instant::now();
        let results = if !any_stopped {
            run_batch(processor, chunk, &task)
        } else {
            let records: Vec<Record> = live.iter().map(|(_, r)| (*r).clone()).collect();
            run_batch(processor, &records, &task)
        };
        let mut completed = Vec::with_capacity(live.len());
        let mut failed = Vec::new();
        for ((j, record), result) in live.iter().zip(&results) {
            match result {
                Ok(_) => completed.push(record.offset),
                Err(e) => {
                    stopped[*j] = true;
                    any_stopped = true;
                    failed.push(FailedRecord {
                        offset: record.offset,
                        cause: FailureCause::Processor(e.clone()),
                        record: Some((*record).clone()),
                    });
                }
            }
        }
        pending.processed(
            completed,
            failed,
            skipped.into_iter().map(|(_, r)| r.clone()),
            started.elapsed(),
        );
        for ((_, record), result) in live.into_iter().zip(results) {
            let Ok(outputs) = result else { continue };
            match sink {
                Some(sink) if sink.has_output() => {
                    for output in outputs.0 {
                        sink.send(
                            record,
                            output,
                            pending.expect_ack(record.offset, false),
                            task.aborts,
                        );
                    }
                }
                _ if !warned && !outputs.is_empty() => {
                    warned = true;
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!("the processor returned outputs but no sink is configured: they are dropped")
                    });
                }
                _ => {}
            }
        }
    }
    pending.release();
}

/// `process_batch` over `records`, with its panics caught (a panic in an overriding
/// `process_batch` fails every record; the default catches each record's own) and
/// its result count checked.
fn run_batch(processor: &dyn Processor, records: &[Record], task: &Task) -> Vec<ProcessResult> {
    let mut results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process_batch(records)
    }))
    .unwrap_or_else(|panic| {
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
