//! The driver: the poll loop and everything it does to the run state. It is the only
//! writer of run state ([`RunState`]); the components it calls return decisions as
//! values (the scheduler's tasks, the failure policy's decision, the commit
//! schedule's `Due`, back-pressure's `FlowDecision`, a commit target's result)
//! and the driver applies them.
//!
//! [`Engine`] is the part librdkafka's callbacks reach too (they run inside `poll`,
//! on the poll thread): the run state and the settings, with the operations that
//! apply task outcomes and drain (`outcomes`), commit and rewind (`commits`), and
//! assign and revoke (`rebalance`).
//! [`Driver`] is the loop itself, with what only the loop touches: the pool, the
//! scheduler, the commit schedule.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;

use super::commits::schedule::CommitSchedule;
use super::commits::target::CommitTarget;
use super::completion::progress::{PendingTask, TaskDone};
use super::execution::Execution;
use super::intake::partitions::Partitions;
use super::observation::publish::{HighWatermarks, Publisher};
use super::scheduling::flow::{self, Limits};
use super::scheduling::scheduler::Task;
use super::seams::consumer::KafkaConsumer;
use super::seams::sink::Sink;
use super::state::{LiveTask, RunState};
use super::wake::Wake;
use crate::commit::{CommitCallback, CommitError, CommitRequest};
use crate::config::{Config, Delivery, StartPosition};
use crate::error::Error;
use crate::metrics::{Counters, Shared};
use crate::shutdown::ShutdownHandle;
use crate::topic_partition::TopicPartition;

/// The run state and settings shared by the poll loop and librdkafka's callbacks.
pub(crate) struct Engine {
    pub(super) state: Mutex<RunState>,
    /// Task outcomes from the workers and the sink.
    pub(super) completions: Receiver<TaskDone>,
    /// Also reachable without the lock: librdkafka's log callback runs on its own
    /// threads and must never wait for the poll thread.
    pub(super) metrics: Arc<Shared>,
    /// The facade's processing-time histogram, registered once (recorded per task).
    pub(super) record_processing: metrics::Histogram,
    pub(super) on_commit: Option<CommitCallback>,
    /// The processor's lifecycle hooks (called through [`Engine::hook`]).
    pub(super) hooks: Arc<dyn super::execution::Hooks>,
    pub(super) delivery: Delivery,
    /// Longest a revoke or a stop waits for in-flight records.
    pub(super) drain_timeout: Duration,
    /// Where partitions without a committed offset start.
    pub(super) start_position: Option<StartPosition>,
    pub(super) target: CommitTarget,
    /// The producer of outputs and dead letters, if any.
    pub(super) sink: Option<Arc<Sink>>,
    /// Where task outcomes are sent (dead letters resolve through it too).
    pub(super) done_tx: Sender<TaskDone>,
    /// Wakes the poll thread parked on an empty consumer queue.
    pub(super) wake: Arc<Wake>,
    /// What the cluster refused (authentication, TLS, ACLs): stops the run.
    pub(super) refusals: super::observation::refusal::Refusals,
    /// The records' spans (feature `otel`): a retried attempt's context is kept
    /// here for the next attempt's span.
    pub(super) tracer: Arc<super::observation::trace::Tracer>,
}

/// True when `task` holds the lowest incomplete record of its partition. That record
/// starts its lane's chain, so it is in the task's first layer.
fn holds_committable(partitions: &Partitions, task: &Task) -> bool {
    let head = partitions
        .get(&task.topic, task.partition)
        .and_then(|s| s.tracker.committable());
    head.is_some_and(|h| task.records[..task.layer].iter().any(|r| r.offset == h))
}

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    Continue,
    Stop,
}

