//! The offset state of the assigned partitions: per partition its assignment epoch,
//! its tracker, the records polled but not yet dispatched, and the in-flight
//! accounting that back-pressure reads. Plain values in and out (`PartitionOffset`,
//! topic and partition); the one Kafka client type is the polled message `stage`
//! copies into a `Record`.
//!
//! Only the driver changes it (docs/DESIGN.md, "Threads, and who owns what").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rdkafka::message::{Headers, Message};
use tidemark_offsets::{Completion, DeliverError, Epoch, OffsetMap, PartitionTracker};

use crate::commit::PartitionOffset;
use crate::engine::FastMap;
use crate::record::{Header, Record};

/// One assigned partition.
pub(crate) struct PartitionState {
    pub(in crate::engine) topic: Arc<str>,
    pub(in crate::engine) partition: i32,
    pub(in crate::engine) tracker: PartitionTracker,
    /// Records polled since the last dispatch (not yet delivered to the tracker).
    pub(in crate::engine) staged: Vec<Record>,
    staged_bytes: usize,
    /// Where the keys and payloads of this partition's records are copied, back
    /// to back (see [`Record`]).
    arena: BytesMut,
    /// Delivered records the run stopped on: they hold the committable offset but
    /// will never complete under this epoch, so draining does not wait for them.
    stopped: usize,
    /// Whether the consumer has this partition paused.
    pub(in crate::engine) paused: bool,
    /// The consumer reported the end of this partition's log (librdkafka's
    /// partition EOF) and no record of it was polled since: it is caught up.
    pub(in crate::engine) at_end: bool,
    /// The consumer's position when the end of the log was reported (the offset
    /// after the last record or marker it passed). A later position differs only
    /// when records were consumed that never reached `stage` — rdkafka's close polls
    /// the consumer queue and drops what it gets, and each record dropped moves the
    /// position — so only this position may move the committable offset past
    /// offsets never delivered ([`Partitions::skip_to_position`]).
    end_position: Option<i64>,
    /// Over its per-partition bound (cleared below half of it).
    pub(in crate::engine) held: bool,
    /// Paused by the commit-lag bound: all partitions at the bound, one stuck
    /// partition past half of it (see `flow::regulate`).
    pub(in crate::engine) held_uncommitted: bool,
    /// librdkafka auto-commit: the offset last stored with `store_offsets`.
    pub(in crate::engine) stored: Option<i64>,
    /// The offset map committed by the partition's previous owner, read on
    /// assignment: its offsets are skipped when delivered, and those not delivered
    /// yet stay in this owner's maps. Dropped once delivery passes its end.
    inherited: Option<OffsetMap>,
    /// Bytes of the offset map of the last commit (the gauge against the budget).
    pub(in crate::engine) map_bytes: usize,
    /// When each round's records were delivered: (first offset, time), ascending.
    delivered_at: VecDeque<(i64, Instant)>,
    /// Polled records were discarded unprocessed: the consumer position is past
    /// records that exist, so it must never move the committable offset.
    position_ahead: bool,
}

impl PartitionState {
    /// Delivered records whose outcome is still unknown (running, waiting in the
    /// scheduler, or retrying).
    pub fn pending(&self) -> usize {
        self.tracker.in_flight().saturating_sub(self.stopped)
    }

    /// Records polled and not yet complete: staged, or delivered and pending.
    pub fn in_flight(&self) -> usize {
        self.tracker.in_flight() + self.staged.len()
    }

    /// Records polled and not yet covered by a confirmed commit.
    pub fn uncommitted(&self) -> usize {
        self.tracker.uncommitted() + self.staged.len()
    }

    /// `offset` for a commit, with the offset map of the records completed above
    /// it in at most `budget` bytes (none when 0): this owner's completions, then
    /// the inherited map's offsets not delivered yet.
    fn commit_offset(&mut self, offset: i64, budget: usize) -> PartitionOffset {
        let mut po = PartitionOffset::new(&*self.topic, self.partition, offset);
        if budget == 0 {
            return po;
        }
        let encoded = OffsetMap::encode(offset, self.completed_above(offset), budget);
        if encoded.dropped > 0 {
            tracing::debug!(
                topic = %self.topic, partition = self.partition, offset,
                map_end = encoded.end, dropped = encoded.dropped,
                "offset map over budget: completed records past its end would be processed again by a new owner"
            );
        }
        self.map_bytes = encoded.metadata.len();
        po.metadata = encoded.metadata;
        po
    }

