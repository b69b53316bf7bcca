//! What runs on the rayon pool: a task through the processor, its outputs to the
//! sink, and one [`TaskDone`](super::completion::TaskDone) back to the poll thread.
//!
//! Workers never touch the consumer nor the tracker; they only send on the unbounded
//! completion channel, so they can never block on the poll thread (docs/DESIGN.md, invariant 9).

use crossbeam_channel::Sender;

use super::completion::{PendingTask, TaskDone};
use super::failure::FailureCause;
use super::scheduler::Task;
use super::sink::Sink;
use crate::processor::{panic_message, ProcessError, Processor};

/// Runs `task` through `processor`; its outcome reaches `done` once every record is
/// processed and every output acknowledged. A panic in `process_batch` fails every
/// record of the task (the default `process_batch` catches each record's own).
pub(crate) fn run_task(
    processor: &dyn Processor,
    sink: Option<&Sink>,
    task: Task,
    done: Sender<TaskDone>,
) {
    let _span = tracing::trace_span!("task", topic = %task.topic, partition = task.partition, records = task.records.len()).entered();
    let mut results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process_batch(&task.records)
    }))
    .unwrap_or_else(|panic| {
        let message = panic_message(&*panic);
        tracing::error!(topic = %task.topic, partition = task.partition, %message, "process_batch panicked: failing its records");
        let error = ProcessError::permanent(format!("process_batch panicked: {message}"));
        task.records.iter().map(|_| Err(error.clone())).collect()
    });
    if results.len() != task.records.len() {
        tracing::error!(
            expected = task.records.len(),
            got = results.len(),
            "process_batch returned the wrong number of results"
        );
        results.resize_with(task.records.len(), || {
            Err(ProcessError::permanent(
                "process_batch returned no result for this record",
            ))
        });
    }

    let pending = PendingTask::new(
        task.topic.clone(),
        task.partition,
        task.epoch,
        task.bytes,
        task.records.len(),
        done,
    );
    let mut completed = Vec::with_capacity(task.records.len());
    let mut failed = Vec::new();
    for (record, result) in task.records.iter().zip(&results) {
        match result {
            Ok(_) => completed.push(record.offset),
            Err(e) => failed.push((record.offset, FailureCause::Processor(e.clone()))),
        }
    }
    pending.processed(completed, failed);
    match sink {
        Some(sink) => {
            for (record, result) in task.records.iter().zip(results) {
                if let Ok(outputs) = result {
                    for output in outputs.0 {
                        sink.send(
                            record,
                            output,
                            pending.expect_ack(record.offset),
                            task.aborts,
                        );
                    }
                }
            }
        }
        None if results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|o| !o.is_empty())) =>
        {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "the processor returned outputs but no sink is configured: they are dropped"
                )
            });
        }
        None => {}
    }
    pending.release();
}
