//! What the workers and the sink report, applied to the run state: each task's
//! records completed as their bits arrive (`collect_progress`), a task's end with
//! its failures decided by the failure policy (`apply`: retry, dead letter or stop),
//! dead letters sent, and the drain that revoke and stop wait in. `Engine`'s
//! operations, called by the driver and by librdkafka's callbacks on the poll
//! thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::engine::completion::failure::{FailureDecision, RecordFailure};
use crate::engine::completion::progress::{PendingTask, TaskDone};
use crate::engine::driver::Engine;
use crate::engine::observation::trace::{Outcome, RecordSpan};
use crate::engine::state::{LiveTask, RunState};
use crate::metrics::Counters;
use crate::record::Record;

impl Engine {
    /// Applies the completions of `live` not applied yet (its records complete as
    /// they succeed: `completion`). Returns the records it completed.
    fn collect_task(&self, st: &mut RunState, live: &mut LiveTask) -> u64 {
        let RunState {
            partitions,
            scheduler,
            ..
        } = st;
        let task = &*live.pending;
        let applied = &mut live.applied;
        let forget_attempts = scheduler.has_attempts();
        let n = partitions.complete(&task.topic, task.partition, task.epoch, |complete| {
            applied.take_new(task, |offset| {
                complete(offset);
                if forget_attempts {
                    scheduler.done(&task.topic, task.partition, &[offset]);
                }
            });
        });
        if n > 0 {
            st.stats.completed += n;
            st.stats.last_completion = Some(Instant::now());
            if live.dead_letter {
                Counters::add(&self.metrics.counters.dead_lettered, n);
            } else {
                Counters::add(&self.metrics.counters.completed, n);
                st.failures.completed();
            }
            if self.delivery.commits_before_processing() {
                st.partitions.release_committed(&task.topic, task.partition);
            }
        }
        n
    }

    /// Applies the completions of every task in flight that moved since the last
    /// call: once per poll round, one atomic load per task, none per record that did
    /// not complete. `each` is called with every task's partition and its count.
    pub(crate) fn collect_progress(
        &self,
        st: &mut RunState,
        mut each: impl FnMut(&mut RunState, &Arc<str>, i32, u64),
    ) {
        let mut live = std::mem::take(&mut st.live);
        for task in live.values_mut() {
            let n = self.collect_task(st, task);
            if n > 0 {
                each(st, &task.pending.topic, task.pending.partition, n);
            }
        }
        // Tasks dispatched meanwhile (none: only the poll thread dispatches).
        debug_assert!(st.live.is_empty());
        st.live = live;
    }

