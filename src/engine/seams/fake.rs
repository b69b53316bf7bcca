//! A scripted consumer for the engine's unit tests: records to poll, commit results
//! to give, and a log of every call the engine made.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{OwnedMessage, Timestamp};

use crate::commit::PartitionOffset;
use crate::engine::seams::consumer::KafkaConsumer;
use crate::engine::seams::sink::GroupMetadata;
use crate::offset_store::OffsetAndMetadata;
use crate::topic_partition::TopicPartition;

/// What the engine asked of the consumer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    CommitSync(Vec<PartitionOffset>),
    CommitAsync(Option<Vec<PartitionOffset>>),
    /// The engine took the answer to the oldest async commit.
    Answered,
    Store(Vec<PartitionOffset>),
    Seek(String, i32, i64),
    Pause(Vec<TopicPartition>),
    Resume(Vec<TopicPartition>),
}

#[derive(Default)]
struct Script {
    /// Records to return from `poll`, per partition in offset order.
    queued: BTreeMap<TopicPartition, VecDeque<OwnedMessage>>,
    paused: BTreeSet<TopicPartition>,
    /// Next offset after the last record polled, per partition.
    positions: BTreeMap<TopicPartition, i64>,
    committed: BTreeMap<TopicPartition, OffsetAndMetadata>,
    /// Commits (sync or async) that fail before one succeeds again.
    failing_commits: usize,
    /// Async commits sent and not answered yet, oldest first.
    unanswered: VecDeque<Vec<PartitionOffset>>,
    /// Answers given by the test, not taken by the engine yet.
    answers: VecDeque<(KafkaResult<()>, Vec<PartitionOffset>)>,
    lost: bool,
    /// Report the end of a partition's queue once it is empty (librdkafka's
    /// `enable.partition.eof`); the partitions whose end was reported.
    eof: bool,
    at_end: BTreeSet<TopicPartition>,
    calls: Vec<Call>,
}

/// See the module documentation. Single-threaded, like the poll thread.
#[derive(Default)]
pub(crate) struct FakeConsumer {
    script: RefCell<Script>,
}

fn key(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

impl FakeConsumer {
    /// Queues records at `offsets` of `topic`/`partition`, payload `p{offset}`.
    pub(crate) fn queue(
        &self,
        topic: &str,
        partition: i32,
        offsets: impl IntoIterator<Item = i64>,
    ) {
        let mut s = self.script.borrow_mut();
        s.at_end.remove(&key(topic, partition));
        let q = s.queued.entry(key(topic, partition)).or_default();
        for offset in offsets {
            q.push_back(OwnedMessage::new(
                Some(format!("p{offset}").into_bytes()),
                None,
                topic.to_string(),
                Timestamp::NotAvailable,
                partition,
                offset,
                None,
            ));
        }
    }

    /// Reports a partition's end (`KafkaError::PartitionEOF`) once each time its
    /// queue empties, as librdkafka does with `enable.partition.eof`.
    pub(crate) fn report_eof(&self) {
        self.script.borrow_mut().eof = true;
    }

    /// The next `n` commits fail (sync: an error; async: refused when sent).
    pub(crate) fn fail_commits(&self, n: usize) {
        self.script.borrow_mut().failing_commits = n;
    }

    /// Answers the oldest unanswered async commit: accepted (`ok`, the group then
    /// holds its offsets) or refused. The engine takes the answer on its next turn,
    /// or while it waits before a synchronous commit.
    pub(crate) fn answer_commit(&self, ok: bool) {
        let mut s = self.script.borrow_mut();
        let offsets = s.unanswered.pop_front().expect("an async commit to answer");
        let result = if ok {
            s.hold(&offsets);
            Ok(())
        } else {
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::RequestTimedOut,
            ))
        };
        s.answers.push_back((result, offsets));
    }

    /// Makes the next revoke a lost assignment.
    pub(crate) fn lose_assignment(&self) {
        self.script.borrow_mut().lost = true;
    }

    /// The next revokes are orderly again (after [`lose_assignment`](Self::lose_assignment)).
    pub(crate) fn keep_assignment(&self) {
        self.script.borrow_mut().lost = false;
    }

    /// Moves the position of a partition, as librdkafka does past control records.
    pub(crate) fn set_position(&self, topic: &str, partition: i32, offset: i64) {
        self.script
            .borrow_mut()
            .positions
            .insert(key(topic, partition), offset);
    }

    /// Every call so far, in order.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.script.borrow().calls.clone()
    }

    /// The offsets the group holds, as successful commits left them.
    pub(crate) fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.committed_with_metadata(topic, partition)
            .map(|c| c.offset)
    }

    /// The offset the group holds with its metadata.
    pub(crate) fn committed_with_metadata(
        &self,
        topic: &str,
        partition: i32,
    ) -> Option<OffsetAndMetadata> {
        self.script
            .borrow()
            .committed
            .get(&key(topic, partition))
            .cloned()
    }

    /// The records of `topic`/`partition` queued and not polled yet.
    pub(crate) fn queued_len(&self, topic: &str, partition: i32) -> usize {
        self.script
            .borrow()
            .queued
            .get(&key(topic, partition))
            .map_or(0, |q| q.len())
    }

    /// True while `topic`/`partition` is paused.
    pub(crate) fn is_paused(&self, topic: &str, partition: i32) -> bool {
        self.script.borrow().paused.contains(&key(topic, partition))
    }

    fn commit(&self, offsets: &[PartitionOffset]) -> KafkaResult<()> {
        let mut s = self.script.borrow_mut();
        if s.failing_commits > 0 {
            s.failing_commits -= 1;
            return Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::RequestTimedOut,
            ));
        }
        s.hold(offsets);
        Ok(())
    }
}

