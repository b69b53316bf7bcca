//! How a task's outcome travels back to the poll thread: one [`TaskDone`] per task,
//! sent when every record is processed and every output acknowledged (docs/DESIGN.md, invariant 3).
//! The worker and the sink's delivery reports both resolve it; neither ever waits
//! for the poll thread (the channel is unbounded; docs/DESIGN.md invariant 9).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use tidemark_offsets::Epoch;

use super::failure::FailureCause;

/// The outcome of one task, per record: the offsets that completed and those that
/// failed, with why.
#[derive(Debug)]
pub(crate) struct TaskDone {
    pub topic: Arc<str>,
    pub partition: i32,
    pub epoch: Epoch,
    /// Key + payload bytes of the task, free again.
    pub bytes: usize,
    pub completed: Vec<i64>,
    /// Offsets that failed (each once), with the first cause seen for each.
    pub failed: Vec<(i64, FailureCause)>,
}

/// A task whose outcome is not complete yet: the worker is still running it or
/// outputs are unacknowledged.
pub(crate) struct PendingTask {
    /// Outputs not yet acknowledged, + 1 while the worker is still sending.
    outstanding: AtomicUsize,
    outcome: Mutex<(Vec<i64>, Vec<(i64, FailureCause)>)>,
    topic: Arc<str>,
    partition: i32,
    epoch: Epoch,
    bytes: usize,
    done: Sender<TaskDone>,
}

impl PendingTask {
    pub(crate) fn new(
        topic: Arc<str>,
        partition: i32,
        epoch: Epoch,
        bytes: usize,
        records: usize,
        done: Sender<TaskDone>,
    ) -> Arc<Self> {
        Arc::new(PendingTask {
            outstanding: AtomicUsize::new(1),
            outcome: Mutex::new((Vec::with_capacity(records), Vec::new())),
            topic,
            partition,
            epoch,
            bytes,
            done,
        })
    }

    /// Records the processor's results: completed offsets, failed ones.
    pub(crate) fn processed(&self, completed: Vec<i64>, failed: Vec<(i64, FailureCause)>) {
        let mut outcome = self.outcome.lock();
        outcome.0 = completed;
        outcome.1 = failed;
    }

    /// One more output to wait for; resolve it with the returned [`Ack`].
    pub(crate) fn expect_ack(self: &Arc<Self>, input_offset: i64) -> Ack {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Ack {
            task: self.clone(),
            input_offset,
        }
    }

    /// The worker is done sending; the outcome goes out once every ack is in.
    pub(crate) fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut outcome = self.outcome.lock();
            // The receiver is gone only when the pipeline has stopped: nothing to do.
            let _ = self.done.send(TaskDone {
                topic: self.topic.clone(),
                partition: self.partition,
                epoch: self.epoch,
                bytes: self.bytes,
                completed: std::mem::take(&mut outcome.0),
                failed: std::mem::take(&mut outcome.1),
            });
        }
    }
}

/// The acknowledgement owed for one output record of one input record.
pub(crate) struct Ack {
    task: Arc<PendingTask>,
    input_offset: i64,
}

impl Ack {
    /// The sink acknowledged (`Ok`) or finally failed (`Err`) this output. A record
    /// with a failed output is not complete (docs/DESIGN.md, invariant 3).
    pub(crate) fn resolve(self, result: Result<(), rdkafka::error::KafkaError>) {
        if let Err(error) = result {
            let offset = self.input_offset;
            let mut outcome = self.task.outcome.lock();
            outcome.0.retain(|o| *o != offset);
            if !outcome.1.iter().any(|(o, _)| *o == offset) {
                outcome.1.push((offset, FailureCause::Sink(error)));
            }
        }
        self.task.release();
    }
}
