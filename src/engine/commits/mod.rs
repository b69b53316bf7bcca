//! The commit path of the run, in one room: what goes into a commit (the dirty
//! partitions' committable offsets, after moving idle partitions past offsets never
//! delivered), sending it to the [`CommitTarget`], applying the answer (confirmed
//! offsets release their records, failed ones leave their partitions dirty, the
//! user's callback), and the exactly-once abort and rewind. The schedule that says
//! when ([`schedule`]) and the targets' I/O ([`target`]) are beside it. The
//! answers to async commits come back on the consumer's commit queue
//! ([`Engine::take_commit_answers`]); librdkafka's commit callback hands its own
//! auto-commits' results to [`Engine::record_commit`].
//!
//! One async commit at a time: librdkafka retries an OffsetCommit that timed out
//! or met a coordinator change (`rd_kafka_handle_OffsetCommit`, up to 2 retries
//! after the request's own failure), so an older commit still being retried can
//! land after a newer one and move the committed offset back (invariant 7; seen in
//! the leader-kill test on a 3-node cluster). While one is unanswered no other
//! commit is sent: the policy's commits wait for the answer (their partitions stay
//! dirty), and a synchronous commit (revoke, stop) first waits for it.

pub(in crate::engine) mod schedule;
pub(in crate::engine) mod target;

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use crate::commit::{CommitError, CommitEvent, PartitionOffset};
use crate::engine::commits::schedule::Due;
use crate::engine::commits::target::{CommitTarget, Sent, TRANSACTION_TIMEOUT};
use crate::engine::driver::Engine;
use crate::engine::seams::consumer::KafkaConsumer;
use crate::engine::seams::sink::Sink;
use crate::engine::state::RunState;
use crate::error::Error;
use crate::metrics::{names, Counters};
use crate::topic_partition::TopicPartition;

/// How long a commit that must not overtake an unanswered async commit (revoke,
/// stop) waits for its answer before it is sent anyway: librdkafka answers after
/// at most three attempts of `socket.timeout.ms` (60 s by default) each, usually in
/// milliseconds. Inside a revoke this counts against `max.poll.interval.ms`.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