/// The poll loop and what only it touches.
pub(crate) struct Driver {
    pub(super) engine: Arc<Engine>,
    /// Where tasks run: the worker pool or an async runtime.
    pub(super) execution: Execution,
    pub(super) schedule: CommitSchedule,
    pub(super) limits: Limits,
    pub(super) requests: Receiver<CommitRequest>,
    pub(super) shutdown: ShutdownHandle,
    pub(super) poll_timeout: Duration,
    pub(super) max_batch_records: usize,
    pub(super) idle_limit: Option<Duration>,
    /// Back-pressure paused every partition in the last round.
    pressed: bool,
    pub(super) first_dispatch: Option<Instant>,
    last_record: Instant,
    publisher: Publisher,
}

impl Driver {
    /// A driver for `config`, with `engine` shared with the consumer's callbacks.
    pub(crate) fn new(
        config: &Config,
        engine: Arc<Engine>,
        execution: Execution,
        requests: Receiver<CommitRequest>,
        shutdown: ShutdownHandle,
    ) -> Self {
        let engine_metrics = engine.metrics.clone();
        Driver {
            engine,
            execution,
            schedule: CommitSchedule::new(
                config.commits.policy,
                config.flow.max_uncommitted_records,
            ),
            limits: Limits::from_config(config),
            requests,
            shutdown,
            poll_timeout: config.flow.poll_timeout,
            max_batch_records: config.flow.max_batch_records,
            idle_limit: config.lifecycle.exit_when_idle,
            pressed: false,
            first_dispatch: None,
            last_record: Instant::now(),
            publisher: Publisher::new(
                engine_metrics,
                config.observability.stuck_threshold,
                config.commits.offset_map_max_bytes,
                None,
            ),
        }
    }

    /// Takes high watermarks sampled off the poll thread (`lag_sampler`), for the lag
    /// gauges.
    pub(crate) fn take_high_watermarks(&mut self, sampled: Receiver<HighWatermarks>) {
        self.publisher.set_sampled(sampled);
    }

    /// Publishes the gauges now (at the end of a run).
    pub(crate) fn publish(&mut self) {
        let engine = self.engine.clone();
        let st = engine.state.lock();
        self.publisher.publish(&st, Instant::now());
    }

    /// Turns until shut down, idle for `exit_when_idle`, a record failure the
    /// policy stops on, or a fatal error.
    pub(crate) fn run(&mut self, consumer: &impl KafkaConsumer) {
        while self.turn(consumer) == Turn::Continue {}
    }