impl Script {
    /// The group now holds `offsets` (a commit accepted).
    fn hold(&mut self, offsets: &[PartitionOffset]) {
        for po in offsets {
            self.committed.insert(
                key(&po.topic, po.partition),
                OffsetAndMetadata {
                    offset: po.offset,
                    metadata: po.metadata.clone(),
                },
            );
        }
    }
}

impl KafkaConsumer for FakeConsumer {
    type Message<'a> = OwnedMessage;

    /// The fake's consumer queue brings no events: records and ends of log come
    /// through the record queue, as for a forwarded partition.
    fn poll(&self, _timeout: Duration) -> Option<KafkaResult<OwnedMessage>> {
        None
    }

    type Record<'a> = OwnedMessage;

    fn poll_record(&self) -> Option<KafkaResult<OwnedMessage>> {
        let mut s = self.script.borrow_mut();
        let paused = s.paused.clone();
        if s.eof {
            let ended = s
                .queued
                .iter()
                .find(|(k, q)| q.is_empty() && !paused.contains(*k) && !s.at_end.contains(*k))
                .map(|(k, _)| k.clone());
            if let Some(k) = ended {
                s.at_end.insert(k.clone());
                return Some(Err(KafkaError::PartitionEOF(k.partition)));
            }
        }
        let (k, q) = s
            .queued
            .iter_mut()
            .find(|(k, q)| !q.is_empty() && !paused.contains(*k))?;
        let k = k.clone();
        let msg = q.pop_front()?;
        s.positions.insert(k, rdkafka::Message::offset(&msg) + 1);
        Some(Ok(msg))
    }

    fn records_queued(&self) -> bool {
        let s = self.script.borrow();
        s.queued
            .iter()
            .any(|(k, q)| !q.is_empty() && !s.paused.contains(k))
    }

    fn forward_to_record_queue(&self, _partitions: &[TopicPartition]) {}

    /// Never empty: the fake's `poll` does not wait, so the driver never parks.
    fn queue_is_empty(&self) -> bool {
        false
    }

