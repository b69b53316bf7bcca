//! The poll thread's offset state: one entry per assigned partition, with its epoch,
//! its watermark tracker, the records polled but not yet dispatched, and the
//! in-flight accounting that back-pressure reads.
//!
//! Only the poll thread touches it — from the poll loop and from librdkafka's
//! rebalance and commit callbacks, which run inside `poll` on the same thread. The
//! mutex around it (see [`Shared`](super::context::Shared)) is therefore never
//! contended; it exists because `ConsumerContext` must be `Sync`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tidemark_offsets::{Completion, DeliverError, Epoch, PartitionTracker};

use super::worker::{Batch, BatchDone, Failure};
use crate::commit::PartitionOffset;
use crate::record::{Header, Record};
use crate::shutdown::Progress;

/// One assigned partition.
pub(crate) struct PartitionState {
    pub topic: Arc<str>,
    pub partition: i32,
    pub tracker: PartitionTracker,
    /// Records polled since the last dispatch (not yet delivered to the tracker).
    pub staged: Vec<Record>,
    staged_bytes: usize,
    /// Delivered records that failed: they hold the watermark but will never
    /// complete, so draining does not wait for them.
    failed: usize,
    /// Whether librdkafka has this partition paused.
    pub paused: bool,
    /// Over its per-partition bound (cleared below half of it).
    pub held: bool,
    /// librdkafka auto-commit: the offset last stored with `store_offsets`.
    pub stored: Option<i64>,
}

impl PartitionState {
    /// Records dispatched whose outcome is still unknown.
    fn pending(&self) -> usize {
        self.tracker.in_flight().saturating_sub(self.failed)
    }

    /// Records polled and not yet covered by a confirmed commit.
    pub fn uncommitted(&self) -> usize {
        self.tracker.uncommitted() + self.staged.len()
    }
}

/// A record that failed, with its coordinates.
#[derive(Debug, Clone)]
pub(crate) struct RecordFailure {
    pub topic: String,
    pub partition: i32,
    pub failure: Failure,
}

/// Every assigned partition, and what the poll thread learned from completions.
pub(crate) struct Partitions {
    by_topic: HashMap<Arc<str>, HashMap<i32, PartitionState>>,
    last_epoch: Epoch,
    completions: Receiver<BatchDone>,
    pub progress: Arc<Progress>,
    /// Σ `uncommitted()` over the partitions, kept incrementally.
    records_in_flight: usize,
    /// Key + payload bytes staged or dispatched and not yet done (including batches of
    /// partitions revoked since: their memory is held until the worker finishes).
    bytes_in_flight: usize,
    /// Back-pressure has paused every partition.
    pub paused_all: bool,
    /// When each async commit whose result has not arrived was sent, oldest first
    /// (librdkafka answers commits in order).
    pub commits_sent: std::collections::VecDeque<Instant>,
    /// When a commit last failed (commits on back-pressure wait a little after it
    /// instead of retrying at once).
    pub last_commit_failure: Option<Instant>,
    /// Completion messages applied so far (one per dispatched batch).
    pub batches_done: u64,
    /// At-most-once: offsets are committed before processing, so a record is
    /// released from the in-flight count as soon as it completes.
    pub release_on_complete: bool,
    /// The first record that failed (the pipeline stops on it).
    pub failure: Option<RecordFailure>,
    /// A consumer error that stops the pipeline (not tied to a record).
    pub fatal: Option<crate::error::Error>,
    /// Last offset the coordinator accepted, per partition, across assignments.
    pub committed: BTreeMap<(String, i32), i64>,
    /// When a partition was last assigned (the idle clock starts no earlier).
    pub last_assigned: Option<Instant>,
    /// When the last record completed.
    pub last_completion: Option<Instant>,
}

impl Partitions {
    pub(crate) fn new(completions: Receiver<BatchDone>, progress: Arc<Progress>) -> Self {
        Partitions {
            by_topic: HashMap::new(),
            last_epoch: Epoch(0),
            completions,
            progress,
            records_in_flight: 0,
            bytes_in_flight: 0,
            paused_all: false,
            commits_sent: std::collections::VecDeque::new(),
            last_commit_failure: None,
            batches_done: 0,
            release_on_complete: false,
            failure: None,
            fatal: None,
            committed: BTreeMap::new(),
            last_assigned: None,
            last_completion: None,
        }
    }

