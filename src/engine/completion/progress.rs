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

use std::ptr::NonNull;
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

/// One position of a task: what its record still waits for, and the task's
/// address, so an [`Ack`] is one pointer to its slot (no allocation per output).
struct Slot {
    /// 1 while the worker holds the record (until its outputs are sent), + 1 per
    /// unacknowledged output.
    waiting: AtomicU32,
    /// The task this slot belongs to (set when the task is made; its `Arc` outlives
    /// every [`Ack`], each of which holds a strong count).
    task: *const PendingTask,
}

/// Which records of a task are complete, by position in the task: written by the
/// workers and the sink's delivery reports, read by the poll thread.
pub(crate) struct Progress {
    /// The record at each position.
    offsets: Box<[i64]>,
    /// Per position: what the record waits for, and where acks point.
    slots: Box<[Slot]>,
    /// A record's output failed: it must never be marked complete.
    failed: Box<[AtomicU64]>,
    /// Positions whose acknowledgement is a dead letter's (set before it is sent).
    dead_letters: Box<[AtomicU64]>,
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
    fn new(offsets: Box<[i64]>, task: *const PendingTask) -> Self {
        let n = offsets.len();
        Progress {
            slots: (0..n)
                .map(|_| Slot {
                    waiting: AtomicU32::new(1),
                    task,
                })
                .collect(),
            failed: bitmap(n),
            dead_letters: bitmap(n),
            done: bitmap(n),
            completed: AtomicUsize::new(0),
            offsets,
        }
    }

    /// One thing `position` waited for is done; the last one completes it, unless
    /// an output of it failed. Returns true when the record completed.
    fn resolve(&self, position: usize) -> bool {
        if self.slots[position].waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
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
        Arc::new_cyclic(|this| PendingTask {
            outstanding: AtomicUsize::new(1),
            outcome: Mutex::new(Outcome::default()),
            progress: Progress::new(offsets, this.as_ptr()),
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
        let slot = &self.progress.slots[position];
        slot.waiting.fetch_add(1, Ordering::AcqRel);
        if dead_letter {
            self.progress.dead_letters[position / 64]
                .fetch_or(1u64 << (position % 64), Ordering::Release);
        }
        // The ack's own strong count, given back when it is dropped.
        std::mem::forget(Arc::clone(self));
        Ack {
            slot: NonNull::from(slot),
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

/// The acknowledgement owed for one output (or dead letter) of one input record:
/// one pointer to its record's slot in the task, holding a strong count of the
/// task (given back when the ack is dropped, resolved or not). Pointer-sized, so
/// it travels as the produced message's opaque without an allocation
/// (librdkafka's `RD_KAFKA_VTYPE_OPAQUE`).
pub(crate) struct Ack {
    slot: NonNull<Slot>,
}

// SAFETY: an ack only reaches its task through atomics and the task's mutex, and
// the task is `Send + Sync`; its strong count keeps the slot alive.
unsafe impl Send for Ack {}
// SAFETY: as for `Send`: `&Ack` gives nothing but shared access to the task.
unsafe impl Sync for Ack {}
// SAFETY: `Slot::task` is written once, before the task is shared, and read only.
unsafe impl Send for Slot {}
// SAFETY: as for `Send`.
unsafe impl Sync for Slot {}

impl Ack {
    fn task(&self) -> &PendingTask {
        // SAFETY: this ack holds a strong count of the task, which owns the slot.
        unsafe { &*self.slot.as_ref().task }
    }

    /// The record's position in its task.
    fn position(&self) -> usize {
        let base = self.task().progress.slots.as_ptr();
        // SAFETY: the slot is an element of the task's `slots`.
        unsafe { self.slot.as_ptr().offset_from(base) as usize }
    }

    /// The producer acknowledged (`Ok`) or finally failed (`Err`) this output. A
    /// record with a failed output is not complete (docs/DESIGN.md, invariant 3).
    pub(crate) fn resolve(self, result: Result<(), rdkafka::error::KafkaError>) {
        let (task, position) = (self.task(), self.position());
        if let Err(error) = result {
            let offset = task.progress.offsets[position];
            task.progress.mark_failed(position);
            let dead_letter = task.progress.dead_letters[position / 64].load(Ordering::Acquire)
                & (1u64 << (position % 64))
                != 0;
            let mut outcome = task.outcome.lock();
            if !outcome.failed.iter().any(|f| f.offset == offset) {
                let cause = if dead_letter {
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
        task.resolve(position);
        task.release();
    }

    /// The sink refused this output for good (a row PostgreSQL's constraints
    /// reject): `record` fails permanently with `error`, so it goes to the
    /// dead-letter topic when one is configured, else the run stops at it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn refuse(self, record: Record, error: crate::processor::ProcessError) {
        let (task, position) = (self.task(), self.position());
        let offset = record.offset;
        task.progress.mark_failed(position);
        {
            let mut outcome = task.outcome.lock();
            if !outcome.failed.iter().any(|f| f.offset == offset) {
                outcome.failed.push(FailedRecord {
                    offset,
                    cause: FailureCause::Processor(error),
                    record: Some(record),
                    span: RecordSpan::none(),
                });
            }
        }
        task.resolve(position);
        task.release();
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        // SAFETY: gives back the strong count `expect_ack` took for this ack.
        unsafe { Arc::decrement_strong_count(self.slot.as_ref().task) }
    }
}

impl rdkafka::util::IntoOpaque for Ack {
    fn into_ptr(self) -> *mut std::ffi::c_void {
        std::mem::ManuallyDrop::new(self).slot.as_ptr().cast()
    }

    unsafe fn from_ptr(ptr: *mut std::ffi::c_void) -> Self {
        Ack {
            // SAFETY: (the caller's) `ptr` came from `into_ptr`, never null.
            slot: unsafe { NonNull::new_unchecked(ptr.cast()) },
        }
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

    #[test]
    fn an_ack_is_one_pointer_that_survives_the_opaque_round_trip_and_gives_its_count_back() {
        use rdkafka::util::IntoOpaque;
        assert_eq!(std::mem::size_of::<Ack>(), std::mem::size_of::<usize>());
        let (t, rx) = task(&[5, 6, 7]);
        let mut applied = Applied::new(&t);
        let ack = t.expect_ack(2, true);
        let dropped = t.expect_ack(1, false);
        assert_eq!(Arc::strong_count(&t), 3, "each ack holds the task");
        // SAFETY: the pointer comes from `into_ptr` just above.
        let ack = unsafe { Ack::from_ptr(ack.into_ptr()) };
        t.succeeded(2);
        ack.resolve(Err(rdkafka::error::KafkaError::Canceled));
        drop(dropped); // never resolved (a producer gone): its record never completes
        assert_eq!(Arc::strong_count(&t), 1, "an ack kept its count");
        t.succeeded(0);
        t.succeeded(1);
        t.release();
        assert_eq!(
            take(&mut applied, &t),
            vec![5],
            "only the record without outputs completed"
        );
        assert!(
            rx.try_recv().is_err(),
            "the dropped ack's output is still owed"
        );
        let failed = &t.outcome.lock().failed;
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].offset, 7, "the ack resolved its own position");
        assert!(
            matches!(failed[0].cause, FailureCause::DeadLetter(_)),
            "{:?}",
            failed[0].cause
        );
    }
}