    fn commit_sync(&self, offsets: &[PartitionOffset]) -> KafkaResult<()> {
        self.script
            .borrow_mut()
            .calls
            .push(Call::CommitSync(offsets.to_vec()));
        self.commit(offsets)
    }

    /// Sent, answered when the test says ([`answer_commit`](FakeConsumer::answer_commit))
    /// — or, when the engine waits for the answer (a `timeout` above zero), accepted
    /// then, as librdkafka would answer within the wait.
    fn commit_async(&self, offsets: Option<&[PartitionOffset]>) -> KafkaResult<()> {
        let mut s = self.script.borrow_mut();
        s.calls.push(Call::CommitAsync(offsets.map(<[_]>::to_vec)));
        if s.failing_commits > 0 {
            s.failing_commits -= 1;
            return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::State));
        }
        s.unanswered
            .push_back(offsets.map(<[_]>::to_vec).unwrap_or_default());
        Ok(())
    }

    fn commit_answer(&self, timeout: Duration) -> Option<(KafkaResult<()>, Vec<PartitionOffset>)> {
        let waiting = self.script.borrow().answers.is_empty() && !timeout.is_zero();
        if waiting && !self.script.borrow().unanswered.is_empty() {
            self.answer_commit(true);
        }
        let mut s = self.script.borrow_mut();
        let answer = s.answers.pop_front()?;
        s.calls.push(Call::Answered);
        Some(answer)
    }

    fn store_offsets(&self, offsets: &[PartitionOffset]) -> KafkaResult<()> {
        self.script
            .borrow_mut()
            .calls
            .push(Call::Store(offsets.to_vec()));
        Ok(())
    }

    fn seek(&self, topic: &str, partition: i32, offset: i64, _: Duration) -> KafkaResult<()> {
        let mut s = self.script.borrow_mut();
        s.calls
            .push(Call::Seek(topic.to_string(), partition, offset));
        s.positions.insert(key(topic, partition), offset);
        Ok(())
    }

    fn pause(&self, partitions: &[TopicPartition]) -> KafkaResult<()> {
        let mut s = self.script.borrow_mut();
        let list: Vec<_> = partitions.to_vec();
        s.paused.extend(list.iter().cloned());
        s.calls.push(Call::Pause(list));
        Ok(())
    }

    fn resume(&self, partitions: &[TopicPartition]) -> KafkaResult<()> {
        let mut s = self.script.borrow_mut();
        let list: Vec<_> = partitions.to_vec();
        for k in &list {
            s.paused.remove(k);
        }
        s.calls.push(Call::Resume(list));
        Ok(())
    }

    fn positions(&self) -> KafkaResult<Vec<PartitionOffset>> {
        Ok(self
            .script
            .borrow()
            .positions
            .iter()
            .map(|(tp, offset)| PartitionOffset::new(&*tp.topic, tp.partition, *offset))
            .collect())
    }

    fn committed_offsets(
        &self,
        partitions: &[TopicPartition],
        _: Duration,
    ) -> KafkaResult<Vec<(TopicPartition, Option<OffsetAndMetadata>)>> {
        let s = self.script.borrow();
        Ok(partitions
            .iter()
            .map(|tp| (tp.clone(), s.committed.get(tp).cloned()))
            .collect())
    }

    fn offsets_for_times(
        &self,
        partitions: &[(TopicPartition, i64)],
        _: Duration,
    ) -> KafkaResult<Vec<(TopicPartition, Option<i64>)>> {
        Ok(partitions
            .iter()
            .map(|(tp, _)| (tp.clone(), None))
            .collect())
    }

    fn group_metadata(&self) -> Option<GroupMetadata> {
        Some(GroupMetadata::Fake)
    }

    fn assignment_lost(&self) -> bool {
        std::mem::take(&mut self.script.borrow_mut().lost)
    }
}

/// A record the fake producer took: its topic, key, payload and headers (name,
/// UTF-8 value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Produced {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Produced {
    /// The value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake producer holds: records outside transactions and in committed
