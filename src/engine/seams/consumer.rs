//! The seam between the engine and Kafka: every call the engine makes on its
//! consumer, as a trait. rdkafka's `BaseConsumer` implements it for real runs; the
//! engine's unit tests implement it with a scripted fake (`seams::fake`).
//!
//! It speaks in plain values (`PartitionOffset`, `(topic, partition)`), so the rest of
//! the engine never builds a `TopicPartitionList`.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{IsError, KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::commit::PartitionOffset;
use crate::engine::seams::record_queue::{QueuedMessage, RecordQueue};
use crate::engine::seams::sink::GroupMetadata;
use crate::engine::wake::Wake;
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

    /// A record taken from the record queue, borrowed from the consumer until dropped.
    type Record<'a>: Message
    where
        Self: 'a;

    /// The next record of the assigned partitions (or a partition's end of log or
    /// error) from the record queue (`seams::record_queue`), without waiting; `None`
    /// when it is empty. Records left there stay prefetched: not taking them is how
    /// back-pressure holds back without pausing.
    fn poll_record(&self) -> Option<KafkaResult<Self::Record<'_>>>;

    /// True when the record queue holds records not taken yet.
    fn records_queued(&self) -> bool;

    /// Forwards the partitions about to be assigned to the record queue; call it
    /// before every assign (librdkafka clears the forwarding when it stops fetching a
    /// partition).
    fn forward_to_record_queue(&self, partitions: &[TopicPartition]);

    /// OffsetCommit of `offsets` (the next offsets to read), waiting for the answer.
    fn commit_sync(&self, offsets: &[PartitionOffset]) -> KafkaResult<()>;

    /// OffsetCommit of `offsets` (`None`: the offsets stored with
    /// [`store_offsets`](Self::store_offsets)) without waiting; its answer comes
    /// back through [`commit_answer`](Self::commit_answer), in the order sent.
    fn commit_async(&self, offsets: Option<&[PartitionOffset]>) -> KafkaResult<()>;

    /// The answer to the oldest [`commit_async`](Self::commit_async) not answered
    /// yet — its result and the offsets it carried — waiting up to `timeout` for it;
    /// `None` when none came in time. librdkafka answers once it gave up retrying.
    fn commit_answer(&self, timeout: Duration) -> Option<(KafkaResult<()>, Vec<PartitionOffset>)>;

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

/// The metadata of `elem`, non-UTF-8 bytes replaced (rdkafka's
/// `TopicPartitionListElem::metadata` panics on them, and another client may have
/// written any bytes).
fn metadata_of(elem: &rdsys::rd_kafka_topic_partition_t) -> String {
    if elem.metadata.is_null() || elem.metadata_size == 0 {
        return String::new();
    }
    // SAFETY: librdkafka keeps the metadata pointer and size consistent.
    let bytes =
        unsafe { std::slice::from_raw_parts(elem.metadata as *const u8, elem.metadata_size) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// The elements of a live list.
///
/// # Safety
/// `list` points to a topic partition list that outlives the returned slice.
unsafe fn elements<'a>(
    list: *const rdsys::rd_kafka_topic_partition_list_t,
) -> &'a [rdsys::rd_kafka_topic_partition_t] {
    // SAFETY: the caller's list; librdkafka keeps `elems` valid for `cnt` entries.
    unsafe {
        let list = &*list;
        if list.cnt <= 0 || list.elems.is_null() {
            return &[];
        }
        std::slice::from_raw_parts(list.elems, list.cnt as usize)
    }
}

/// The metadata of entry `i` of `tpl` (see [`metadata_of`]).
fn metadata_at(tpl: &TopicPartitionList, i: usize) -> String {
    // SAFETY: the list is alive for the call.
    metadata_of(&unsafe { elements(tpl.ptr()) }[i])
}

/// The entries of `tpl` that carry an absolute offset.
pub(crate) fn offsets_of(tpl: &TopicPartitionList) -> Vec<PartitionOffset> {
    // SAFETY: the list is alive for the call.
    unsafe { offsets_in(tpl.ptr()) }
}

/// The entries of a list that carry an absolute offset (≥ 0; librdkafka's
/// logical offsets are negative).
///
/// # Safety
/// `list` points to a live topic partition list.
unsafe fn offsets_in(list: *const rdsys::rd_kafka_topic_partition_list_t) -> Vec<PartitionOffset> {
    // SAFETY: the caller's live list; each element's topic is a C string.
    unsafe { elements(list) }
        .iter()
        .filter(|e| e.offset >= 0)
        .map(|e| PartitionOffset {
            // SAFETY: as above.
            topic: unsafe { std::ffi::CStr::from_ptr(e.topic) }
                .to_string_lossy()
                .into_owned(),
            partition: e.partition,
            offset: e.offset,
            metadata: metadata_of(e),
        })
        .collect()
}

/// Where the answers to tidemark's async commits arrive: a queue of the consumer's
/// own (`rd_kafka_queue_new`), which the engine serves itself with
/// [`KafkaConsumer::commit_answer`] — after each round, and before it sends a
/// synchronous commit (revoke, stop), also inside the rebalance callback, where the
/// consumer's own queue cannot be polled. Its non-empty callback wakes the parked
/// poll thread, as the consumer queue's does.
pub(crate) struct CommitQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// Kept alive while librdkafka holds its address as the callback's opaque.
    _wake: Arc<Wake>,
}