    /// One round: poll, dispatch, apply outcomes, regulate, commit.
    pub(crate) fn turn(&mut self, consumer: &impl KafkaConsumer) -> Turn {
        if self.shutdown.is_requested() {
            tracing::info!("shutdown requested");
            return Turn::Stop;
        }
        let polled = self.poll_round(consumer);
        let now = Instant::now();
        if polled > 0 {
            self.last_record = now;
        }
        let engine = self.engine.clone();
        let mut st = engine.state.lock();
        if polled > 0 && engine.delivery.commits_before_processing() {
            engine.commit_before_processing(consumer, &mut st);
        }
        if polled > 0 || st.scheduler.has_ready(now) {
            self.dispatch(&mut st, now);
        }
        if self.schedule.per_record() {
            // One commit per completed record (of its partition).
            let per_record = |st: &mut RunState, topic: &Arc<str>, partition: i32, n: u64| {
                for _ in 0..n {
                    if engine.awaiting_commit(st) {
                        break;
                    }
                    let offsets = st
                        .partitions
                        .take_dirty(|t, p| *t == **topic && p == partition, true);
                    let _ = engine.commit(consumer, st, offsets, false);
                }
            };
            engine.collect_progress(&mut st, per_record);
            while let Ok(done) = engine.completions.try_recv() {
                let (topic, partition) = st
                    .live
                    .get(&done.task)
                    .map(|l| (l.pending.topic.clone(), l.pending.partition))
                    .unzip();
                let n = engine.apply(&mut st, done);
                if let (Some(topic), Some(partition)) = (topic, partition) {
                    per_record(&mut st, &topic, partition, n);
                }
            }
        } else {
            engine.apply_ready(&mut st);
        }
        if st.must_stop() {
            return Turn::Stop;
        }
        // Lanes freed by these outcomes run now, not after the next poll.
        if st.scheduler.has_ready(now) {
            self.dispatch(&mut st, now);
        }
        self.pressed = self.regulate(consumer, &mut st);
        // One async commit at a time (`commits`): the policy's clock, its counters and
        // the commit requests wait while one is unanswered, and go at its answer.
        let answered = engine.take_commit_answers(consumer, &mut st, Duration::ZERO);
        if answered && !engine.delivery.commits_before_processing() {
            if let Some(due) = self.schedule.due(now, &st) {
                engine.commit_due(consumer, &mut st, due);
            } else if self.schedule.per_record() && engine.target.answers_later() {
                // What completed while a commit was unanswered.
                engine.commit_dirty(consumer, &mut st, |_, _| true);
            }
            while let Ok(request) = self.requests.try_recv() {
                match request {
                    CommitRequest::All => engine.commit_dirty(consumer, &mut st, |_, _| true),
                    CommitRequest::Partition(tp) => {
                        engine.commit_dirty(consumer, &mut st, |t, p| tp.is(t, p))
                    }
                }
            }
        }
        if let Some(refused) = engine.refusals.due(now) {
            st.fatal.get_or_insert(refused);
        }
        if st.fatal.is_some() {
            return Turn::Stop;
        }
        engine.metrics.turned(now);
        self.publisher.maybe_publish(&st, now);
        if let Some(limit) = self.idle_limit {
            // Records held back in the record queue are work left, whatever the
            // partitions' ends of log said before they arrived.
            if self.caught_up(&st, now, limit) && !consumer.records_queued() {
                tracing::info!(
                    idle_ms = limit.as_millis() as u64,
                    "caught up and idle: stopping"
                );
                return Turn::Stop;
            }
        }
        Turn::Continue
    }

    /// The idle stop (`LifecycleConfig::exit_when_idle`): the member has received its first
    /// assignment (an empty one counts), no record arrived for `limit` since then,
    /// every assigned partition reached its end of log and is not paused, and
    /// nothing polled is unfinished, nor a dead letter on its way.
    fn caught_up(&self, st: &RunState, now: Instant, limit: Duration) -> bool {
        let Some(joined) = st.stats.joined else {
            return false;
        };
        let since = st
            .stats
            .last_assigned
            .unwrap_or(joined)
            .max(self.last_record);
        now.duration_since(since) >= limit
            && st.partitions.caught_up()
            && st.scheduler.retries_waiting() == 0
            && !st.scheduler.has_waiting()
    }

    /// How long the next poll may wait (`poll_timeout`, never past the next
    /// retry's due time), and how many completed records wake it early: while
    /// back-pressure pauses every partition, as many as bring the records in flight
    /// to half the bound (the resume); with a commit per record, each one.
    fn next_wait(&self) -> (Duration, usize) {
        let st = self.engine.state.lock();
        let mut timeout = self.poll_timeout;
        if let Some(due) = st.scheduler.next_due() {
            timeout = timeout.min(due.saturating_duration_since(Instant::now()));
        }
        let records = if self.schedule.per_record() {
            1
        } else if self.pressed {
            let in_flight = st.partitions.records_in_flight();
            in_flight
                .saturating_sub(self.limits.records / 2)
                .max(in_flight / 2)
                .max(1)
        } else {
            0
        };
        (timeout, records)
    }

