//! librdkafka's callbacks: rebalances (assign / revoke / lost) and commit results.
//! They run inside `BaseConsumer::poll`, on the poll thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::bindings as rdsys;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::{IsError, KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::partitions::Partitions;
use crate::commit::{offsets_of, CommitCallback, CommitEvent};
use crate::config::StartPosition;
use crate::shutdown::Progress;

/// State the poll loop shares with the callbacks (same thread; see
/// [`Partitions`] for why there is a mutex at all).
pub(crate) struct Shared {
    pub partitions: Mutex<Partitions>,
    /// Also reachable without the lock: librdkafka's log callback runs on its own
    /// threads and must never wait for the poll thread.
    pub progress: Arc<Progress>,
    pub on_commit: Option<CommitCallback>,
    /// Longest a revoke waits for the revoked partitions' in-flight records.
    pub drain_timeout: Duration,
    /// Watermarks are committed (at-least-once); false when offsets are committed
    /// before processing (at-most-once).
    pub commit_watermarks: bool,
    /// Where partitions without a committed offset start.
    pub start_position: Option<StartPosition>,
}

/// The pipeline's `ConsumerContext`.
pub(crate) struct PipelineContext {
    pub shared: Arc<Shared>,
}

impl ClientContext for PipelineContext {
    /// Forwards librdkafka's logs to `tracing` (target `librdkafka`) like rdkafka's
    /// default, and counts MAXPOLL reports (`max.poll.interval.ms` exceeded).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "MAXPOLL" {
            Progress::add(&self.shared.progress.max_poll_exceeded, 1);
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }
}

impl PipelineContext {
    /// Sends an asynchronous commit whose result comes back through
    /// [`commit_callback`](ConsumerContext::commit_callback) on a later poll.
    ///
    /// rdkafka's `commit(.., CommitMode::Async)` cannot be used: with the event API
    /// that `BaseConsumer` uses, librdkafka turns only auto-commit results into
    /// OFFSET_COMMIT events, so a manual async commit's result would be lost. Asking
    /// for the reply on the main queue (`rd_kafka_commit_queue`), which `BaseConsumer`
    /// polls, brings it back as an OFFSET_COMMIT event.
    pub(crate) fn commit_async(
        consumer: &BaseConsumer<PipelineContext>,
        tpl: &TopicPartitionList,
    ) -> KafkaResult<()> {
        // SAFETY: the client and list outlive the call; librdkafka copies the list and
        // takes its own reference on the queue before we release ours.
        let err = unsafe {
            let rk = consumer.client().native_ptr();
            let queue = rdsys::rd_kafka_queue_get_main(rk);
            let err =
                rdsys::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(queue);
            err
        };
        if err.is_error() {
            Err(KafkaError::ConsumerCommit(err.into()))
        } else {
            Ok(())
        }
    }

    /// Sends a synchronous commit, records its result and reports it to the user.
    pub(crate) fn commit_sync(
        &self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
        tpl: &TopicPartitionList,
    ) -> KafkaResult<()> {
        let _span =
            tracing::debug_span!("commit", kind = "sync", partitions = tpl.count()).entered();
        let result = consumer.commit(tpl, CommitMode::Sync);
        let offsets = offsets_of(tpl);
        partitions.commit_result(&offsets, result.is_ok());
        match &result {
            Ok(()) => tracing::debug!(?offsets, "committed"),
            Err(e) => tracing::warn!(error = %e, ?offsets, "synchronous commit failed"),
        }
        // A sync commit's result is returned here, never as an OFFSET_COMMIT event.
        if let Some(cb) = &self.shared.on_commit {
            cb(&CommitEvent {
                offsets,
                result: result.clone(),
            });
        }
        result
    }
}

impl PipelineContext {
    /// Sets the start offset of the newly assigned partitions that have no committed
    /// offset, per [`StartPosition`]; the others keep `Offset::Invalid`, i.e. resume
    /// from their committed offset. A failed look-up leaves the list as it is
    /// (`auto.offset.reset` then decides), with a warning.
    fn apply_start_position(
        &self,
        consumer: &BaseConsumer<Self>,
        start: StartPosition,
        tpl: &mut TopicPartitionList,
    ) {
        let timeout = Duration::from_secs(10);
        let committed = match consumer.committed_offsets(tpl.clone(), timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "start position: committed offsets unknown; auto.offset.reset decides");
                return;
            }
        };
        let mut fresh = TopicPartitionList::new();
        for e in committed.elements() {
            if !matches!(e.offset(), Offset::Offset(_)) {
                let target = match start {
                    StartPosition::Beginning => Offset::Beginning,
                    StartPosition::End => Offset::End,
                    StartPosition::Offset(o) => Offset::Offset(o),
                    StartPosition::Timestamp(ts) => Offset::Offset(ts),
                };
                let _ = fresh.add_partition_offset(e.topic(), e.partition(), target);
            }
        }
        if let StartPosition::Timestamp(_) = start {
            match consumer.offsets_for_times(fresh.clone(), timeout) {
                Ok(found) => fresh = found,
                Err(e) => {
                    tracing::warn!(error = %e, "start position: offsets for the timestamp unknown; auto.offset.reset decides");
                    return;
                }
            }
        }
        for e in fresh.elements() {
            let offset = match e.offset() {
                // No record at or after the timestamp: start at the end.
                Offset::Invalid => Offset::End,
                o => o,
            };
            tracing::info!(
                topic = e.topic(),
                partition = e.partition(),
                ?offset,
                "no committed offset: starting at the configured position"
            );
            let _ = tpl.set_partition_offset(e.topic(), e.partition(), offset);
        }
    }
}