    /// The offsets known complete above `offset`, ascending: this owner's
    /// completions, then the inherited map's offsets not delivered yet.
    fn completed_above(&self, offset: i64) -> impl Iterator<Item = std::ops::Range<i64>> + '_ {
        let above = self.tracker.highest_delivered().map_or(offset, |h| h + 1);
        let inherited = self
            .inherited
            .iter()
            .flat_map(|m| m.completed())
            .filter_map(move |r| {
                let start = r.start.max(above);
                (start < r.end).then_some(start..r.end)
            });
        self.tracker.completed_ranges().chain(inherited)
    }

    /// What this member completed above its last confirmed commit, as an offset map
    /// based at the lowest record that commit does not cover (the committed offset,
    /// when delivery is contiguous from it): set aside when the assignment is lost
    /// ([`Partitions::take_set_aside`]). Not the last commit *sent*: during a network
    /// cut commits are sent that may or may not reach the broker. `None` when every
    /// delivered record is covered.
    fn completed_since_commit(&self) -> Option<OffsetMap> {
        let base = self.tracker.first_unconfirmed()?;
        // Everything below the committable offset is complete too (but `base`
        // itself: a map never marks its base).
        let below = self
            .tracker
            .committable()
            .filter(|c| *c > base)
            .map(|c| base..c);
        let ranges: Vec<_> = below
            .into_iter()
            .chain(self.completed_above(base))
            .collect();
        let encoded = OffsetMap::encode(base, ranges, usize::MAX);
        OffsetMap::decode(&encoded.metadata).ok()
    }

    /// The oldest in-flight record (the lowest incomplete one) and how long ago it
    /// was delivered.
    pub fn oldest_in_flight_age(&self, now: Instant) -> Option<(i64, Duration)> {
        if self.tracker.in_flight() == 0 {
            return None;
        }
        let head = self.tracker.committable()?;
        let round = self.delivered_at.partition_point(|(o, _)| *o <= head);
        let (_, at) = self.delivered_at.get(round.checked_sub(1)?)?;
        Some((head, now.saturating_duration_since(*at)))
    }

    /// Forgets the delivery times of rounds wholly below the committable offset
    /// (done when a round is delivered, so the list stays as long as the rounds
    /// in flight).
    fn forget_delivered_below_committable(&mut self) {
        if self.tracker.in_flight() == 0 {
            self.delivered_at.clear();
        } else if let Some(head) = self.tracker.committable() {
            while self.delivered_at.get(1).is_some_and(|(o, _)| *o <= head) {
                self.delivered_at.pop_front();
            }
        }
    }

    /// True when a commit would change what is committed: the committable offset
    /// moved, or (with an offset map) a record above it completed.
    fn is_dirty(&self, budget: usize) -> bool {
        self.tracker.is_dirty() || (budget > 0 && self.tracker.completed_above_since_commit())
    }
}

/// Size of each arena chunk the keys and payloads of a partition's records are
/// copied into (a larger record gets a chunk of its own size).
const ARENA_CHUNK_BYTES: usize = 32 * 1024;

/// Copies `data` to the end of `arena` and splits it off as a shared slice: no
/// allocation unless the chunk is full (then a new chunk; the old one is freed when
/// its last slice is dropped).
fn copy_into(arena: &mut BytesMut, data: &[u8]) -> Bytes {
    if arena.capacity() < data.len() {
        *arena = BytesMut::with_capacity(data.len().max(ARENA_CHUNK_BYTES));
    }
    arena.extend_from_slice(data);
    arena.split().freeze()
}

/// The group's committed offset of a partition as its assignment's look-up found
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// Looked up: the offset, `None` when the group has none.
    Known(Option<i64>),
    /// The look-up failed (the coordinator unreachable or still loading).
    Unknown,
}

/// Every assigned partition.
#[derive(Default)]
pub(crate) struct Partitions {
    by_topic: FastMap<Arc<str>, FastMap<i32, PartitionState>>,
    /// Byte budget of each commit's offset map (0: no map).
    map_budget: usize,
    last_epoch: Epoch,
    /// Σ `uncommitted()` over the partitions, kept incrementally.
    records_uncommitted: usize,
    /// Partitions whose assignment was lost, kept aside with their trackers
    /// ([`Partitions::set_aside`]): completions of their records still arrive.
    set_aside: Vec<PartitionState>,
    /// Key + payload bytes staged or dispatched and not yet done (including tasks of
    /// partitions revoked since: their memory is held until the worker finishes).
    bytes_in_flight: usize,
}