    /// Applies the end of a task: its last completions, each failure to the failure
    /// policy and its decision (retry, dead letter, stop), skipped records back to
    /// the scheduler, the task's lanes freed. A task of an earlier epoch changes
    /// nothing but the byte count. Returns the records it completed.
    pub(crate) fn apply(&self, st: &mut RunState, done: TaskDone) -> u64 {
        let TaskDone {
            task,
            bytes,
            mut failed,
            skipped,
            processing,
        } = done;
        let Some(mut live) = st.live.remove(&task) else {
            debug_assert!(false, "the end of a task never dispatched");
            return 0;
        };
        let n = self.collect_task(st, &mut live);
        let (topic, partition, epoch) = (
            live.pending.topic.clone(),
            live.pending.partition,
            live.pending.epoch,
        );
        let records = live.applied_count() + failed.len();
        if records > 0 && !processing.is_zero() {
            let counters = &self.metrics.counters;
            Counters::add(&counters.processing_us, processing.as_micros() as u64);
            Counters::add(&counters.failed, failed.len() as u64);
            self.record_processing
                .record(processing.as_secs_f64() / records as f64);
        }
        st.partitions.release_bytes(bytes);
        st.stats.tasks_done += 1;
        let current = st
            .partitions
            .get(&topic, partition)
            .is_some_and(|s| s.tracker.epoch() == epoch);
        if live.dead_letter {
            st.scheduler.take_dead_letter(task);
        }
        if !current {
            st.scheduler.finish(task, &[]);
            return n;
        }
        failed.sort_by_key(|f| f.offset);
        let mut keep_busy = Vec::new();
        for f in failed {
            let attempts = f.record.as_ref().map_or(1, |r| st.scheduler.attempts(r));
            let decision = st.failures.on_failure(RecordFailure {
                topic: &topic,
                partition,
                offset: f.offset,
                cause: &f.cause,
                attempts,
            });
            let (error_type, message) = (f.cause.error_type(), f.cause.message());
            match (decision, f.record) {
                (FailureDecision::Retry(wait), Some(record)) => {
                    f.span
                        .failed(Outcome::Retried, error_type, &message, attempts, Some(wait));
                    self.tracer.retried(&record, &f.span);
                    st.partitions.hold_bytes(record.size_bytes());
                    keep_busy.push(record.clone());
                    st.scheduler
                        .retry(record, epoch, attempts, Instant::now() + wait);
                }
                (FailureDecision::DeadLetter, Some(record)) => {
                    f.span
                        .failed(Outcome::DeadLettered, error_type, &message, attempts, None);
                    keep_busy.push(record.clone());
                    self.dead_letter(st, record, epoch, &message, attempts, &f.span);
                }
                _ => {
                    f.span
                        .failed(Outcome::Failed, error_type, &message, attempts, None);
                    st.partitions.mark_stopped(&topic, partition, 1)
                }
            }
        }
        if !skipped.is_empty() {
            st.partitions
                .hold_bytes(skipped.iter().map(Record::size_bytes).sum());
            st.scheduler.requeue(epoch, skipped);
        }
        let kept: Vec<&Record> = keep_busy.iter().collect();
        st.scheduler.finish(task, &kept);
        n
    }

    /// Produces `record` to the dead-letter topic with `error` and the trace context
    /// of its last attempt's `span`; it completes (under its epoch) when the
    /// producer acknowledges it, its lane held until then.
    fn dead_letter(
        &self,
        st: &mut RunState,
        record: Record,
        epoch: tidemark_offsets::Epoch,
        error: &str,
        attempts: u32,
        span: &RecordSpan,
    ) {
        let sink = self
            .sink
            .as_ref()
            .expect("a dead-letter queue has a producer");
        let id = st.scheduler.hold_for_dead_letter(&record);
        let size = record.size_bytes();
        st.partitions.hold_bytes(size);
        let pending = PendingTask::new(
            id,
            record.topic.clone(),
            record.partition,
            epoch,
            size,
            Box::new([record.offset]),
            self.done_tx.clone(),
            self.wake.clone(),
        );
        st.live.insert(id, LiveTask::new(pending.clone(), true));
        sink.dead_letter(
            &record,
            error,
            attempts,
            pending.expect_ack(0, true),
            sink.aborts(),
            span,
        );
        pending.succeeded(0);
        pending.release();
    }

    /// Applies every completion and task end already there, without blocking.
    pub(crate) fn apply_ready(&self, st: &mut RunState) {
        self.collect_progress(st, |_, _, _, _| {});
        while let Ok(done) = self.completions.try_recv() {
            self.apply(st, done);
        }
    }

    /// Waits for task outcomes until nothing `filter` accepts is in flight or
    /// `timeout` passes; returns the records still in flight then.
    pub(crate) fn drain(
        &self,
        st: &mut RunState,
        timeout: Duration,
        filter: impl Fn(&str, i32) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            self.apply_ready(st);
            let left = st.pending(&filter);
            if left == 0 {
                return 0;
            }
            match self
                .completions
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(done) => {
                    self.apply(st, done);
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.apply_ready(st);
                    return st.pending(&filter);
                }
                Err(RecvTimeoutError::Disconnected) => return left,
            }
        }
    }
}
