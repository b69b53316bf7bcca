//! How a task's outcome travels back to the poll thread, in two parts.
//!
//! * **Completions, per record, as they happen.** A record is complete when
//!   `process` returned `Ok` and every output it returned was acknowledged
//!   (docs/DESIGN.md, invariant 3). Whoever resolves it last — the worker after
//!   sending its outputs, or the sink's delivery report of its last output — sets
//!   its bit in the task's [`Progress`] bitmap: two atomic operations, no lock, no
//!   allocation, no message. The poll thread reads the bitmaps of the tasks in
//!   flight once per round (`Engine::collect_progress`): one atomic load per task,
//!   one per 64 records that changed. So a slow record holds back nothing else of
//!   its task.
//! * **Everything else, once per task** ([`TaskDone`]): failed records (with the
//!   record, to retry or dead-letter), records skipped behind a failure in their
//!   lane, the worker time, the bytes free again. It is sent when every record is
//!   processed and every output acknowledged, and it wakes a poll thread draining
//!   on revoke or stop; the scheduler frees the task's lanes on it.
//!
//! Neither side ever waits for the poll thread (the channel is unbounded;
//! docs/DESIGN.md invariant 9).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use tidemark_offsets::Epoch;

use crate::engine::completion::failure::FailureCause;
use crate::engine::observation::trace::RecordSpan;
use crate::engine::wake::Wake;
use crate::record::Record;

/// A record that failed in a task.
#[derive(Debug)]
pub(crate) struct FailedRecord {
    pub(in crate::engine) offset: i64,
    pub(in crate::engine) cause: FailureCause,
    /// The record itself when the processor failed it (to retry or dead-letter);
    /// `None` for a failed output, which stops the run.
    pub(in crate::engine) record: Option<Record>,
    /// The attempt's span (feature `otel`), for its outcome and the dead letter's
    /// trace context; none for a failed output.
    pub(in crate::engine) span: RecordSpan,
}

/// The end of one task: what is not a completion.
#[derive(Debug)]
pub(crate) struct TaskDone {
    /// The scheduler's task id.
    pub(in crate::engine) task: u64,
    /// Key + payload bytes of the task, free again.
    pub(in crate::engine) bytes: usize,
    /// Each failed offset once, with the first cause seen for it.
    pub(in crate::engine) failed: Vec<FailedRecord>,
    /// Records not run because an earlier record of their lane failed in this task.
    pub(in crate::engine) skipped: Vec<Record>,
    /// Worker time spent in the processor for this task.
    pub(in crate::engine) processing: std::time::Duration,
}

#[derive(Default)]
struct Outcome {
    failed: Vec<FailedRecord>,
    skipped: Vec<Record>,
    processing: std::time::Duration,
}

/// Which records of a task are complete, by position in the task: written by the
/// workers and the sink's delivery reports, read by the poll thread.
pub(crate) struct Progress {
    /// The record at each position.
    offsets: Box<[i64]>,
    /// Per position: what the record still waits for — 1 while the worker holds it
    /// (until its outputs are sent), + 1 per unacknowledged output.
    waiting: Box<[AtomicU32]>,
    /// A record's output failed: it must never be marked complete.
    failed: Box<[AtomicU64]>,
    /// Complete records, one bit per position.
    done: Box<[AtomicU64]>,
    /// Bits set in `done` (so the poll thread skips tasks that did not move).
    completed: AtomicUsize,
}

fn bitmap(positions: usize) -> Box<[AtomicU64]> {
    (0..positions.div_ceil(64))
        .map(|_| AtomicU64::new(0))
        .collect()
}

impl Progress {
    fn new(offsets: Box<[i64]>) -> Self {
        let n = offsets.len();
        Progress {
            waiting: (0..n).map(|_| AtomicU32::new(1)).collect(),
            failed: bitmap(n),
            done: bitmap(n),
            completed: AtomicUsize::new(0),
            offsets,
        }
    }

    /// One thing `position` waited for is done; the last one completes it, unless
    /// an output of it failed. Returns true when the record completed.
    fn resolve(&self, position: usize) -> bool {
        if self.waiting[position].fetch_sub(1, Ordering::AcqRel) == 1 {
            let (word, bit) = (position / 64, 1u64 << (position % 64));
            if self.failed[word].load(Ordering::Acquire) & bit == 0 {
                self.done[word].fetch_or(bit, Ordering::Release);
                self.completed.fetch_add(1, Ordering::Release);
                return true;
            }
        }
        false
    }