impl Partitions {
    /// No partition yet; commits carry offset maps of up to `map_budget` bytes
    /// (0: none).
    pub(crate) fn new(map_budget: usize) -> Self {
        Partitions {
            map_budget,
            ..Partitions::default()
        }
    }

    /// The byte budget of each commit's offset map (0: maps are off).
    pub(crate) fn map_budget(&self) -> usize {
        self.map_budget
    }

    /// The assignment of `state`'s partition was lost: nothing may be committed, but
    /// the partition is kept aside (its staged records dropped) so that the records
    /// it completed — and those still in flight, whose outputs are acknowledged once
    /// the network is back — need not be processed again if the partition comes back
    /// with its committed offset not moved back ([`Partitions::take_set_aside`]; issue 31:
    /// a cut longer than the session timeout otherwise redoes all of them).
    pub(crate) fn set_aside(&mut self, mut state: PartitionState) {
        self.set_aside
            .retain(|s| !(*s.topic == *state.topic && s.partition == state.partition));
        state.staged = Vec::new();
        state.arena = BytesMut::new();
        state.delivered_at.clear();
        self.set_aside.push(state);
    }

    /// The records completed under the assignment of `topic`/`partition` that was
    /// lost, as an offset map, with the offset the new assignment starts from: the
    /// committed offset when known, else — the group has none — where the lost
    /// assignment's first record not covered by a confirmed commit was (starting
    /// there is never past anything unprocessed). `None` when nothing is set aside,
    /// nothing is to skip, the committed offset went back below what this member's
    /// last confirmed commit covered (a reset: the group is asked to process those
    /// records again), or the look-up failed ([`Committed::Unknown`]: librdkafka looks
    /// the committed offset up itself, and those records are processed again —
    /// starting at the first unconfirmed record could be below a commit of this
    /// member's that landed though its answer was lost, and move the committed
    /// offset back: invariant 7). A committed offset further on is this member's own
    /// commit that was sent but never confirmed, or another member's progress:
    /// either way the records this member completed are done (their outputs
    /// acknowledged), so skipping them keeps at-least-once. Taken either way.
    pub(crate) fn take_set_aside(
        &mut self,
        topic: &str,
        partition: i32,
        committed: Committed,
    ) -> Option<(i64, OffsetMap)> {
        let i = self
            .set_aside
            .iter()
            .position(|s| &*s.topic == topic && s.partition == partition)?;
        let state = self.set_aside.swap_remove(i);
        let Committed::Known(committed) = committed else {
            return None;
        };
        let map = state.completed_since_commit()?;
        let start = committed.unwrap_or(map.base());
        if start < map.base() {
            return None;
        }
        let above = map.completed().iter().filter_map(|r| {
            let from = r.start.max(start + 1);
            (from < r.end).then_some(from..r.end)
        });
        let rebased =
            OffsetMap::decode(&OffsetMap::encode(start, above, usize::MAX).metadata).ok()?;
        (rebased.completed_count() > 0).then_some((start, rebased))
    }

    /// Takes the offset map the previous owner of `topic`/`partition` committed
    /// with the offset this assignment starts from: offsets it marks complete are
    /// skipped as they are delivered.
    pub(crate) fn inherit(&mut self, topic: &str, partition: i32, map: OffsetMap) {
        if let Some(state) = self.get_mut(topic, partition) {
            state.inherited = Some(map);
        }
    }

    /// Starts tracking `topic`/`partition` under a fresh epoch, replacing any state of
    /// an earlier assignment (whose late completions are then ignored; docs/DESIGN.md invariant 5).
    /// Also used after a seek back (an aborted transaction): the records are
    /// delivered again under the new epoch.
    pub(crate) fn assign(&mut self, topic: &str, partition: i32) -> Epoch {
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
                arena: BytesMut::new(),
                stopped: 0,
                paused: false,
                at_end: false,
                end_position: None,
                held: false,
                held_uncommitted: false,
                stored: None,
                inherited: None,
                map_bytes: 0,
                delivered_at: VecDeque::new(),
                position_ahead: false,
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
        self.records_uncommitted -= state.uncommitted();
        self.bytes_in_flight -= state.staged_bytes;
        Some(state)
    }