impl ConsumerContext for PipelineContext {
    /// rdkafka's default rebalance handling, plus the start position of fresh
    /// partitions set on the list before it is assigned (so librdkafka starts there
    /// instead of at the committed offset or `auto.offset.reset`).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if assign {
            if let Some(start) = self.shared.start_position {
                self.apply_start_position(consumer, start, tpl);
            }
        }
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let client = consumer.client().native_ptr();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        // SAFETY: the client and the list outlive the calls; this is rdkafka's own
        // default `rebalance`, which cannot be called from an override.
        let error = unsafe {
            match (assign, cooperative) {
                (true, true) => take_error(rdsys::rd_kafka_incremental_assign(client, tpl.ptr())),
                (true, false) => rdsys::rd_kafka_assign(client, tpl.ptr()).is_error(),
                (false, true) => {
                    take_error(rdsys::rd_kafka_incremental_unassign(client, tpl.ptr()))
                }
                (false, false) => rdsys::rd_kafka_assign(client, std::ptr::null()).is_error(),
            }
        };
        if error {
            tracing::error!(assign, cooperative, "librdkafka refused the (un)assignment");
        }
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked: HashSet<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let is_revoked = |t: &str, p: i32| revoked.contains(&(t.to_string(), p));
        let mut partitions = self.shared.partitions.lock();
        if consumer.assignment_lost() {
            // Another member may own them already: committing would overwrite its
            // progress (DESIGN.md invariant 6).
            tracing::warn!(
                partitions = revoked.len(),
                "assignment lost: dropping state without commit"
            );
            Progress::add(&self.shared.progress.lost, revoked.len() as u64);
        } else {
            let _span = tracing::info_span!("revoke", partitions = revoked.len()).entered();
            // Records staged but not dispatched are simply not processed here.
            for (t, p) in &revoked {
                if let Some(s) = partitions.get(t, *p) {
                    tracing::debug!(topic = %t, partition = p, in_flight = s.tracker.in_flight(), "revoking");
                }
            }
            let left = partitions.drain(self.shared.drain_timeout, is_revoked);
            if left > 0 {
                tracing::warn!(in_flight = left, "drain timeout on revoke: those records will be processed again by the next owner");
            }
            if !self.shared.commit_watermarks {
                // At-most-once: the offsets were committed before processing.
            } else if let Some(tpl) = partitions.take_dirty(is_revoked) {
                // With an eager protocol the group is already rebalancing, and a
                // commit may be refused (REBALANCE_IN_PROGRESS): those records are
                // then processed again by the next owner (at-least-once).
                let _ = self.commit_sync(consumer, &mut partitions, &tpl);
            }
            Progress::add(&self.shared.progress.revoked, revoked.len() as u64);
        }
        for (t, p) in &revoked {
            partitions.remove(t, *p);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut partitions = self.shared.partitions.lock();
                for e in tpl.elements() {
                    let epoch = partitions.assign(e.topic(), e.partition());
                    tracing::info!(
                        topic = e.topic(),
                        partition = e.partition(),
                        epoch = epoch.0,
                        "assigned"
                    );
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, tpl: &TopicPartitionList) {
        let offsets = offsets_of(tpl);
        let mut partitions = self.shared.partitions.lock();
        partitions.commits_outstanding = partitions.commits_outstanding.saturating_sub(1);
        if offsets.is_empty() {
            return;
        }
        partitions.commit_result(&offsets, result.is_ok());
        drop(partitions);
        match &result {
            Ok(()) => tracing::debug!(?offsets, "commit acknowledged"),
            Err(e) => {
                tracing::warn!(error = %e, ?offsets, "commit failed; its partitions stay dirty")
            }
        }
        if let Some(cb) = &self.shared.on_commit {
            cb(&CommitEvent { offsets, result });
        }
    }
}

/// True when librdkafka returned an error object (which is freed here).
///
/// # Safety
/// `error` is null or an error object returned by librdkafka and not freed yet.
unsafe fn take_error(error: *mut rdsys::rd_kafka_error_t) -> bool {
    if error.is_null() {
        false
    } else {
        rdsys::rd_kafka_error_destroy(error);
        true
    }
}