    /// Starts tracking `topic`/`partition` under a fresh epoch (replacing any state of
    /// an earlier assignment, whose late completions are then ignored).
    pub(crate) fn assign(&mut self, topic: &str, partition: i32) -> Epoch {
        self.last_assigned = Some(Instant::now());
        Progress::add(&self.progress.assigned, 1);
        self.restart(topic, partition)
    }

    /// Replaces the state of `topic`/`partition` with a fresh one under a new epoch:
    /// after a seek back (an aborted transaction), its records are delivered again and
    /// late completions of the old epoch are ignored.
    pub(crate) fn restart(&mut self, topic: &str, partition: i32) -> Epoch {
        self.remove(topic, partition);
        self.last_epoch = self.last_epoch.next();
        let epoch = self.last_epoch;
        let topic: Arc<str> = match self.by_topic.get_key_value(topic) {
            Some((t, _)) => t.clone(),
            None => Arc::from(topic),
        };
        self.by_topic.entry(topic.clone()).or_default().insert(
            partition,
            PartitionState {
                topic,
                partition,
                tracker: PartitionTracker::new(epoch),
                staged: Vec::new(),
                staged_bytes: 0,
                failed: 0,
                paused: false,
                held: false,
                stored: None,
            },
        );
        epoch
    }

    /// Stops tracking `topic`/`partition`; records staged for it are dropped (they
    /// were never processed, and are not committed, so the next owner reads them).
    pub(crate) fn remove(&mut self, topic: &str, partition: i32) -> Option<PartitionState> {
        let parts = self.by_topic.get_mut(topic)?;
        let state = parts.remove(&partition)?;
        if parts.is_empty() {
            self.by_topic.remove(topic);
        }
        self.records_in_flight -= state.uncommitted();
        self.bytes_in_flight -= state.staged_bytes;
        Some(state)
    }