    pub(crate) fn get(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.by_topic.get(topic)?.get(&partition)
    }

    pub(crate) fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionState> {
        self.by_topic.get_mut(topic)?.get_mut(&partition)
    }

    /// Number of assigned partitions. O(topics).
    pub(crate) fn len(&self) -> usize {
        self.by_topic.values().map(|p| p.len()).sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &PartitionState> {
        self.by_topic.values().flat_map(|p| p.values())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut PartitionState> {
        self.by_topic.values_mut().flat_map(|p| p.values_mut())
    }

    /// Records polled and not yet covered by a confirmed commit, all partitions
    /// (what `max_uncommitted_records` bounds). O(1).
    pub(crate) fn records_uncommitted(&self) -> usize {
        debug_assert_eq!(
            self.records_uncommitted,
            self.iter().map(PartitionState::uncommitted).sum::<usize>()
        );
        self.records_uncommitted
    }

    /// Records polled and not yet complete, all partitions (what
    /// `max_in_flight_records` bounds). O(partitions).
    pub(crate) fn records_in_flight(&self) -> usize {
        self.iter().map(PartitionState::in_flight).sum()
    }

    /// Key + payload bytes polled and not yet processed.
    pub(crate) fn bytes_in_flight(&self) -> usize {
        self.bytes_in_flight
    }

    /// Copies a polled message into the staging buffer of its partition (key and
    /// payload into the partition's arena, see [`Record`]). A message
    /// of a partition that is not assigned (any more) is dropped. Returns the
    /// partition's records in flight when it was staged.
    pub(crate) fn stage(&mut self, msg: &impl Message) -> Option<usize> {
        let state = self.get_mut(msg.topic(), msg.partition())?;
        let record = Record {
            topic: state.topic.clone(),
            partition: state.partition,
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
            key: msg.key().map(|k| copy_into(&mut state.arena, k)),
            payload: msg.payload().map(|p| copy_into(&mut state.arena, p)),
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
        state.at_end = false;
        state.end_position = None;
        state.staged.push(record);
        state.staged_bytes += size;
        let in_flight = state.in_flight();
        self.records_uncommitted += 1;
        self.bytes_in_flight += size;
        Some(in_flight)
    }

    /// Delivers every staged record to its partition's tracker and hands them out,
    /// per partition in offset order, with the epoch they were delivered under; the
    /// scheduler turns them into tasks. Records the inherited offset map marks
    /// complete are completed at once instead (their count is returned), so a new
    /// owner never processes them again.
    ///
    /// An offset at or below one already delivered means the fetch position moved
    /// back (a seek, an offset reset, a re-fetch after pause/resume): the tracker
    /// forgets what it had delivered from there on and takes it again, without ever
    /// moving the committable offset back (docs/DESIGN.md, invariant 7).
    pub(crate) fn deliver_staged(&mut self) -> (Vec<Delivered>, u64) {
        let mut delivered = Vec::new();
        let mut forgotten = 0;
        let mut skipped = (0u64, 0usize);
        let now = Instant::now();
        for state in self.iter_mut() {
            if state.staged.is_empty() {
                continue;
            }
            // The next round's records go into room for as many as this one's: one
            // allocation, not a growth by doubling (each a copy of the records).
            let capacity = state.staged.len();
            let mut records = std::mem::replace(&mut state.staged, Vec::with_capacity(capacity));
            state.forget_delivered_below_committable();
            state.delivered_at.push_back((records[0].offset, now));
            state.staged_bytes = 0;
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
            if let Some(map) = &state.inherited {
                let epoch = state.tracker.epoch();
                records.retain(|r| {
                    if !map.contains(r.offset) {
                        return true;
                    }
                    state.tracker.complete(epoch, r.offset);
                    skipped.0 += 1;
                    skipped.1 += r.size_bytes();
                    false
                });
                if state.tracker.highest_delivered() >= Some(map.end() - 1) {
                    state.inherited = None;
                }
            }
            if !records.is_empty() {
                delivered.push(Delivered {
                    epoch: state.tracker.epoch(),
                    records,
                });
            }
        }
        self.records_uncommitted -= forgotten;
        self.bytes_in_flight -= skipped.1;
        (delivered, skipped.0)
    }

    /// Completes records of `topic`/`partition` dispatched under `epoch`: `offsets`
    /// calls its argument with each. Returns the records it completed. Records of an
    /// earlier assignment (stale epoch, docs/DESIGN.md invariant 5) or of a
    /// partition no longer assigned change nothing (`offsets` still runs, so the
    /// caller's bookkeeping moves on).
    pub(crate) fn complete(
        &mut self,
        topic: &str,
        partition: i32,
        epoch: Epoch,
        offsets: impl FnOnce(&mut dyn FnMut(i64)),
    ) -> u64 {
        let mut done = 0u64;
        let live = self
            .by_topic
            .get_mut(topic)
            .and_then(|parts| parts.get_mut(&partition))
            .filter(|s| s.tracker.epoch() == epoch);
        // Not assigned under this epoch: a partition set aside after a lost
        // assignment still takes its records' completions.
        let state = match live {
            Some(state) => Some(state),
            None => self.set_aside.iter_mut().find(|s| {
                &*s.topic == topic && s.partition == partition && s.tracker.epoch() == epoch
            }),
        };
        match state {
            Some(state) => offsets(&mut |offset| {
                if state.tracker.complete(epoch, offset) == Completion::Completed {
                    done += 1;
                }
            }),
            _ => {
                tracing::trace!(
                    topic,
                    partition,
                    epoch = epoch.0,
                    "stale completion dropped"
                );
                offsets(&mut |_| {});
            }
        }
        done
    }

    /// A task ended: its records' key and payload bytes are free (its records
    /// that go back to the scheduler hold theirs again: `hold_bytes`).
    pub(crate) fn release_bytes(&mut self, bytes: usize) {
        self.bytes_in_flight -= bytes;
    }

    /// `n` records of `topic`/`partition` failed and the run stops on them.
    pub(crate) fn mark_stopped(&mut self, topic: &str, partition: i32, n: usize) {
        if let Some(state) = self.get_mut(topic, partition) {
            state.stopped += n;
        }
    }

    /// Records whose bytes were released with their task went back to the
    /// scheduler (a retry, a dead letter, skipped records): their memory is held
    /// again.
    pub(crate) fn hold_bytes(&mut self, bytes: usize) {
        self.bytes_in_flight += bytes;
    }

    /// At-most-once: releases the records below the offsets committed before
    /// processing, as soon as they complete.
    pub(crate) fn release_committed(&mut self, topic: &str, partition: i32) {
        let Some(state) = self.get_mut(topic, partition) else {
            return;
        };
        let released = match state.tracker.last_committed() {
            Some(c) => state.tracker.confirm_committed(c),
            None => 0,
        };
        self.records_uncommitted -= released;
    }

    /// The consumer reached the end of the log of partition `partition` (librdkafka's
    /// partition EOF, which names no topic: every assigned topic's partition of that
    /// number is marked, and the first record polled from one clears its mark again;
    /// `Driver::caught_up` also waits out the idle time, in which a partition with
    /// records left would deliver some). `positions`: the consumer's positions now
    /// (`KafkaConsumer::positions`), kept as each marked partition's end position.
    pub(crate) fn reached_end(&mut self, partition: i32, positions: &[PartitionOffset]) {
        for state in self.iter_mut() {
            if state.partition == partition {
                state.at_end = true;
                state.end_position = positions
                    .iter()
                    .find(|p| p.partition == partition && *p.topic == *state.topic)
                    .map(|p| p.offset);
            }
        }
    }

    /// True when every assigned partition has reached its end, none is paused, and
    /// nothing polled from any of them is unfinished (staged, running, waiting in a
    /// lane or for a retry): the idle stop's condition besides the idle time.
    pub(crate) fn caught_up(&self) -> bool {
        self.iter().all(|s| {
            s.at_end && !s.paused && s.staged.is_empty() && s.pending() == 0 && s.stopped == 0
        })
    }

    /// True when some partition has delivered records, all of them complete,
    /// nothing staged, and its end of log was reported after its last record: its
    /// consumer position may be past offsets never delivered.
    pub(crate) fn any_idle(&self) -> bool {
        self.iter().any(|s| {
            s.at_end
                && s.staged.is_empty()
                && s.tracker.in_flight() == 0
                && s.tracker.highest_delivered().is_some()
        })
    }

    /// Moves the committable offset of `topic`/`partition` up to the consumer's
    /// `position` when every record polled from it is complete and the end of its
    /// log was reported after the last one *at this very position*: the offsets in
    /// between were never delivered (transaction markers, aborted or compacted
    /// records; docs/DESIGN.md invariant 1). Any other position is not trusted: on
    /// Apache Kafka, under group chaos, librdkafka reported a position thousands of
    /// offsets past the last record a member had polled, and in the soak a member
    /// stopping gracefully committed the position its close had reached by dropping
    /// the records it polled (rdkafka's close drains the queue), losing them (issue
    /// 31). See `PartitionTracker::skip_to_position`.
    pub(crate) fn skip_to_position(&mut self, topic: &str, partition: i32, position: i64) {
        if let Some(state) = self.get_mut(topic, partition) {
            let from = state.tracker.highest_delivered().map(|h| h + 1);
            if state.at_end
                && state.end_position == Some(position)
                && state.staged.is_empty()
                && !state.position_ahead
                && state.tracker.skip_to_position(position)
            {
                tracing::debug!(
                    topic,
                    partition,
                    ?from,
                    position,
                    "skipped offsets never delivered"
                );
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
            state.position_ahead |= !state.staged.is_empty();
            state.staged.clear();
        }
        self.records_uncommitted -= records;
        self.bytes_in_flight -= bytes;
    }

    /// At-most-once: the offsets after the records staged now, one per partition with
    /// staged records, marked as committed.
    pub(crate) fn take_staged_ends(&mut self) -> Vec<PartitionOffset> {
        let mut ends = Vec::new();
        for state in self.iter_mut() {
            if let Some(last) = state.staged.last() {
                let next = last.offset + 1;
                state.tracker.mark_committed(next);
                ends.push(state.commit_offset(next, 0));
            }
        }
        ends
    }

    /// librdkafka auto-commit: the committable offsets that moved since they were last
    /// stored, marked as stored (not as committed: the final and revoke commits still
    /// commit them explicitly).
    /// The stored offset carries the offset map of the moment it moved.
    pub(crate) fn take_unstored(&mut self) -> Vec<PartitionOffset> {
        let budget = self.map_budget;
        let mut moved = Vec::new();
        for state in self.iter_mut() {
            let Some(offset) = state.tracker.committable() else {
                continue;
            };
            if state.stored != Some(offset) {
                state.stored = Some(offset);
                moved.push(state.commit_offset(offset, budget));
            }
        }
        moved
    }

    /// The committable offsets of the dirty partitions `filter` accepts, with their
    /// offset maps, marked as committed. With `force`, every partition `filter`
    /// accepts that has a committable offset, dirty or not (the per-record policy).
    pub(crate) fn take_dirty(
        &mut self,
        filter: impl Fn(&str, i32) -> bool,
        force: bool,
    ) -> Vec<PartitionOffset> {
        let budget = self.map_budget;
        let mut dirty = Vec::new();
        for state in self.iter_mut() {
            if !filter(&state.topic, state.partition) || !(force || state.is_dirty(budget)) {
                continue;
            }
            let Some(offset) = state.tracker.committable() else {
                continue;
            };
            state.tracker.mark_committed(offset);
            dirty.push(state.commit_offset(offset, budget));
        }
        dirty
    }

    /// Applies the answer to a commit of `offsets`: on success the records below them
    /// are released; on failure the partitions whose marked offset is still the
    /// failed one become dirty again, so the next commit retries.
    pub(crate) fn commit_result(&mut self, offsets: &[PartitionOffset], ok: bool) {
        let mut released = 0;
        for po in offsets {
            if let Some(state) = self.get_mut(&po.topic, po.partition) {
                if ok {
                    released += state.tracker.confirm_committed(po.offset);
                } else {
                    state.tracker.commit_failed(po.offset);
                }
            }
        }
        self.records_uncommitted -= released;
    }

    /// Where each partition must restart to redo everything its last confirmed
    /// commit does not cover (an aborted transaction), with its pause flag.
    pub(crate) fn restart_points(&self) -> Vec<(Arc<str>, i32, Option<i64>, bool)> {
        self.iter()
            .map(|s| {
                let restart = s
                    .tracker
                    .first_unconfirmed()
                    .or_else(|| s.staged.first().map(|r| r.offset));
                (s.topic.clone(), s.partition, restart, s.paused)
            })
            .collect()
    }
}

/// The records of one partition delivered to its tracker in one round.
pub(crate) struct Delivered {
    pub(in crate::engine) epoch: Epoch,
    /// In offset order; every record has the same topic and partition.
    pub(in crate::engine) records: Vec<Record>,
}
