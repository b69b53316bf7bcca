//! How a task's outcome travels back to the poll thread: one [`TaskDone`] per task,
//! sent when every record is processed and every output acknowledged (docs/DESIGN.md,
//! invariant 3). The worker and the sink's delivery reports both resolve it; neither
//! ever waits for the poll thread (the channel is unbounded; docs/DESIGN.md
//! invariant 9).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use tidemark_offsets::Epoch;

use super::failure::FailureCause;
use crate::record::Record;

/// A record that failed in a task.
#[derive(Debug)]
pub(crate) struct FailedRecord {
    pub offset: i64,
    pub cause: FailureCause,
    /// The record itself when the processor failed it (to retry or dead-letter);
    /// `None` for a failed output, which stops the run.
    pub record: Option<Record>,
}

/// The outcome of one task, per record.
#[derive(Debug)]
pub(crate) struct TaskDone {
    /// The scheduler's task id.
    pub task: u64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub epoch: Epoch,
    /// Key + payload bytes of the task, free again.
    pub bytes: usize,
    pub completed: Vec<i64>,
    /// Each failed offset once, with the first cause seen for it.
    pub failed: Vec<FailedRecord>,
    /// Records not run because an earlier record of their lane failed in this task.
    pub skipped: Vec<Record>,
    /// Worker time spent in the processor for this task.
    pub processing: std::time::Duration,
}

#[derive(Default)]
struct Outcome {
    completed: Vec<i64>,
    failed: Vec<FailedRecord>,
    skipped: Vec<Record>,
    processing: std::time::Duration,
}

/// A task whose outcome is not complete yet: the worker is still running it or
/// outputs are unacknowledged.
pub(crate) struct PendingTask {
    /// Outputs not yet acknowledged, + 1 while the worker is still sending.
    outstanding: AtomicUsize,
    outcome: Mutex<Outcome>,
    task: u64,
    topic: Arc<str>,
    partition: i32,
    epoch: Epoch,
    bytes: usize,
    done: Sender<TaskDone>,
}

impl PendingTask {
    pub(crate) fn new(
        task: u64,
        topic: Arc<str>,
        partition: i32,
        epoch: Epoch,
        bytes: usize,
        done: Sender<TaskDone>,
    ) -> Arc<Self> {
        Arc::new(PendingTask {
            outstanding: AtomicUsize::new(1),
            outcome: Mutex::new(Outcome::default()),
            task,
            topic,
            partition,
            epoch,
            bytes,
            done,
        })
    }

    /// Records processed records' results (before their outputs are sent).
    pub(crate) fn processed(
        &self,
        completed: impl IntoIterator<Item = i64>,
        failed: impl IntoIterator<Item = FailedRecord>,
        skipped: impl IntoIterator<Item = Record>,
        processing: std::time::Duration,
    ) {
        let mut outcome = self.outcome.lock();
        outcome.processing += processing;
        outcome.completed.extend(completed);
        outcome.failed.extend(failed);
        outcome.skipped.extend(skipped);
    }

    /// One more output to wait for; resolve it with the returned [`Ack`]. A failed
    /// dead letter (`dead_letter`) is a [`FailureCause::DeadLetter`], a failed
    /// output a [`FailureCause::Sink`].
    pub(crate) fn expect_ack(self: &Arc<Self>, input_offset: i64, dead_letter: bool) -> Ack {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Ack {
            task: self.clone(),
            input_offset,
            dead_letter,
        }
    }

    /// The worker is done sending; the outcome goes out once every ack is in.
    pub(crate) fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let outcome = std::mem::take(&mut *self.outcome.lock());
            // The receiver is gone only when the pipeline has stopped: nothing to do.
            let _ = self.done.send(TaskDone {
                task: self.task,
                topic: self.topic.clone(),
                partition: self.partition,
                epoch: self.epoch,
                bytes: self.bytes,
                completed: outcome.completed,
                failed: outcome.failed,
                skipped: outcome.skipped,
                processing: outcome.processing,
            });
        }
    }
}

/// The acknowledgement owed for one output (or dead letter) of one input record.
pub(crate) struct Ack {
    task: Arc<PendingTask>,
    input_offset: i64,
    dead_letter: bool,
}

impl Ack {
    /// The producer acknowledged (`Ok`) or finally failed (`Err`) this output. A
    /// record with a failed output is not complete (docs/DESIGN.md, invariant 3).
    pub(crate) fn resolve(self, result: Result<(), rdkafka::error::KafkaError>) {
        if let Err(error) = result {
            let offset = self.input_offset;
            let mut outcome = self.task.outcome.lock();
            outcome.completed.retain(|o| *o != offset);
            if !outcome.failed.iter().any(|f| f.offset == offset) {
                let cause = if self.dead_letter {
                    FailureCause::DeadLetter(error)
                } else {
                    FailureCause::Sink(error)
                };
                outcome.failed.push(FailedRecord {
                    offset,
                    cause,
                    record: None,
                });
            }
        }
        self.task.release();
    }
}
