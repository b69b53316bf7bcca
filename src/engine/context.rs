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
use rdkafka::error::{IsError, KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::partitions::Partitions;
use crate::commit::{offsets_of, CommitCallback, CommitError, CommitEvent};
use crate::config::StartPosition;
use crate::error::Error;
use crate::offset_store::OffsetStore;
use crate::shutdown::Progress;
use crate::sink::Sink;

/// Where a pipeline's commits go.
pub(crate) enum OffsetTarget {
    /// The consumer group's coordinator (OffsetCommit).
    Group,
    /// A free consumer's offset store.
    Store(Arc<dyn OffsetStore>),
    /// The sink producer's transaction, with the group's metadata (exactly-once).
    Transaction(Arc<Sink>),
}

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
    /// Where commits go.
    pub target: OffsetTarget,
    /// librdkafka's auto-commit is on (it commits the stored offsets, also on revoke
    /// and on close).
    pub auto_commit: bool,
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

/// Moves idle partitions' committable offsets past the offsets their consumer
/// position skipped without delivering them (the commit marker that ends a
/// transaction, aborted records under `read_committed`, compacted records), so the
/// committed offset can reach the high watermark (invariant 1). librdkafka (≥ 1.4)
/// advances the position past control records. One `rd_kafka_position` call, made
/// only when some partition is idle.
pub(crate) fn skip_undelivered(
    consumer: &BaseConsumer<PipelineContext>,
    partitions: &mut Partitions,
) {
    if !partitions.any_idle() {
        return;
    }
    let Ok(positions) = consumer.position() else {
        return;
    };
    for e in positions.elements() {
        if let Offset::Offset(position) = e.offset() {
            partitions.skip_to_position(e.topic(), e.partition(), position);
        }
    }
}

impl PipelineContext {
    /// With librdkafka's auto-commit: stores the current watermarks, so what it
    /// commits by itself on revoke and on close is never older than what tidemark
    /// commits explicitly then.
    pub(crate) fn store_watermarks(
        &self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
    ) {
        if !self.shared.auto_commit {
            return;
        }
        if let Some(tpl) = partitions.take_unstored() {
            if let Err(e) = consumer.store_offsets(&tpl) {
                tracing::debug!(error = %e, "storing offsets failed");
            }
        }
    }

    /// Sends an asynchronous commit whose result comes back through
    /// [`commit_callback`](ConsumerContext::commit_callback) on a later poll.
    ///
    /// rdkafka's `commit(.., CommitMode::Async)` cannot be used: with the event API
    /// that `BaseConsumer` uses, librdkafka turns only auto-commit results into
    /// OFFSET_COMMIT events, so a manual async commit's result would be lost. Asking
    /// for the reply on the main queue (`rd_kafka_commit_queue`), which `BaseConsumer`
    /// polls, brings it back as an OFFSET_COMMIT event.
    ///
    /// `None` commits the offsets stored with `store_offsets` (librdkafka auto-commit
    /// mode), like `rd_kafka_commit(rk, NULL, ..)`.
    pub(crate) fn commit_async(
        consumer: &BaseConsumer<PipelineContext>,
        tpl: Option<&TopicPartitionList>,
    ) -> KafkaResult<()> {
        // SAFETY: the client and list outlive the call; librdkafka copies the list and
        // takes its own reference on the queue before we release ours.
        let err = unsafe {
            let rk = consumer.client().native_ptr();
            let queue = rdsys::rd_kafka_queue_get_main(rk);
            let err = rdsys::rd_kafka_commit_queue(
                rk,
                tpl.map_or(std::ptr::null(), |t| t.ptr()),
                queue,
                None,
                std::ptr::null_mut(),
            );
            rdsys::rd_kafka_queue_destroy(queue);
            err
        };
        if err.is_error() {
            Err(KafkaError::ConsumerCommit(err.into()))
        } else {
            Ok(())
        }
    }

    /// Commits `tpl` synchronously to the pipeline's [`OffsetTarget`], records the
    /// result and reports it to the user. With a transaction, the caller has drained
    /// every record in flight; a failed transaction is aborted and every partition
    /// rewound to its last committed offset.
    pub(crate) fn commit_sync(
        &self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
        tpl: &TopicPartitionList,
    ) -> Result<(), CommitError> {
        let offsets = offsets_of(tpl);
        let kind = match self.shared.target {
            OffsetTarget::Group => "sync",
            OffsetTarget::Store(_) => "store",
            OffsetTarget::Transaction(_) => "transaction",
        };
        let _span = tracing::debug_span!("commit", kind, partitions = tpl.count()).entered();
        let sent = std::time::Instant::now();
        let result = match &self.shared.target {
            OffsetTarget::Group => consumer
                .commit(tpl, CommitMode::Sync)
                .map_err(CommitError::from),
            OffsetTarget::Store(store) => store
                .save(&offsets)
                .map_err(|e| CommitError::OffsetStore(Arc::new(e))),
            OffsetTarget::Transaction(sink) => match consumer.group_metadata() {
                Some(group) => sink
                    .commit_transaction(tpl, &group, TRANSACTION_TIMEOUT)
                    .map_err(CommitError::from),
                // Only a consumer that has not joined the group yet has none.
                None => Err(CommitError::Kafka(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::State,
                ))),
            },
        };
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
                latency: Some(sent.elapsed()),
            });
        }
        if let (OffsetTarget::Transaction(sink), Err(CommitError::Kafka(e))) =
            (&self.shared.target, &result)
        {
            self.abort_and_rewind(consumer, partitions, sink, e);
        }
        result
    }

    /// Exactly-once: aborts the open transaction and seeks every assigned partition
    /// back to the first offset its last committed transaction does not cover, under
    /// a new epoch, so those records are processed again into the next transaction.
    /// A transaction that cannot even be aborted (the producer is fenced or in a
    /// fatal state) stops the pipeline with [`Error::Transaction`].
    pub(crate) fn abort_and_rewind(
        &self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
        sink: &Sink,
        cause: &KafkaError,
    ) {
        tracing::warn!(error = %cause, "aborting the transaction; rewinding to the last committed offsets");
        if let Err(e) = sink.abort_transaction(TRANSACTION_TIMEOUT) {
            tracing::error!(error = %e, "transaction abort failed");
            partitions.fatal.get_or_insert(Error::Transaction(e));
            return;
        }
        Progress::add(&self.shared.progress.aborts, 1);
        let restarts: Vec<(Arc<str>, i32, Option<i64>, bool)> = partitions
            .iter()
            .map(|s| {
                let restart = s
                    .tracker
                    .first_unconfirmed()
                    .or_else(|| s.staged.first().map(|r| r.offset));
                (s.topic.clone(), s.partition, restart, s.paused)
            })
            .collect();
        partitions.discard_staged();
        let mut resume = TopicPartitionList::new();
        for (topic, partition, restart, paused) in restarts {
            let Some(offset) = restart else { continue };
            if let Err(e) = consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                TRANSACTION_TIMEOUT,
            ) {
                tracing::error!(error = %e, %topic, partition, offset, "seek after abort failed");
                partitions.fatal.get_or_insert(Error::Kafka {
                    context: "seeking back after an aborted transaction",
                    source: e,
                });
                return;
            }
            if paused {
                resume.add_partition(&topic, partition);
            }
            partitions.restart(&topic, partition);
            tracing::info!(%topic, partition, offset, "rewound after abort");
        }
        if resume.count() > 0 {
            if let Err(e) = consumer.resume(&resume) {
                tracing::warn!(error = %e, "resume after abort failed");
            }
        }
    }
}

