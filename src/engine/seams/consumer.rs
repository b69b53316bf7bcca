//! The seam between the engine and Kafka: every call the engine makes on its
//! consumer, as a trait. rdkafka's `BaseConsumer` implements it for real runs; the
//! engine's unit tests implement it with a scripted fake (`seams::fake`).
//!
//! It speaks in plain values (`PartitionOffset`, `(topic, partition)`), so the rest of
//! the engine never builds a `TopicPartitionList`.

use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{IsError, KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::commit::PartitionOffset;
use crate::engine::seams::sink::GroupMetadata;
use crate::offset_store::OffsetAndMetadata;
use crate::topic_partition::TopicPartition;

/// The consumer calls of the engine. Methods that take a timeout block up to it;
/// the others return at once.
pub(crate) trait KafkaConsumer {
    /// A polled record, borrowed from the consumer until dropped.
    type Message<'a>: Message
    where
        Self: 'a;

    /// Waits up to `timeout` for the next record (or a consumer error). With the
    /// real consumer, rebalance and commit callbacks run inside this call.
    fn poll(&self, timeout: Duration) -> Option<KafkaResult<Self::Message<'_>>>;

    /// True when the queue `poll` reads holds nothing: the poll thread may then park
    /// until the queue's non-empty callback (or the engine) wakes it. A `poll` that
    /// served a rebalance or commit event returns `None` with records still queued.
    fn queue_is_empty(&self) -> bool;

    /// OffsetCommit of `offsets` (the next offsets to read), waiting for the answer.
    fn commit_sync(&self, offsets: &[PartitionOffset]) -> KafkaResult<()>;

    /// OffsetCommit of `offsets` (`None`: the offsets stored with
    /// [`store_offsets`](Self::store_offsets)) without waiting; its result comes
    /// back through the commit callback on a later poll.
    fn commit_async(&self, offsets: Option<&[PartitionOffset]>) -> KafkaResult<()>;

    /// Stores `offsets` for librdkafka's auto-commit (`rd_kafka_offsets_store`, which
    /// takes them as given: the next offsets to read).
    fn store_offsets(&self, offsets: &[PartitionOffset]) -> KafkaResult<()>;

    /// Moves the fetch position of one partition to `offset`; with a zero `timeout`
    /// the seek is started and not waited for.
    fn seek(&self, topic: &str, partition: i32, offset: i64, timeout: Duration) -> KafkaResult<()>;

    /// Stops fetching `partitions` (their prefetched records are discarded).
    fn pause(&self, partitions: &[TopicPartition]) -> KafkaResult<()>;

    /// Fetches `partitions` again from their positions.
    fn resume(&self, partitions: &[TopicPartition]) -> KafkaResult<()>;

    /// The fetch position of every assigned partition that has one: the offset after
    /// the last record returned by `poll`, moved past offsets it skipped (control
    /// records, aborted records under `read_committed`).
    fn positions(&self) -> KafkaResult<Vec<PartitionOffset>>;

    /// The group's committed offsets of `partitions` with their metadata
    /// (OffsetFetch): `None` where the group has none.
    fn committed_offsets(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> KafkaResult<Vec<(TopicPartition, Option<OffsetAndMetadata>)>>;

    /// The first offset at or after each timestamp (ms) of `partitions` (ListOffsets
    /// by time, KIP-79): `None` where no record is that recent.
    fn offsets_for_times(
        &self,
        partitions: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> KafkaResult<Vec<(TopicPartition, Option<i64>)>>;

    /// The consumer's group metadata for `send_offsets_to_transaction` (KIP-447);
    /// `None` before it has joined.
    fn group_metadata(&self) -> Option<GroupMetadata>;

    /// True while a revoke is in fact a lost assignment (session timeout, fenced).
    fn assignment_lost(&self) -> bool;
}

/// A `TopicPartitionList` of absolute offsets with their metadata (librdkafka
/// sends it in OffsetCommit and TxnOffsetCommit, and stores it with
/// `rd_kafka_offsets_store` for its auto-commit: librdkafka PR #4171).
pub(crate) fn to_list(offsets: &[PartitionOffset]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for po in offsets {
        let mut e = tpl.add_partition(&po.topic, po.partition);
        e.set_offset(Offset::Offset(po.offset))
            .expect("an absolute offset is valid");
        if !po.metadata.is_empty() {
            e.set_metadata(&po.metadata);
        }
    }
    tpl
}

fn partition_list(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}

/// Every entry of `tpl`, its offset `None` unless absolute.
fn entries_of(tpl: &TopicPartitionList) -> Vec<(TopicPartition, Option<i64>)> {
    tpl.elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (TopicPartition::new(e.topic(), e.partition()), offset)
        })
        .collect()
}

/// The metadata of entry `i` of `tpl`, non-UTF-8 bytes replaced (rdkafka's
/// `TopicPartitionListElem::metadata` panics on them, and another client may have
/// written any bytes).
fn metadata_at(tpl: &TopicPartitionList, i: usize) -> String {
    // SAFETY: `i` indexes the list's `cnt` elements, whose metadata pointer and size
    // librdkafka keeps consistent (null with size 0 when there is none).
    unsafe {
        let list = &*tpl.ptr();
        debug_assert!(i < list.cnt as usize);
        let elem = &*list.elems.add(i);
        if elem.metadata.is_null() || elem.metadata_size == 0 {
            return String::new();
        }
        let bytes = std::slice::from_raw_parts(elem.metadata as *const u8, elem.metadata_size);
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// The entries of `tpl` that carry an absolute offset.
pub(crate) fn offsets_of(tpl: &TopicPartitionList) -> Vec<PartitionOffset> {
    tpl.elements()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e.offset() {
            Offset::Offset(offset) => Some(PartitionOffset {
                topic: e.topic().to_string(),
                partition: e.partition(),
                offset,
                metadata: metadata_at(tpl, i),
            }),
            _ => None,
        })
        .collect()
}

impl<C: ConsumerContext> KafkaConsumer for BaseConsumer<C> {
    type Message<'a>
        = BorrowedMessage<'a>
    where
        Self: 'a;

    fn poll(&self, timeout: Duration) -> Option<KafkaResult<BorrowedMessage<'_>>> {
        BaseConsumer::poll(self, timeout)
    }

    /// The length of the queue `BaseConsumer::poll` reads: the consumer queue of a
    /// group member (librdkafka's main queue is forwarded to it), the main queue of
    /// a consumer without `group.id` (rdkafka 0.39, `BaseConsumer::new`). The handle
    /// is taken and released within the call, so none outlives the consumer.
    fn queue_is_empty(&self) -> bool {
        let rk = self.client().native_ptr();
        // SAFETY: `rk` is this live consumer's handle; each queue handle taken is
        // destroyed before returning.
        unsafe {
            let mut queue = rdsys::rd_kafka_queue_get_consumer(rk);
            if queue.is_null() {
                queue = rdsys::rd_kafka_queue_get_main(rk);
            }
            if queue.is_null() {
                return true;
            }
            let length = rdsys::rd_kafka_queue_length(queue);
            rdsys::rd_kafka_queue_destroy(queue);
            length == 0
        }
    }

    fn commit_sync(&self, offsets: &[PartitionOffset]) -> KafkaResult<()> {
        self.commit(&to_list(offsets), CommitMode::Sync)
    }

    /// rdkafka's `commit(.., CommitMode::Async)` cannot be used: with the event API
    /// that `BaseConsumer` uses, librdkafka turns only auto-commit results into
    /// OFFSET_COMMIT events, so a manual async commit's result would be lost. Asking
    /// for the reply on the main queue (`rd_kafka_commit_queue`), which `BaseConsumer`
    /// polls, brings it back as an OFFSET_COMMIT event (the commit callback).
    fn commit_async(&self, offsets: Option<&[PartitionOffset]>) -> KafkaResult<()> {
        let tpl = offsets.map(to_list);
        // SAFETY: the client and list outlive the call; librdkafka copies the list and
        // takes its own reference on the queue before we release ours.
        let err = unsafe {
            let rk = self.client().native_ptr();
            let queue = rdsys::rd_kafka_queue_get_main(rk);
            let err = rdsys::rd_kafka_commit_queue(
                rk,
                tpl.as_ref().map_or(std::ptr::null(), |t| t.ptr()),
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

    fn store_offsets(&self, offsets: &[PartitionOffset]) -> KafkaResult<()> {
        Consumer::store_offsets(self, &to_list(offsets))
    }

    fn seek(&self, topic: &str, partition: i32, offset: i64, timeout: Duration) -> KafkaResult<()> {
        Consumer::seek(self, topic, partition, Offset::Offset(offset), timeout)
    }

    fn pause(&self, partitions: &[TopicPartition]) -> KafkaResult<()> {
        Consumer::pause(self, &partition_list(partitions))
    }

    fn resume(&self, partitions: &[TopicPartition]) -> KafkaResult<()> {
        Consumer::resume(self, &partition_list(partitions))
    }

    fn positions(&self) -> KafkaResult<Vec<PartitionOffset>> {
        Consumer::position(self).map(|tpl| offsets_of(&tpl))
    }

    fn committed_offsets(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> KafkaResult<Vec<(TopicPartition, Option<OffsetAndMetadata>)>> {
        let got = Consumer::committed_offsets(self, partition_list(partitions), timeout)?;
        Ok(got
            .elements()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let committed = match e.offset() {
                    Offset::Offset(offset) => Some(OffsetAndMetadata {
                        offset,
                        metadata: metadata_at(&got, i),
                    }),
                    _ => None,
                };
                (TopicPartition::new(e.topic(), e.partition()), committed)
            })
            .collect())
    }

    fn offsets_for_times(
        &self,
        partitions: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> KafkaResult<Vec<(TopicPartition, Option<i64>)>> {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for (tp, ts) in partitions {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*ts))?;
        }
        let found = Consumer::offsets_for_times(self, tpl, timeout)?;
        Ok(entries_of(&found))
    }

    fn group_metadata(&self) -> Option<GroupMetadata> {
        Consumer::group_metadata(self).map(GroupMetadata::Kafka)
    }

    fn assignment_lost(&self) -> bool {
        Consumer::assignment_lost(self)
    }
}