impl Engine {
    /// Commits `offsets` to the target. `wait`: answer now even with async group
    /// commits (revoke, stop, a transaction). The result is applied here (sync) or
    /// when its answer arrives (async: `take_commit_answers`). A failed transaction is aborted
    /// and every partition rewound.
    pub(crate) fn commit(
        &self,
        consumer: &impl KafkaConsumer,
        st: &mut RunState,
        offsets: Vec<PartitionOffset>,
        wait: bool,
    ) -> Result<(), CommitError> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.await_commit_answers(consumer, st);
        match self.target.send(consumer, &offsets, wait) {
            Sent::Pending => {
                st.commits.sent.push_back(Instant::now());
                Ok(())
            }
            Sent::Done(result, latency) => {
                self.record_commit(st, offsets, result.clone(), Some(latency));
                match (self.target.transaction(), &result) {
                    (Some(sink), Err(CommitError::Kafka(cause))) => {
                        self.abort_and_rewind(consumer, st, sink, cause.kafka())
                    }
                    // Nothing can use the producer again: stop (a restart aborts the
                    // open transaction by fencing it).
                    (Some(_), Err(stuck @ CommitError::TransactionStuck { .. })) => {
                        tracing::error!(error = %stuck, "stopping");
                        st.fatal.get_or_insert(Error::Commit(stuck.clone()));
                    }
                    _ => {}
                }
                result
            }
        }
    }

    /// True while an async commit of tidemark's is unanswered: no other commit may
    /// be sent before its answer (see the module documentation).
    pub(crate) fn awaiting_commit(&self, st: &RunState) -> bool {
        !st.commits.sent.is_empty()
    }

    /// Applies the answers to async commits that have arrived, waiting up to `wait`
    /// for the rest; returns false when some are still unanswered.
    pub(crate) fn take_commit_answers(
        &self,
        consumer: &impl KafkaConsumer,
        st: &mut RunState,
        wait: Duration,
    ) -> bool {
        let deadline = Instant::now() + wait;
        while self.awaiting_commit(st) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((result, offsets)) = consumer.commit_answer(left) else {
                return false;
            };
            let latency = st.commits.sent.pop_front().map(|t| t.elapsed());
            if !offsets.is_empty() {
                self.record_commit(st, offsets, result.map_err(CommitError::from), latency);
            }
        }
        true
    }

    /// Before a commit that must not be overtaken (every commit while one is
    /// unanswered): waits up to [`ANSWER_WAIT`] for the answers to async commits.
    fn await_commit_answers(&self, consumer: &impl KafkaConsumer, st: &mut RunState) {
        if self.awaiting_commit(st) && !self.take_commit_answers(consumer, st, ANSWER_WAIT) {
            tracing::warn!(
                unanswered = st.commits.sent.len(),
                wait_ms = ANSWER_WAIT.as_millis() as u64,
                "an async commit is still unanswered; committing anyway (a late retry of \
                 it could move the committed offset back)"
            );
        }
    }

    /// Applies the answer to a commit: confirmed offsets release their records,
    /// failed ones leave their partitions dirty for the next commit; then the user's
    /// callback.
    pub(crate) fn record_commit(
        &self,
        st: &mut RunState,
        offsets: Vec<PartitionOffset>,
        result: Result<(), CommitError>,
        latency: Option<Duration>,
    ) {
        let ok = result.is_ok();
        st.partitions.commit_result(&offsets, ok);
        st.commits.record(&offsets, ok);
        match &result {
            Ok(()) => {
                Counters::add(&self.metrics.counters.commits, 1);
                tracing::debug!(?offsets, "committed");
            }
            Err(e) => {
                Counters::add(&self.metrics.counters.commits_failed, 1);
                tracing::warn!(error = %crate::error::chain(e), ?offsets, "commit failed; its partitions stay dirty")
            }
        }
        if let Some(latency) = latency {
            metrics::histogram!(names::COMMIT_LATENCY).record(latency.as_secs_f64());
        }
        if let Some(cb) = &self.on_commit {
            cb(&CommitEvent {
                offsets,
                result,
                latency,
            });
        }
    }

    /// Commits the dirty partitions `filter` accepts now (a policy commit or a
    /// commit handle request), unless an async commit is unanswered (the caller
    /// asks again after its answer). With a transaction, every record in flight
    /// drains first and every dirty partition is in it (one transaction covers them
    /// all).
    pub(crate) fn commit_dirty(
        &self,
        consumer: &impl KafkaConsumer,
        st: &mut RunState,
        filter: impl Fn(&str, i32) -> bool,
    ) {
        if self.target.covers_every_partition() {
            let left = self.drain(st, self.drain_timeout, |_, _| true);
            if left > 0 {
                tracing::debug!(
                    in_flight = left,
                    "transaction commit postponed: records in flight"
                );
                return;
            }
            let offsets = st.partitions.take_dirty(|_, _| true, false);
            let _ = self.commit(consumer, st, offsets, true);
        } else if !self.awaiting_commit(st) {
            let offsets = st.partitions.take_dirty(filter, false);
            let _ = self.commit(consumer, st, offsets, false);
        }
    }

    /// The commit the schedule says is due: with librdkafka's auto-commit the
    /// committable offsets are stored (and, when forced by back-pressure, what is
    /// stored is committed now); otherwise the dirty partitions are committed.
    pub(crate) fn commit_due(&self, consumer: &impl KafkaConsumer, st: &mut RunState, due: Due) {
        self.skip_undelivered(consumer, st);
        if let CommitTarget::LibrdkafkaAuto = self.target {
            self.store_committable(consumer, st);
            if due == Due::Forced {
                match consumer.commit_async(None) {
                    Ok(()) => st.commits.sent.push_back(Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "commit of the stored offsets not sent"),
                }
            }
        } else {
            self.commit_dirty(consumer, st, |_, _| true);
        }
    }

    /// The synchronous commit of revoke and stop: every dirty partition `filter`
    /// accepts, after the answers to async commits still on their way (a failed
    /// one leaves its partitions dirty for this commit), moving idle ones past
    /// offsets never delivered and storing them for librdkafka's own auto-commit on
    /// revoke/close.
    pub(crate) fn commit_final(
        &self,
        consumer: &impl KafkaConsumer,
        st: &mut RunState,
        filter: impl Fn(&str, i32) -> bool,
    ) -> Result<(), CommitError> {
        self.await_commit_answers(consumer, st);
        self.skip_undelivered(consumer, st);
        self.store_committable(consumer, st);
        let offsets = st.partitions.take_dirty(filter, false);
        self.commit(consumer, st, offsets, true)
    }

    /// With librdkafka's auto-commit: stores the committable offsets that moved, so
    /// what it commits by itself (on its timer, on revoke and on close) is never
    /// older than what tidemark commits explicitly.
    pub(crate) fn store_committable(&self, consumer: &impl KafkaConsumer, st: &mut RunState) {
        if !matches!(self.target, CommitTarget::LibrdkafkaAuto) {
            return;
        }
        let moved = st.partitions.take_unstored();
        if !moved.is_empty() {
            if let Err(e) = consumer.store_offsets(&moved) {
                tracing::debug!(error = %e, "storing offsets failed");
            }
        }
    }

    /// Moves idle partitions' committable offsets past the offsets their consumer
    /// position skipped without delivering them (the commit marker that ends a
    /// transaction, aborted records under `read_committed`, compacted records), so
    /// the committed offset can reach the high watermark (docs/DESIGN.md, invariant 1). librdkafka
    /// (≥ 1.4) advances the position past control records. Idle means every record
    /// polled is complete and the end of the log was reported after the last one:
    /// the position alone is not trusted (see `Partitions::skip_to_position`). One
    /// position call, made only when some partition is idle.
    pub(crate) fn skip_undelivered(&self, consumer: &impl KafkaConsumer, st: &mut RunState) {
        if !st.partitions.any_idle() {
            return;
        }
        let Ok(positions) = consumer.positions() else {
            return;
        };
        for po in positions {
            st.partitions
                .skip_to_position(&po.topic, po.partition, po.offset);
        }
    }

    /// Exactly-once: aborts the open transaction and seeks every assigned partition
    /// back to the first offset its last committed transaction does not cover, under
    /// a new epoch, so those records are processed again into the next transaction.
    /// A transaction that cannot even be aborted (the producer is fenced or in a
    /// fatal state) stops the run with [`Error::Transaction`].
    pub(crate) fn abort_and_rewind(
        &self,
        consumer: &impl KafkaConsumer,
        st: &mut RunState,
        sink: &Sink,
        cause: &KafkaError,
    ) {
        tracing::warn!(error = %cause, "aborting the transaction; rewinding to the last committed offsets");
        if let Err(e) = sink.abort_transaction(TRANSACTION_TIMEOUT) {
            tracing::error!(error = %e, "transaction abort failed");
            st.fatal.get_or_insert(Error::Transaction(e.into()));
            return;
        }
        Counters::add(&self.metrics.counters.aborts, 1);
        let restarts = st.partitions.restart_points();
        st.partitions.discard_staged();
        let mut resume = Vec::new();
        for (topic, partition, restart, paused) in &restarts {
            let Some(offset) = *restart else { continue };
            if let Err(e) = consumer.seek(topic, *partition, offset, TRANSACTION_TIMEOUT) {
                tracing::error!(error = %e, %topic, partition, offset, "seek after abort failed");
                st.fatal.get_or_insert(Error::Kafka {
                    context: "seeking back after an aborted transaction",
                    source: e.into(),
                });
                return;
            }
            if *paused {
                resume.push(TopicPartition::new(topic.clone(), *partition));
            }
            st.partitions.assign(topic, *partition);
            st.scheduler.remove(topic, *partition);
            tracing::info!(%topic, partition, offset, "rewound after abort");
        }
        if !resume.is_empty() {
            if let Err(e) = consumer.resume(&resume) {
                tracing::warn!(error = %e, "resume after abort failed");
            }
        }
    }

    /// At-most-once: commits the offsets after the staged records synchronously,
    /// before they are dispatched. If the commit fails they are dropped unprocessed
    /// (a later owner reads them from the older commit), so no record is ever
    /// processed twice.
    pub(crate) fn commit_before_processing(
        &self,
        consumer: &impl KafkaConsumer,
        st: &mut RunState,
    ) {
        let ends = st.partitions.take_staged_ends();
        if self.commit(consumer, st, ends, true).is_err() {
            tracing::warn!(
                "at-most-once: commit before processing failed; dropping the polled records"
            );
            st.partitions.discard_staged();
        }
    }
}