/// Bound on each transactional call (commit, abort, send offsets) and seek.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

impl ConsumerContext for PipelineContext {
    /// rdkafka's default rebalance handling, plus explicit start offsets set on the
    /// list before it is assigned (see `start::set_start_offsets`).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if assign {
            super::start::set_start_offsets(consumer, self.shared.start_position, tpl);
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
        let transaction = match &self.shared.target {
            OffsetTarget::Transaction(sink) => Some(sink.clone()),
            _ => None,
        };
        // With a transaction, the open one holds outputs of every partition: all of
        // them drain before it is committed or aborted.
        let drain_filter = |t: &str, p: i32| transaction.is_some() || is_revoked(t, p);
        let lost = consumer.assignment_lost();
        let mut abort = None;
        if lost {
            // Another member may own them already: committing would overwrite its
            // progress (DESIGN.md invariant 6).
            tracing::warn!(
                partitions = revoked.len(),
                "assignment lost: dropping state without commit"
            );
            Progress::add(&self.shared.progress.lost, revoked.len() as u64);
            if transaction.is_some() {
                partitions.drain(self.shared.drain_timeout, drain_filter);
                abort = Some(KafkaError::Rebalance(RDKafkaErrorCode::AssignmentLost));
            }
        } else {
            let _span = tracing::info_span!("revoke", partitions = revoked.len()).entered();
            // Records staged but not dispatched are simply not processed here.
            for (t, p) in &revoked {
                if let Some(s) = partitions.get(t, *p) {
                    tracing::debug!(topic = %t, partition = p, in_flight = s.tracker.in_flight(), "revoking");
                }
            }
            let left = partitions.drain(self.shared.drain_timeout, drain_filter);
            if left > 0 {
                tracing::warn!(in_flight = left, "drain timeout on revoke: those records will be processed again by the next owner");
            }
            if transaction.is_some() && left > 0 {
                // Outputs of records still in flight may be in the transaction:
                // committing it would publish them without their offsets.
                abort = Some(KafkaError::Rebalance(RDKafkaErrorCode::OperationTimedOut));
            } else if !self.shared.commit_watermarks {
                // At-most-once: the offsets were committed before processing.
            } else {
                skip_undelivered(consumer, &mut partitions);
                self.store_watermarks(consumer, &mut partitions);
                if let Some(tpl) =
                    partitions.take_dirty(|t, p| transaction.is_some() || is_revoked(t, p))
                {
                    // With an eager protocol the group is already rebalancing, and a
                    // commit may be refused (REBALANCE_IN_PROGRESS): those records
                    // are then processed again by the next owner (at-least-once).
                    let _ = self.commit_sync(consumer, &mut partitions, &tpl);
                }
            }
            Progress::add(&self.shared.progress.revoked, revoked.len() as u64);
        }
        // librdkafka keeps a partition's pause flag and saved position across
        // assignments: resume what back-pressure paused, so a later assignment of the
        // same partition starts clean.
        let mut paused = TopicPartitionList::new();
        for (t, p) in &revoked {
            if partitions.get(t, *p).is_some_and(|s| s.paused) {
                paused.add_partition(t, *p);
            }
            partitions.remove(t, *p);
        }
        if paused.count() > 0 {
            if let Err(e) = consumer.resume(&paused) {
                tracing::warn!(error = %e, "resuming revoked partitions failed");
            }
        }
        if let (Some(sink), Some(cause)) = (transaction, abort) {
            self.abort_and_rewind(consumer, &mut partitions, &sink, &cause);
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
        // librdkafka's own auto-commits were not sent by tidemark: no latency then.
        let latency = partitions.commits_sent.pop_front().map(|t| t.elapsed());
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
            cb(&CommitEvent {
                offsets,
                result: result.map_err(CommitError::from),
                latency,
            });
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