    fn mark_failed(&self, position: usize) {
        self.failed[position / 64].fetch_or(1u64 << (position % 64), Ordering::AcqRel);
    }
}

/// What the poll thread has applied of one task's [`Progress`]; owned by it.
pub(crate) struct Applied {
    /// Bits of `done` already applied to the tracker.
    bits: Vec<u64>,
    count: usize,
}

impl Applied {
    pub(crate) fn new(task: &PendingTask) -> Self {
        Applied {
            bits: vec![0; task.progress.done.len()],
            count: 0,
        }
    }

    /// Records applied so far.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Calls `complete` with the offset of every record completed since the last
    /// call; returns how many.
    pub(crate) fn take_new(&mut self, task: &PendingTask, mut complete: impl FnMut(i64)) -> usize {
        let progress = &task.progress;
        let count = progress.completed.load(Ordering::Acquire);
        if count == self.count {
            return 0;
        }
        let mut new = 0;
        for (i, word) in progress.done.iter().enumerate() {
            let bits = word.load(Ordering::Acquire);
            let mut fresh = bits & !self.bits[i];
            if fresh == 0 {
                continue;
            }
            self.bits[i] = bits;
            while fresh != 0 {
                let b = fresh.trailing_zeros() as usize;
                fresh &= fresh - 1;
                complete(progress.offsets[i * 64 + b]);
                new += 1;
            }
        }
        self.count += new;
        new
    }
}

/// A task whose outcome is not complete yet: the worker is still running it or
/// outputs are unacknowledged. Created at dispatch; the poll thread keeps a handle
/// to read its [`Progress`].
pub(crate) struct PendingTask {
    /// Outputs not yet acknowledged, + 1 while the worker is still sending.
    outstanding: AtomicUsize,
    outcome: Mutex<Outcome>,
    progress: Progress,
    pub(in crate::engine) task: u64,
    pub(in crate::engine) topic: Arc<str>,
    pub(in crate::engine) partition: i32,
    pub(in crate::engine) epoch: Epoch,
    bytes: usize,
    done: Sender<TaskDone>,
    wake: Arc<Wake>,
}

impl PendingTask {
    /// A task of the records at `offsets` (in the task's order: position `i` is
    /// `offsets[i]`).
    pub(crate) fn new(
        task: u64,
        topic: Arc<str>,
        partition: i32,
        epoch: Epoch,
        bytes: usize,
        offsets: Box<[i64]>,
        done: Sender<TaskDone>,
        wake: Arc<Wake>,
    ) -> Arc<Self> {
        Arc::new(PendingTask {
            outstanding: AtomicUsize::new(1),
            outcome: Mutex::new(Outcome::default()),
            progress: Progress::new(offsets),
            task,
            topic,
            partition,
            epoch,
            bytes,
            done,
            wake,
        })
    }

    /// The record at `position` was processed with `Ok`, and its outputs (each with
    /// an [`Ack`] from [`expect_ack`](Self::expect_ack)) are sent: it completes now,
    /// or with its last acknowledgement.
    pub(crate) fn succeeded(&self, position: usize) {
        self.resolve(position);
    }

    fn resolve(&self, position: usize) {
        if self.progress.resolve(position) {
            self.wake.record_completed();
        }
    }

    /// Records failed records, skipped records and worker time (per layer).
    pub(crate) fn processed(
        &self,
        failed: impl IntoIterator<Item = FailedRecord>,
        skipped: impl IntoIterator<Item = Record>,
        processing: std::time::Duration,
    ) {
        let mut failed = failed.into_iter().peekable();
        let mut skipped = skipped.into_iter().peekable();
        if failed.peek().is_none() && skipped.peek().is_none() && processing.is_zero() {
            return;
        }
        let mut outcome = self.outcome.lock();
        outcome.processing += processing;
        outcome.failed.extend(failed);
        outcome.skipped.extend(skipped);
    }

    /// One more output of the record at `position` to wait for; resolve it with the
    /// returned [`Ack`]. A failed dead letter (`dead_letter`) is a
    /// [`FailureCause::DeadLetter`], a failed output a [`FailureCause::Sink`].
    pub(crate) fn expect_ack(self: &Arc<Self>, position: usize, dead_letter: bool) -> Ack {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        self.progress.waiting[position].fetch_add(1, Ordering::AcqRel);
        Ack {
            task: self.clone(),
            position,
            dead_letter,
        }
    }