/// ones (`visible`: what a `read_committed` reader sees), the open transaction's,
/// the aborted ones', and the offsets each committed transaction carried.
#[derive(Debug, Default)]
pub(crate) struct ProducerLog {
    pub visible: Vec<Produced>,
    pub open: Vec<Produced>,
    pub aborted: Vec<Produced>,
    pub committed_offsets: Vec<Vec<PartitionOffset>>,
    transactional: bool,
    pending_offsets: Vec<PartitionOffset>,
    failing_commits: usize,
    hang_sending_offsets: bool,
}

/// A producer for the engine's unit tests: takes every record and acknowledges it
/// at once; with transactions, keeps records apart until the transaction commits
/// (or drops them when it aborts). Clones share the log.
#[derive(Clone, Default)]
pub(crate) struct FakeProducer(std::sync::Arc<parking_lot::Mutex<ProducerLog>>);

impl FakeProducer {
    /// The next `n` transaction commits fail (as a coordinator timeout would).
    pub(crate) fn fail_commits(&self, n: usize) {
        self.0.lock().failing_commits = n;
    }

    /// Every later `send_offsets_to_transaction` blocks for good (librdkafka #5511:
    /// the group coordinator's broker decommissioned).
    pub(crate) fn hang_sending_offsets(&self) {
        self.0.lock().hang_sending_offsets = true;
    }

    /// The log so far.
    pub(crate) fn log(&self) -> parking_lot::MutexGuard<'_, ProducerLog> {
        self.0.lock()
    }
}

impl crate::engine::seams::sink::KafkaProducer for FakeProducer {
    fn send(
        &self,
        record: &crate::engine::seams::sink::Produce<'_>,
        ack: crate::engine::completion::progress::Ack,
    ) -> Result<(), crate::engine::seams::sink::Refused> {
        let headers = record
            .headers
            .iter()
            .map(|(key, value)| {
                let value = value.map(String::from_utf8_lossy).unwrap_or_default();
                (key.to_string(), value.into_owned())
            })
            .collect();
        let produced = Produced {
            topic: record.topic.to_string(),
            key: record.key.map(<[u8]>::to_vec),
            payload: record.payload.map(<[u8]>::to_vec),
            headers,
        };
        let mut log = self.0.lock();
        if log.transactional {
            log.open.push(produced);
        } else {
            log.visible.push(produced);
        }
        drop(log);
        ack.resolve(Ok(()));
        Ok(())
    }

    fn init_transactions(&self, _: Duration) -> KafkaResult<()> {
        self.0.lock().transactional = true;
        Ok(())
    }

    fn begin_transaction(&self) -> KafkaResult<()> {
        Ok(())
    }

    fn send_offsets_to_transaction(
        &self,
        offsets: &[PartitionOffset],
        _: &GroupMetadata,
        _: Duration,
    ) -> KafkaResult<()> {
        if self.0.lock().hang_sending_offsets {
            loop {
                std::thread::park();
            }
        }
        self.0.lock().pending_offsets = offsets.to_vec();
        Ok(())
    }

    fn commit_transaction(&self, _: Duration) -> KafkaResult<()> {
        let mut log = self.0.lock();
        if log.failing_commits > 0 {
            log.failing_commits -= 1;
            return Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::RequestTimedOut,
            ));
        }
        let open = std::mem::take(&mut log.open);
        log.visible.extend(open);
        let offsets = std::mem::take(&mut log.pending_offsets);
        log.committed_offsets.push(offsets);
        Ok(())
    }

    fn abort_transaction(&self, _: Duration) -> KafkaResult<()> {
        let mut log = self.0.lock();
        let open = std::mem::take(&mut log.open);
        log.aborted.extend(open);
        log.pending_offsets.clear();
        Ok(())
    }

    fn fatal_error(&self) -> Option<KafkaError> {
        None
    }

    fn flush(&self, _: Duration) -> KafkaResult<()> {
        Ok(())
    }
}