// SAFETY: librdkafka's queues are thread-safe; the pointer is only handed to
// librdkafka's queue functions.
unsafe impl Send for CommitQueue {}
// SAFETY: as above.
unsafe impl Sync for CommitQueue {}

/// librdkafka's non-empty callback of the [`CommitQueue`].
unsafe extern "C" fn answer_arrived(_rk: *mut rdsys::rd_kafka_t, opaque: *mut std::ffi::c_void) {
    // SAFETY: `opaque` is the `Wake` the queue's `Arc` keeps alive until the
    // callback is disabled (`CommitQueue::drop`).
    unsafe { &*(opaque as *const Wake) }.notify();
}

impl CommitQueue {
    /// A new answer queue on `consumer`'s client; its arrivals notify `wake`.
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>, wake: Arc<Wake>) -> Self {
        // SAFETY: the client is alive; the opaque outlives the callback (see `drop`).
        unsafe {
            let queue = rdsys::rd_kafka_queue_new(consumer.client().native_ptr());
            rdsys::rd_kafka_queue_cb_event_enable(
                queue,
                Some(answer_arrived),
                Arc::as_ptr(&wake) as *mut std::ffi::c_void,
            );
            CommitQueue { queue, _wake: wake }
        }
    }

    /// The next OFFSET_COMMIT event, waiting up to `timeout`.
    fn next(&self, timeout: Duration) -> Option<(KafkaResult<()>, Vec<PartitionOffset>)> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the queue is alive; the event is destroyed after its list was
        // copied out (the list belongs to the event).
        unsafe {
            let event = rdsys::rd_kafka_queue_poll(self.queue, ms);
            if event.is_null() {
                return None;
            }
            let answer = (rdsys::rd_kafka_event_type(event) == rdsys::RD_KAFKA_EVENT_OFFSET_COMMIT)
                .then(|| {
                    let err = rdsys::rd_kafka_event_error(event);
                    let list = rdsys::rd_kafka_event_topic_partition_list(event);
                    let offsets = if list.is_null() {
                        Vec::new()
                    } else {
                        offsets_in(list)
                    };
                    let result = if err.is_error() {
                        Err(KafkaError::ConsumerCommit(err.into()))
                    } else {
                        Ok(())
                    };
                    (result, offsets)
                });
            rdsys::rd_kafka_event_destroy(event);
            answer
        }
    }
}

impl Drop for CommitQueue {
    fn drop(&mut self) {
        // SAFETY: the callback is disabled before the queue goes and `_wake` (a field,
        // dropped after this) with it.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// A consumer context that holds its client's own queues: the [`CommitQueue`] and
/// the [`RecordQueue`] (set once the client exists: `None` before).
pub(crate) trait OwnQueues {
    fn commit_queue(&self) -> Option<&CommitQueue>;
    fn record_queue(&self) -> Option<&RecordQueue>;
}

/// A client made for one look-up (`start::committed_by_own_client`) sends no
/// async commits and reads no records.
impl OwnQueues for rdkafka::consumer::DefaultConsumerContext {
    fn commit_queue(&self) -> Option<&CommitQueue> {
        None
    }
    fn record_queue(&self) -> Option<&RecordQueue> {
        None
    }
}

impl<C: ConsumerContext + OwnQueues> KafkaConsumer for BaseConsumer<C> {
    type Message<'a>
        = BorrowedMessage<'a>
    where
        Self: 'a;

    type Record<'a>
        = QueuedMessage<'a>
    where
        Self: 'a;

    fn poll_record(&self) -> Option<KafkaResult<QueuedMessage<'_>>> {
        self.context().record_queue()?.next()
    }

    fn records_queued(&self) -> bool {
        self.context().record_queue().is_some_and(|q| !q.is_empty())
    }

    fn forward_to_record_queue(&self, partitions: &[TopicPartition]) {
        if let Some(q) = self.context().record_queue() {
            q.forward(partitions.iter().map(|tp| (&*tp.topic, tp.partition)));
        }
    }

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
    /// for the reply on the [`CommitQueue`] (`rd_kafka_commit_queue`) brings it back
    /// as an OFFSET_COMMIT event there.
    fn commit_async(&self, offsets: Option<&[PartitionOffset]>) -> KafkaResult<()> {
        let Some(answers) = self.context().commit_queue() else {
            return Err(KafkaError::ConsumerCommit(
                rdkafka::error::RDKafkaErrorCode::State,
            ));
        };
        let tpl = offsets.map(to_list);
        // SAFETY: the client, list and queue outlive the call; librdkafka copies the
        // list and takes its own reference on the queue.
        let err = unsafe {
            rdsys::rd_kafka_commit_queue(
                self.client().native_ptr(),
                tpl.as_ref().map_or(std::ptr::null(), |t| t.ptr()),
                answers.queue,
                None,
                std::ptr::null_mut(),
            )
        };
        if err.is_error() {
            Err(KafkaError::ConsumerCommit(err.into()))
        } else {
            Ok(())
        }
    }

    fn commit_answer(&self, timeout: Duration) -> Option<(KafkaResult<()>, Vec<PartitionOffset>)> {
        self.context().commit_queue()?.next(timeout)
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