    /// The worker is done sending; the task's end goes out once every ack is in.
    pub(crate) fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let outcome = std::mem::take(&mut *self.outcome.lock());
            // The receiver is gone only when the pipeline has stopped: nothing to do.
            let _ = self.done.send(TaskDone {
                task: self.task,
                bytes: self.bytes,
                failed: outcome.failed,
                skipped: outcome.skipped,
                processing: outcome.processing,
            });
            self.wake.task_ended();
        }
    }
}

/// The acknowledgement owed for one output (or dead letter) of one input record.
pub(crate) struct Ack {
    task: Arc<PendingTask>,
    position: usize,
    dead_letter: bool,
}

impl Ack {
    /// The producer acknowledged (`Ok`) or finally failed (`Err`) this output. A
    /// record with a failed output is not complete (docs/DESIGN.md, invariant 3).
    pub(crate) fn resolve(self, result: Result<(), rdkafka::error::KafkaError>) {
        if let Err(error) = result {
            let offset = self.task.progress.offsets[self.position];
            self.task.progress.mark_failed(self.position);
            let mut outcome = self.task.outcome.lock();
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
                    span: RecordSpan::none(),
                });
            }
        }
        self.task.resolve(self.position);
        self.task.release();
    }

    /// The sink refused this output for good (a row PostgreSQL's constraints
    /// reject): `record` fails permanently with `error`, so it goes to the
    /// dead-letter topic when one is configured, else the run stops at it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn refuse(self, record: Record, error: crate::processor::ProcessError) {
        let offset = record.offset;
        self.task.progress.mark_failed(self.position);
        {
            let mut outcome = self.task.outcome.lock();
            if !outcome.failed.iter().any(|f| f.offset == offset) {
                outcome.failed.push(FailedRecord {
                    offset,
                    cause: FailureCause::Processor(error),
                    record: Some(record),
                    span: RecordSpan::none(),
                });
            }
        }
        self.task.resolve(self.position);
        self.task.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(offsets: &[i64]) -> (Arc<PendingTask>, crossbeam_channel::Receiver<TaskDone>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let t = PendingTask::new(
            1,
            Arc::from("t"),
            0,
            Epoch(1),
            0,
            offsets.into(),
            tx,
            Arc::default(),
        );
        (t, rx)
    }

    fn take(applied: &mut Applied, t: &PendingTask) -> Vec<i64> {
        let mut v = Vec::new();
        applied.take_new(t, |o| v.push(o));
        v
    }

    #[test]
    fn each_record_completes_on_its_own_before_the_task_ends() {
        let offsets: Vec<i64> = (100..230).collect();
        let (t, rx) = task(&offsets);
        let mut applied = Applied::new(&t);
        t.succeeded(129); // offset 229, in the third word
        t.succeeded(0);
        assert_eq!(take(&mut applied, &t), vec![100, 229]);
        assert!(take(&mut applied, &t).is_empty(), "applied twice");
        assert!(rx.try_recv().is_err(), "the task is not over");
        t.succeeded(64);
        assert_eq!(take(&mut applied, &t), vec![164]);
    }

    #[test]
    fn a_record_completes_with_its_last_ack_and_never_when_an_output_failed() {
        let (t, rx) = task(&[7, 8]);
        let mut applied = Applied::new(&t);
        let (a, b) = (t.expect_ack(0, false), t.expect_ack(0, false));
        let c = t.expect_ack(1, false);
        t.succeeded(0);
        t.succeeded(1);
        t.release();
        a.resolve(Ok(()));
        assert!(
            take(&mut applied, &t).is_empty(),
            "complete before its last ack"
        );
        b.resolve(Ok(()));
        assert_eq!(take(&mut applied, &t), vec![7]);
        c.resolve(Err(rdkafka::error::KafkaError::Canceled));
        assert!(
            take(&mut applied, &t).is_empty(),
            "a failed output completed its record"
        );
        let done = rx.try_recv().expect("the task ended with its last ack");
        assert_eq!(done.failed.len(), 1);
        assert_eq!(done.failed[0].offset, 8);
    }
}