    pub(crate) fn get(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.by_topic.get(topic)?.get(&partition)
    }

    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionState> {
        self.by_topic.get_mut(topic)?.get_mut(&partition)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &PartitionState> {
        self.by_topic.values().flat_map(|p| p.values())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut PartitionState> {
        self.by_topic.values_mut().flat_map(|p| p.values_mut())
    }

    /// Records polled and not yet covered by a confirmed commit, all partitions.
    pub(crate) fn records_in_flight(&self) -> usize {
        debug_assert_eq!(
            self.records_in_flight,
            self.iter().map(PartitionState::uncommitted).sum::<usize>()
        );
        self.records_in_flight
    }

    /// Key + payload bytes polled and not yet processed.
    pub(crate) fn bytes_in_flight(&self) -> usize {
        self.bytes_in_flight
    }

    /// Copies a polled message into the staging buffer of its partition. A message
    /// of a partition that is not assigned (any more) is dropped. Returns the
    /// partition's uncommitted records when it was staged.
    pub(crate) fn stage(&mut self, msg: &BorrowedMessage<'_>) -> Option<usize> {
        let state = self.get_mut(msg.topic(), msg.partition())?;
        let record = Record {
            topic: state.topic.clone(),
            partition: state.partition,
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers: msg.headers().map_or_else(Vec::new, |hs| {
                hs.iter()
                    .map(|h| Header {
                        key: h.key.to_string(),
                        value: h.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            }),
        };
        let size = record.size_bytes();
        state.staged.push(record);
        state.staged_bytes += size;
        let uncommitted = state.uncommitted();
        self.records_in_flight += 1;
        self.bytes_in_flight += size;
        Some(uncommitted)
    }

    /// Delivers every staged record to its tracker and returns them as batches, one per
    /// partition, ready for the pool.
    ///
    /// An offset at or below one already delivered means the fetch position moved
    /// back (a seek, an offset reset, a re-fetch after pause/resume): the tracker
    /// forgets what it had delivered from there on and takes it again, without ever
    /// moving the committable offset back (DESIGN.md invariant 7).
    pub(crate) fn take_batches(&mut self, generation: u64) -> Vec<Batch> {
        let mut batches = Vec::new();
        let mut forgotten = 0;
        for state in self.iter_mut() {
            if state.staged.is_empty() {
                continue;
            }
            let records = std::mem::take(&mut state.staged);
            let bytes = std::mem::take(&mut state.staged_bytes);
            for r in &records {
                if let Err(DeliverError::NotIncreasing { offset, highest }) =
                    state.tracker.deliver(r.offset)
                {
                    tracing::debug!(
                        topic = %state.topic, partition = state.partition, offset, highest,
                        "fetch position moved back: rewinding the tracker"
                    );
                    forgotten += state.tracker.rewind(offset);
                    state
                        .tracker
                        .deliver(offset)
                        .expect("a rewound tracker accepts its new position");
                }
            }
            batches.push(Batch {
                topic: state.topic.clone(),
                partition: state.partition,
                epoch: state.tracker.epoch(),
                bytes,
                records,
                generation,
            });
        }
        self.records_in_flight -= forgotten;
        batches
    }

    /// Applies one completion message to its tracker and returns the number of
    /// records it completed; a message of an earlier assignment (stale epoch) or of a
    /// partition no longer assigned changes nothing but the byte count (its records'
    /// memory is free now either way).
    pub(crate) fn apply(&mut self, done: BatchDone) -> u64 {
        self.bytes_in_flight -= done.bytes;
        self.batches_done += 1;
        let release_on_complete = self.release_on_complete;
        let Some(state) = self.get_mut(&done.topic, done.partition) else {
            tracing::debug!(topic = %done.topic, partition = done.partition, "completion for an unassigned partition dropped");
            return 0;
        };
        if done.epoch != state.tracker.epoch() {
            tracing::debug!(topic = %done.topic, partition = done.partition, epoch = done.epoch.0, "stale completion dropped");
            return 0;
        }
        let mut completed = 0u64;
        for offset in &done.completed {
            if state.tracker.complete(done.epoch, *offset) == Completion::Completed {
                completed += 1;
            }
        }
        state.failed += done.failed.len();
        let released = match state.tracker.last_committed() {
            Some(c) if release_on_complete => state.tracker.confirm_committed(c),
            _ => 0,
        };
        self.records_in_flight -= released;
        if completed > 0 {
            self.last_completion = Some(Instant::now());
        }
        Progress::add(&self.progress.completed, completed);
        if let Some(failure) = done.failure {
            if self.failure.is_none() {
                self.failure = Some(RecordFailure {
                    topic: done.topic.to_string(),
                    partition: done.partition,
                    failure,
                });
            }
        }
        completed
    }

    /// Applies every completion already waiting, without blocking.
    pub(crate) fn apply_ready(&mut self) {
        while let Some(done) = self.next_ready() {
            self.apply(done);
        }
    }

    /// The next completion already waiting, if any.
    pub(crate) fn next_ready(&self) -> Option<BatchDone> {
        self.completions.try_recv().ok()
    }

    /// Marks the committable offset of one partition as committed and returns it,
    /// dirty or not; `None` when the partition is not assigned or has nothing
    /// delivered.
    pub(crate) fn mark_for_commit(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let tracker = &mut self.get_mut(topic, partition)?.tracker;
        let offset = tracker.committable()?;
        tracker.mark_committed(offset);
        Some(offset)
    }

    /// True when some partition has delivered records, all of them complete, and
    /// nothing staged: its consumer position may be past offsets never delivered.
    pub(crate) fn any_idle(&self) -> bool {
        self.iter().any(|s| {
            s.staged.is_empty()
                && s.tracker.in_flight() == 0
                && s.tracker.highest_delivered().is_some()
        })
    }

    /// Moves the committable offset of `topic`/`partition` up to the consumer's
    /// `position` when every record polled from it is complete: the offsets in
    /// between were never delivered (transaction markers, aborted or compacted
    /// records; invariant 1). See `PartitionTracker::skip_to_position`.
    pub(crate) fn skip_to_position(&mut self, topic: &str, partition: i32, position: i64) {
        if let Some(state) = self.get_mut(topic, partition) {
            if state.staged.is_empty() && state.tracker.skip_to_position(position) {
                tracing::trace!(
                    topic,
                    partition,
                    position,
                    "skipped offsets never delivered"
                );
            }
        }
    }

    /// Records dispatched whose outcome is unknown yet, over the partitions `filter`
    /// accepts.
    pub(crate) fn in_flight(&self, filter: impl Fn(&str, i32) -> bool) -> usize {
        self.iter()
            .filter(|s| filter(&s.topic, s.partition))
            .map(PartitionState::pending)
            .sum()
    }

    /// Waits for completions until nothing `filter` accepts is in flight or `timeout`
    /// passes; returns the number of records still in flight then.
    pub(crate) fn drain(&mut self, timeout: Duration, filter: impl Fn(&str, i32) -> bool) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            self.apply_ready();
            let left = self.in_flight(&filter);
            if left == 0 {
                return 0;
            }
            match self
                .completions
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(done) => {
                    self.apply(done);
                }
                Err(RecvTimeoutError::Timeout) => return self.in_flight(&filter),
                Err(RecvTimeoutError::Disconnected) => return left,
            }
        }
    }

    /// Drops every staged (polled, never dispatched) record: on shutdown and on stop
    /// after a failure. They are not committed, so they are read again later.
    pub(crate) fn discard_staged(&mut self) {
        let (mut records, mut bytes) = (0, 0);
        for state in self.iter_mut() {
            records += state.staged.len();
            bytes += std::mem::take(&mut state.staged_bytes);
            state.staged.clear();
        }
        self.records_in_flight -= records;
        self.bytes_in_flight -= bytes;
    }

    /// At-most-once: the offsets after the records staged now, one per partition with
    /// staged records, marked as committed; `None` when nothing is staged.
    pub(crate) fn take_staged_ends(&mut self) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for state in self.iter_mut() {
            if let Some(last) = state.staged.last() {
                let next = last.offset + 1;
                state.tracker.mark_committed(next);
                tpl.add_partition_offset(&state.topic, state.partition, Offset::Offset(next))
                    .expect("an absolute offset is valid");
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }

    /// librdkafka auto-commit: the committable offsets that moved since they were last
    /// stored, marked as stored (not as committed: the final and revoke commits still
    /// commit them explicitly); `None` when none moved.
    pub(crate) fn take_unstored(&mut self) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for state in self.iter_mut() {
            let Some(offset) = state.tracker.committable() else {
                continue;
            };
            if state.stored != Some(offset) {
                state.stored = Some(offset);
                tpl.add_partition_offset(&state.topic, state.partition, Offset::Offset(offset))
                    .expect("an absolute offset is valid");
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }

    /// The committable offsets of the dirty partitions `filter` accepts, marked as
    /// committed; `None` when none is dirty.
    pub(crate) fn take_dirty(
        &mut self,
        filter: impl Fn(&str, i32) -> bool,
    ) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for state in self.iter_mut() {
            if !filter(&state.topic, state.partition) || !state.tracker.is_dirty() {
                continue;
            }
            let offset = state
                .tracker
                .committable()
                .expect("dirty implies committable");
            state.tracker.mark_committed(offset);
            tpl.add_partition_offset(&state.topic, state.partition, Offset::Offset(offset))
                .expect("an absolute offset is valid");
        }
        (tpl.count() > 0).then_some(tpl)
    }

    /// Records the coordinator's answer to a commit of `offsets`: on success the
    /// per-partition committed offsets move and the records below them are released;
    /// on failure the partitions whose marked offset is still the failed one become
    /// dirty again, so the next commit retries.
    pub(crate) fn commit_result(&mut self, offsets: &[PartitionOffset], ok: bool) {
        let mut released = 0;
        for po in offsets {
            if ok {
                let entry = self
                    .committed
                    .entry((po.topic.clone(), po.partition))
                    .or_insert(po.offset);
                *entry = (*entry).max(po.offset);
            }
            if let Some(state) = self.get_mut(&po.topic, po.partition) {
                if ok {
                    released += state.tracker.confirm_committed(po.offset);
                } else {
                    state.tracker.commit_failed(po.offset);
                }
            }
        }
        self.records_in_flight -= released;
        if ok {
            Progress::add(&self.progress.commits, 1);
        } else {
            self.last_commit_failure = Some(Instant::now());
        }
    }
}
