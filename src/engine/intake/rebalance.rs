//! Rebalances, as the driver handles them: partitions assigned (a fresh epoch each),
//! revoked (drain, commit synchronously, drop; docs/DESIGN.md invariant 6) or lost (drop without
//! commit). librdkafka calls these from inside `poll` through the consumer's
//! callbacks (`intake::callbacks`); tests call them directly.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tidemark_offsets::OffsetMap;

use crate::engine::driver::Engine;
use crate::engine::execution::Hooks;
use crate::engine::seams::consumer::KafkaConsumer;
use crate::engine::state::RunState;
use crate::error::Error;
use crate::metrics::Counters;
use crate::processor::panic_message;
use crate::topic_partition::TopicPartition;

impl Engine {
    /// Starts tracking newly assigned partitions, each under a fresh epoch, with the
    /// offset maps their previous owners committed (`maps`: by partition).
    pub(crate) fn on_assign(
        &self,
        st: &mut RunState,
        assigned: &[TopicPartition],
        maps: Vec<(TopicPartition, OffsetMap)>,
    ) {
        let now = Instant::now();
        self.refusals.progress();
        st.stats.last_assigned = Some(now);
        st.stats.joined.get_or_insert(now);
        for tp in assigned {
            let epoch = st.partitions.assign(&tp.topic, tp.partition);
            Counters::add(&self.metrics.counters.assigned, 1);
            tracing::info!(topic = %tp.topic, partition = tp.partition, epoch = epoch.0, "assigned");
        }
        for (tp, map) in maps {
            st.partitions.inherit(&tp.topic, tp.partition, map);
        }
        if !assigned.is_empty() {
            self.hook(st, "partitions_assigned", |h| {
                h.partitions_assigned(assigned)
            });
        }
    }

    /// Calls a lifecycle hook of the processor (none once the stop has called
    /// `stopping`). A panic in it stops the run with [`Error::Hook`] and returns
    /// false: the caller then commits nothing the hook was to flush state for (the
    /// next owner processes those records again).
    pub(crate) fn hook(
        &self,
        st: &mut RunState,
        name: &'static str,
        call: impl FnOnce(&dyn Hooks),
    ) -> bool {
        if st.stats.stopped_hooks {
            return true;
        }
        let hooks = &*self.hooks;
        match std::panic::catch_unwind(AssertUnwindSafe(|| call(hooks))) {
            Ok(()) => true,
            Err(panic) => {
                let message = panic_message(&*panic);
                tracing::error!(hook = name, %message, "a lifecycle hook panicked: stopping without committing what it was to flush");
                st.fatal.get_or_insert(Error::Hook {
                    hook: name,
                    message,
                });
                false
            }
        }
    }

    /// Partitions leave this member. Revoked: records staged for them are dropped,
    /// their in-flight records drain (up to `drain_timeout`), their committable
    /// offsets are committed synchronously, their state is dropped. Lost (the
    /// consumer says the assignment was lost): their state is dropped and nothing
    /// is committed, since another member may own them already. With exactly-once
    /// the open transaction holds outputs of every partition: everything drains
    /// first and the transaction commits (or aborts and rewinds).
    pub(crate) fn on_revoke(
        &self,
        consumer: &impl KafkaConsumer,
        st: &mut RunState,
        revoked: &[TopicPartition],
    ) {
        let set: HashSet<(&str, i32)> = revoked
            .iter()
            .map(|tp| (&*tp.topic, tp.partition))
            .collect();
        let is_revoked = |t: &str, p: i32| set.contains(&(t, p));
        let transaction = self.target.transaction().cloned();
        let scope = |t: &str, p: i32| transaction.is_some() || is_revoked(t, p);
        let mut abort = None;
        let lost = consumer.assignment_lost();
        // The hooks hear of the partitions this member still tracks (a close after
        // the stop revokes what `finish` already handed to `partitions_revoked`).
        let tracked: Vec<TopicPartition> = revoked
            .iter()
            .filter(|tp| st.partitions.get(&tp.topic, tp.partition).is_some())
            .cloned()
            .collect();
        if lost {
            tracing::warn!(
                partitions = revoked.len(),
                "assignment lost: dropping state without commit"
            );
            Counters::add(&self.metrics.counters.lost, revoked.len() as u64);
            // Out of the group until it rejoins: not idle before its next
            // assignment (the idle stop's "every assigned partition at its end"
            // would hold of the empty set), and the idle clock restarts there.
            st.stats.joined = None;
            if transaction.is_some() {
                self.drain(st, self.drain_timeout, scope);
                abort = Some(KafkaError::Rebalance(RDKafkaErrorCode::AssignmentLost));
            }
            if !tracked.is_empty() {
                self.hook(st, "partitions_lost", |h| h.partitions_lost(&tracked));
            }
        } else {
            let _span = tracing::info_span!("revoke", partitions = revoked.len()).entered();
            let started = Instant::now();
            let left = self.drain(st, self.drain_timeout, scope);
            metrics::histogram!(crate::metrics::names::DRAIN)
                .record(started.elapsed().as_secs_f64());
            if left > 0 {
                tracing::warn!(in_flight = left, "drain timeout on revoke: those records will be processed again by the next owner");
            }
            // Drained, not yet committed: what the hook flushes, the commit covers
            // (and a hook that failed to flush gets no commit).
            let flushed = tracked.is_empty()
                || self.hook(st, "partitions_revoked", |h| h.partitions_revoked(&tracked));
            if transaction.is_some() && (left > 0 || !flushed) {
                // Outputs of records still in flight may be in the transaction:
                // committing it would publish them without their offsets.
                abort = Some(KafkaError::Rebalance(RDKafkaErrorCode::OperationTimedOut));
            } else if !self.delivery.commits_before_processing() && flushed {
                // With an eager protocol the group is already rebalancing, and a
                // commit may be refused (REBALANCE_IN_PROGRESS): those records are
                // then processed again by the next owner (at-least-once).
                let _ = self.commit_final(consumer, st, scope);
            }
            Counters::add(&self.metrics.counters.revoked, revoked.len() as u64);
        }
        // librdkafka keeps a partition's pause flag and saved position across
        // assignments: resume what back-pressure paused, so a later assignment of the
        // same partition starts clean.
        let mut paused = Vec::new();
        // A lost assignment commits nothing; what it completed is set aside (not
        // under transactions: their outputs were aborted with the transaction).
        let set_aside = lost && transaction.is_none() && !self.delivery.commits_before_processing();
        for tp in revoked {
            st.scheduler.remove(&tp.topic, tp.partition);
            self.tracer.forget(&tp.topic, tp.partition);
            let Some(state) = st.partitions.remove(&tp.topic, tp.partition) else {
                continue;
            };
            if state.paused {
                paused.push(tp.clone());
            }
            if set_aside {
                st.partitions.set_aside(state);
            }
        }
        if !paused.is_empty() {
            if let Err(e) = consumer.resume(&paused) {
                tracing::warn!(error = %e, "resuming revoked partitions failed");
            }
        }
        if let (Some(sink), Some(cause)) = (transaction, abort) {
            self.abort_and_rewind(consumer, st, &sink, &cause);
        }
    }
}
