//! librdkafka's callbacks into the engine: logs, rebalances (assign / revoke /
//! lost) and commit results. Rebalance and commit callbacks run inside `poll`, on the
//! poll thread, and hand over to the driver's own operations
//! (`Engine::on_assign`, `Engine::on_revoke`, `Engine::record_commit`).

use std::sync::Arc;

use rdkafka::bindings as rdsys;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{IsError, KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::commit::CommitError;
use crate::engine::driver::Engine;
use crate::engine::intake::partitions::Committed;
use crate::engine::intake::start::start_offsets;
use crate::engine::seams::consumer::{offsets_of, CommitQueue, KafkaConsumer, OwnQueues};
use crate::engine::seams::record_queue::RecordQueue;
use crate::metrics::Counters;
use crate::topic_partition::TopicPartition;

/// The pipeline consumer's `ConsumerContext`.
pub(crate) struct PipelineContext {
    pub engine: Arc<Engine>,
    /// The consumer's client configuration, for a look-up of committed offsets by
    /// a client of its own when the member's fails (`start::start_offsets`).
    pub client_config: rdkafka::ClientConfig,
    /// Where the answers to async commits arrive, set once the consumer exists.
    pub commit_queue: std::sync::OnceLock<CommitQueue>,
    /// Where the records of the assigned partitions arrive, set once the consumer
    /// exists.
    pub record_queue: std::sync::OnceLock<RecordQueue>,
}

impl OwnQueues for PipelineContext {
    fn commit_queue(&self) -> Option<&CommitQueue> {
        self.commit_queue.get()
    }
    fn record_queue(&self) -> Option<&RecordQueue> {
        self.record_queue.get()
    }
}

impl ClientContext for PipelineContext {
    /// Forwards librdkafka's logs to `tracing` (target `librdkafka`) like rdkafka's
    /// default, and counts MAXPOLL reports (`max.poll.interval.ms` exceeded).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "MAXPOLL" {
            Counters::add(&self.engine.metrics.counters.max_poll_exceeded, 1);
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

    /// librdkafka's global errors, logged like rdkafka's default, except a partition's
    /// end of log (`enable.partition.eof`, always on), which is no error:
    /// librdkafka sometimes hands it to the main queue instead of the consumer's (seen
    /// around eager rebalances on the mock cluster).
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::trace!(target: "librdkafka", %reason, "end of partition (not assigned here)");
        } else {
            self.engine.refusals.saw(&error, reason);
            tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ConsumerContext for PipelineContext {
    /// rdkafka's default rebalance handling (eager or incremental (un)assign), with
    /// the driver's revoke before the unassign, explicit start offsets set on the
    /// list before the assign (`start::start_offsets`), the assigned partitions
    /// forwarded to the record queue before the assign (`seams::record_queue`:
    /// librdkafka cleared their forwarding when it last stopped fetching them), and
    /// the driver's assign after.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => true,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => false,
            _ => {
                tracing::error!(error = ?err, "rebalance error");
                // SAFETY: as below; rdkafka's default drops the assignment here.
                unsafe { rdsys::rd_kafka_assign(consumer.client().native_ptr(), std::ptr::null()) };
                return;
            }
        };
        let partitions = partitions_of(tpl);
        let mut maps = Vec::new();
        if assign {
            let with_maps = self.engine.state.lock().partitions.map_budget() > 0;
            let looked_up = start_offsets(
                consumer,
                &self.client_config,
                self.engine.start_position,
                &partitions,
                with_maps,
            );
            let known = looked_up.is_some();
            let starts = looked_up.unwrap_or_default();
            for start in &starts {
                let _ = tpl.set_partition_offset(&start.tp.topic, start.tp.partition, start.offset);
            }
            let mut starts: Vec<_> = starts
                .into_iter()
                .map(|s| (s.tp, (s.offset, s.map)))
                .collect();
            // A partition back after a lost assignment: what this member completed
            // under it is skipped (unless the committed offset moved back), and with
            // no committed offset known it starts where that assignment's first
            // record not covered by a commit was.
            let mut st = self.engine.state.lock();
            for tp in &partitions {
                let i = starts.iter().position(|(t, _)| t == tp);
                let committed = match i.map(|i| starts[i].1 .0) {
                    _ if !known => Committed::Unknown,
                    Some(rdkafka::Offset::Offset(o)) => Committed::Known(Some(o)),
                    _ => Committed::Known(None),
                };
                let Some((from, map)) =
                    st.partitions
                        .take_set_aside(&tp.topic, tp.partition, committed)
                else {
                    continue;
                };
                tracing::info!(%tp, offset = from, %map, "back after a lost assignment: skipping what this member completed before");
                let _ = tpl.set_partition_offset(
                    &tp.topic,
                    tp.partition,
                    rdkafka::Offset::Offset(from),
                );
                match i {
                    Some(i) => starts[i].1 = (rdkafka::Offset::Offset(from), Some(map)),
                    None => starts.push((tp.clone(), (rdkafka::Offset::Offset(from), Some(map)))),
                }
            }
            drop(st);
            maps.extend(
                starts
                    .into_iter()
                    .filter_map(|(tp, (_, map))| Some((tp, map?))),
            );
        } else {
            let mut st = self.engine.state.lock();
            self.engine.on_revoke(consumer, &mut st, &partitions);
        }
        if assign {
            consumer.forward_to_record_queue(&partitions);
        }
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
        if assign {
            let mut st = self.engine.state.lock();
            self.engine.on_assign(&mut st, &partitions, maps);
        }
    }

    /// The result of one of librdkafka's own auto-commits (tidemark's async
    /// commits are answered on the `CommitQueue` instead).
    fn commit_callback(&self, result: KafkaResult<()>, tpl: &TopicPartitionList) {
        let offsets = offsets_of(tpl);
        if offsets.is_empty() {
            return;
        }
        let mut st = self.engine.state.lock();
        self.engine
            .record_commit(&mut st, offsets, result.map_err(CommitError::from), None);
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
        // SAFETY: the caller hands an error object librdkafka returned, not freed yet.
        unsafe { rdsys::rd_kafka_error_destroy(error) };
        true
    }
}