    /// Polls one round: serves the consumer queue (rebalance, error and commit
    /// events: always, invariant 8) and takes the records waiting in the record
    /// queue, up to `max_batch_records` or a bound, staging each in its partition;
    /// while back-pressure holds back (`RunState::held_back`) or no room is left it
    /// takes none and they stay prefetched. When neither queue has anything for it,
    /// parks once up to the wait of [`next_wait`](Self::next_wait) (woken by either
    /// queue, a task's end or the armed completions: docs/DESIGN.md, "Waking the
    /// poll thread"). Returns the number of records polled.
    fn poll_round(&self, consumer: &impl KafkaConsumer) -> usize {
        let room = self.limits.room(&self.engine.state.lock().partitions);
        let most = if self.pressed {
            0
        } else {
            self.max_batch_records.min(room)
        };
        // Records of a partition not forwarded to the record queue come through the
        // consumer queue; they count against the round too.
        let cap = most.max(1);
        let mut polled = 0;
        let mut waited = false;
        'round: loop {
            let mut got = false;
            if let Some(result) = consumer.poll(Duration::ZERO) {
                got = true;
                if self.take(consumer, result, &mut polled) {
                    break;
                }
            }
            while polled < most {
                let Some(result) = consumer.poll_record() else {
                    break;
                };
                got = true;
                if self.take(consumer, result, &mut polled) {
                    break 'round;
                }
            }
            if polled >= cap || (!got && (waited || polled > 0)) {
                break;
            }
            if !got {
                // Nothing yet this round: wait once, then take what came.
                waited = true;
                if consumer.queue_is_empty() && (polled >= most || !consumer.records_queued()) {
                    let (timeout, records) = self.next_wait();
                    self.engine.wake.park(timeout, records);
                }
            }
        }
        // One atomic add per round, not per record.
        Counters::add(&self.engine.metrics.counters.polled, polled as u64);
        if polled > 0 {
            self.engine.refusals.progress();
        }
        polled
    }

    /// Takes one result of a poll: stages a record (counting it in `polled`), or
    /// handles a partition's end of log or a consumer error. True when the round
    /// must stop (a bound reached, the offset reset refused).
    fn take(
        &self,
        consumer: &impl KafkaConsumer,
        result: KafkaResult<impl Message>,
        polled: &mut usize,
    ) -> bool {
        match result {
            Ok(msg) => {
                *polled += 1;
                let mut st = self.engine.state.lock();
                st.partitions
                    .stage(&msg)
                    .is_some_and(|n| self.limits.reached(&st.partitions, n))
            }
            Err(e @ KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                self.engine
                    .state
                    .lock()
                    .fatal
                    .get_or_insert(Error::OffsetReset(e.into()));
                true
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                let positions = consumer.positions().unwrap_or_default();
                let mut st = self.engine.state.lock();
                st.partitions.reached_end(partition, &positions);
                false
            }
            Err(e) => {
                self.engine.refusals.saw(&e, "");
                tracing::warn!(error = %e, "consumer error");
                false
            }
        }
    }

    /// Delivers the staged records and hands the scheduler's tasks to the pool.
    fn dispatch(&mut self, st: &mut RunState, now: Instant) {
        self.first_dispatch.get_or_insert(now);
        let (delivered, skipped) = st.partitions.deliver_staged();
        if skipped > 0 {
            Counters::add(&self.engine.metrics.counters.skipped_by_offset_map, skipped);
            st.stats.completed += skipped;
        }
        let aborts = self.engine.sink.as_ref().map_or(0, |s| s.aborts());
        let _span = tracing::trace_span!("dispatch", partitions = delivered.len()).entered();
        let mut tasks = st.scheduler.tasks(delivered, now, aborts);
        if tasks.len() > 1 {
            // The pool takes tasks in order: the one holding its partition's
            // committable offset goes first, so commits (and the offset map) follow
            // completions instead of waiting behind the round.
            tasks.sort_by_cached_key(|t| !holds_committable(&st.partitions, t));
        }
        let mut dispatched = 0;
        for task in tasks {
            dispatched += task.records.len();
            let pending = PendingTask::new(
                task.id,
                task.topic.clone(),
                task.partition,
                task.epoch,
                task.bytes,
                task.records.iter().map(|r| r.offset).collect(),
                self.engine.done_tx.clone(),
                self.engine.wake.clone(),
            );
            st.live
                .insert(task.id, LiveTask::new(pending.clone(), false));
            self.execution.run(
                task,
                pending,
                self.engine.sink.clone(),
                &self.engine.metrics,
            );
        }
        Counters::add(&self.engine.metrics.counters.dispatched, dispatched as u64);
    }

    /// Applies back-pressure's decision; returns true while every partition is
    /// paused for the global bounds.
    fn regulate(&self, consumer: &impl KafkaConsumer, st: &mut RunState) -> bool {
        let decision = flow::regulate(st, self.limits, &self.engine.metrics.counters);
        st.held_back = decision.held_back;
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for change in &decision.changed {
            let Some(s) = st.partitions.get_mut(&change.tp.topic, change.tp.partition) else {
                continue;
            };
            s.held = change.held;
            s.held_uncommitted = change.held_uncommitted;
            if s.paused != change.paused {
                s.paused = change.paused;
                let list = if change.paused {
                    &mut pause
                } else {
                    &mut resume
                };
                list.push(change.tp.clone());
            }
        }
        if !pause.is_empty() {
            if let Err(e) = consumer.pause(&pause) {
                tracing::warn!(error = %e, "pause failed");
            }
        }
        if !resume.is_empty() {
            if let Err(e) = consumer.resume(&resume) {
                tracing::warn!(error = %e, "resume failed");
            }
            kick_fetcher(consumer, &st.partitions, &resume);
        }
        st.held_back
    }

    /// The graceful stop: nothing new is dispatched; what is in flight drains (up to
    /// `drain_timeout`); the committable offsets are committed synchronously
    /// (not with exactly-once when the producer failed or records are still in
    /// flight: the open transaction is then aborted by closing the producer).
    /// Returns the final commit's result. The caller then closes the consumer.
    pub(crate) fn finish(&self, consumer: &impl KafkaConsumer) -> Result<(), CommitError> {
        let engine = &self.engine;
        let mut st = engine.state.lock();
        st.partitions.discard_staged();
        let left = engine.drain(&mut st, engine.drain_timeout, |_, _| true);
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "drain timeout on shutdown: those records will be processed again"
            );
        }
        // Drained, before the final commit: the hooks flush what it covers.
        let assigned: Vec<TopicPartition> = st
            .partitions
            .iter()
            .map(|s| TopicPartition::new(s.topic.clone(), s.partition))
            .collect();
        let flushed = (assigned.is_empty()
            || engine.hook(&mut st, "partitions_revoked", |h| {
                h.partitions_revoked(&assigned)
            }))
            & engine.hook(&mut st, "stopping", |h| h.stopping());
        st.stats.stopped_hooks = true;
        if !flushed
            || engine.delivery.commits_before_processing()
            || (engine.target.covers_every_partition() && (st.fatal.is_some() || left > 0))
        {
            return Ok(());
        }
        engine.commit_final(consumer, &mut st, |_, _| true)
    }
}

/// After `resume`, librdkafka (2.12, on the mock cluster and on real brokers alike)
/// sends the partitions' next Fetch only about a second later; measured in
/// BENCHMARKS.md, it capped CPU-bound pipelines at one in-flight window per second.
/// A seek to where resume itself would continue starts the fetcher at once. The
/// offset comes from tidemark's own records — the one after the last record polled
/// in this assignment — never from `rd_kafka_position`, which can still hold a
/// position of an earlier assignment of the partition (docs/DESIGN.md, broker
/// quirks): seeking there could skip records. Partitions with no record polled yet in
/// this assignment keep their pending start.
fn kick_fetcher(
    consumer: &impl KafkaConsumer,
    partitions: &Partitions,
    resumed: &[TopicPartition],
) {
    for TopicPartition { topic, partition } in resumed {
        let Some(next) = partitions.get(topic, *partition).and_then(|s| {
            s.staged
                .last()
                .map(|r| r.offset + 1)
                .or_else(|| s.tracker.highest_delivered().map(|h| h + 1))
        }) else {
            continue;
        };
        if let Err(e) = consumer.seek(topic, *partition, next, Duration::ZERO) {
            tracing::debug!(error = %e, "seek after resume failed; the fetcher starts late");
        }
    }
}
