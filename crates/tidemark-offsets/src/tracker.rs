use std::collections::VecDeque;

/// The number of one assignment of one partition to this consumer.
///
/// Every time a partition is (re)assigned, the engine gives it a fresh, strictly larger
/// epoch; work dispatched under an older epoch must never touch the newer assignment
/// (docs/DESIGN.md, invariant 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch that follows this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

/// What [`PartitionTracker::complete`] did with a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The offset was delivered under this epoch and is now complete.
    Completed,
    /// The completion belongs to another assignment of the partition and was ignored.
    StaleEpoch,
    /// The offset was already complete (a duplicate completion); nothing changed.
    AlreadyCompleted,
    /// The offset was never delivered under this epoch, or is below the committable offset
    /// already; nothing changed.
    NotDelivered,
}

/// Errors of [`PartitionTracker::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// Kafka delivers a partition's offsets in increasing order; an offset at or below
    /// the highest one delivered means the position moved back (a seek or an offset
    /// reset): call [`PartitionTracker::rewind`] first.
    #[error("offset {offset} delivered after offset {highest}: offsets must increase (seek or offset reset?)")]
    NotIncreasing {
        /// The offset that was delivered.
        offset: i64,
        /// The highest offset delivered before it.
        highest: i64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: i64,
    done: bool,
}

/// Committable-offset tracker of one partition for one assignment [`Epoch`].
///
/// Offsets are *delivered* in strictly increasing order (gaps allowed) and *completed*
/// in any order. The tracker answers the committable offset, whether it moved since
/// the last commit, how many delivered records are still incomplete, and how many are
/// not yet covered by a confirmed commit (what a crash now would process again).
///
/// Memory: one 16-byte slot per delivered record not yet covered by a confirmed
/// commit ([`confirm_committed`](Self::confirm_committed)), i.e. O(records in flight
/// plus records completed since the last commit). It never grows with the offset
/// *range* (gaps cost nothing).
///
/// Time: `deliver` is O(1) amortised; `complete` is O(1) when the partition's offsets
/// are contiguous (the common case) and O(log n) across gaps; the committable offset advances
/// in amortised O(1).
#[derive(Debug, Clone)]
pub struct PartitionTracker {
    epoch: Epoch,
    /// Delivered offsets not yet covered by a confirmed commit, ascending.
    slots: VecDeque<Slot>,
    /// Index in `slots` of the lowest incomplete offset; `slots.len()` when every
    /// delivered offset is complete.
    lowest_incomplete: usize,
    in_flight: usize,
    /// Highest delivered offset + 1 (`None` before the first delivery).
    next_after_delivered: Option<i64>,
    /// The offset last recorded by [`mark_committed`](Self::mark_committed).
    committed: Option<i64>,
    /// Lowest committable offset after a [`rewind`](Self::rewind) below the committable offset.
    floor: Option<i64>,
    /// An offset above the committable one completed since the last
    /// [`mark_committed`](Self::mark_committed): the offset map changed.
    completed_above: bool,
}

impl PartitionTracker {
    /// A tracker for a fresh assignment under `epoch`, with nothing delivered and
    /// nothing committed.
    pub fn new(epoch: Epoch) -> Self {
        PartitionTracker {
            epoch,
            slots: VecDeque::new(),
            lowest_incomplete: 0,
            in_flight: 0,
            next_after_delivered: None,
            committed: None,
            floor: None,
            completed_above: false,
        }
    }

    /// The epoch of the assignment this tracker belongs to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Records that `offset` was delivered to the application and is now in flight.
    ///
    /// # Errors
    /// [`DeliverError::NotIncreasing`] when `offset` is not above every offset delivered
    /// so far; the tracker is unchanged.
    #[inline]
    pub fn deliver(&mut self, offset: i64) -> Result<(), DeliverError> {
        if let Some(next) = self.next_after_delivered {
            if offset < next {
                return Err(DeliverError::NotIncreasing {
                    offset,
                    highest: next - 1,
                });
            }
        }
        self.slots.push_back(Slot {
            offset,
            done: false,
        });
        self.in_flight += 1;
        self.next_after_delivered = Some(offset + 1);
        Ok(())
    }

    /// Marks `offset` complete if it was delivered under `epoch`.
    ///
    /// A completion of another epoch is ignored ([`Completion::StaleEpoch`]), as are
    /// duplicates and offsets never delivered; none of them can move the committable offset.
    #[inline]
    pub fn complete(&mut self, epoch: Epoch, offset: i64) -> Completion {
        if epoch != self.epoch {
            return Completion::StaleEpoch;
        }
        let Some(front) = self.slots.front() else {
            return Completion::NotDelivered;
        };
        if offset < front.offset {
            return Completion::NotDelivered;
        }
        // Contiguous offsets put `offset` at index `offset - front`; across gaps the
        // index is lower, so fall back to a binary search.
        let guess = (offset - front.offset) as usize;
        let index = match self.slots.get(guess) {
            Some(slot) if slot.offset == offset => guess,
            _ => match self.slots.binary_search_by_key(&offset, |s| s.offset) {
                Ok(i) => i,
                Err(_) => return Completion::NotDelivered,
            },
        };
        let slot = &mut self.slots[index];
        if slot.done {
            return Completion::AlreadyCompleted;
        }
        slot.done = true;
        self.in_flight -= 1;
        if index == self.lowest_incomplete {
            let len = self.slots.len();
            let mut w = index + 1;
            while w < len && self.slots[w].done {
                w += 1;
            }
            self.lowest_incomplete = w;
        } else {
            self.completed_above = true;
        }
        Completion::Completed
    }

    /// The offset to commit for this partition: the lowest incomplete delivered offset,
    /// or the highest delivered offset + 1 when none is incomplete; `None` before the
    /// first delivery. It is the *next offset to read*, ready for OffsetCommit as is.
    #[inline]
    pub fn committable(&self) -> Option<i64> {
        let c = match self.slots.get(self.lowest_incomplete) {
            Some(slot) => Some(slot.offset),
            None => self.next_after_delivered,
        };
        match self.floor {
            Some(f) => c.map(|c| c.max(f)),
            None => c,
        }
    }

    /// Records the consumer's position (the next offset it would deliver, after the
    /// highest delivered one): the offsets between the highest delivered offset and
    /// `position` will never be delivered — transaction markers, aborted records
    /// under `read_committed`, records removed by compaction (docs/DESIGN.md, invariant 1). When no
    /// delivered offset is incomplete, the committable offset moves up to
    /// `position`, and the next delivery must be at or above it. Returns true when
    /// it moved.
    ///
    /// Nothing changes before the first delivery of this assignment (a position
    /// read then may belong to an earlier assignment of the partition), while a
    /// delivered record is incomplete, or when `position` is not above the highest
    /// delivered offset + 1.
    pub fn skip_to_position(&mut self, position: i64) -> bool {
        match self.next_after_delivered {
            Some(next) if position > next && self.lowest_incomplete == self.slots.len() => {
                self.next_after_delivered = Some(position);
                true
            }
            _ => false,
        }
    }

    /// True when [`committable`](Self::committable) differs from the offset last passed
    /// to [`mark_committed`](Self::mark_committed) (a commit would move it forward).
    pub fn is_dirty(&self) -> bool {
        let c = self.committable();
        c.is_some() && c != self.committed
    }

    /// Records that `offset` was committed (or sent for commit), so the partition is no
    /// longer dirty while the committable offset stays at `offset`.
    pub fn mark_committed(&mut self, offset: i64) {
        self.committed = Some(offset);
        self.completed_above = false;
    }

    /// True when an offset above the committable one completed since the last
    /// [`mark_committed`](Self::mark_committed): a commit now would carry a larger
    /// offset map even if the committable offset did not move.
    pub fn completed_above_since_commit(&self) -> bool {
        self.completed_above
    }

    /// Undoes [`mark_committed`](Self::mark_committed) after the commit of `offset`
    /// failed, so the partition is dirty again and the next commit retries it. A later
    /// mark (a newer commit already sent) is left alone.
    pub fn commit_failed(&mut self, offset: i64) {
        if self.committed == Some(offset) {
            self.committed = None;
        }
    }

    /// Records that the group coordinator accepted a commit of `offset`: delivered
    /// records below it are released; returns how many. Only complete records are
    /// ever released, so a confirmation that does not belong to this assignment
    /// cannot lose work.
    pub fn confirm_committed(&mut self, offset: i64) -> usize {
        let mut released = 0;
        while self
            .slots
            .front()
            .is_some_and(|s| s.done && s.offset < offset)
        {
            self.slots.pop_front();
            self.lowest_incomplete -= 1;
            released += 1;
        }
        released
    }

    /// The offset last passed to [`mark_committed`](Self::mark_committed).
    pub fn last_committed(&self) -> Option<i64> {
        self.committed
    }

    /// Number of delivered records not yet complete.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Number of completed records above the committable offset: done, but a commit
    /// cannot cover them until every record below them completes (the head-of-line
    /// cost; only the offset map records them). O(1).
    pub fn completed_above_committable(&self) -> usize {
        self.slots.len() - self.lowest_incomplete - self.in_flight
    }

    /// Number of delivered records not covered by a confirmed commit: the in-flight
    /// ones plus the completed ones since the last
    /// [`confirm_committed`](Self::confirm_committed). A crash now would process
    /// these again; it is also the number of slots held in memory.
    pub fn uncommitted(&self) -> usize {
        self.slots.len()
    }

    /// The lowest delivered offset not yet covered by a confirmed commit: where
    /// processing must restart to redo everything since the last confirmed commit
    /// (an aborted transaction). `None` when every delivered record is covered.
    pub fn first_unconfirmed(&self) -> Option<i64> {
        self.slots.front().map(|s| s.offset)
    }

    /// Highest delivered offset, if any.
    pub fn highest_delivered(&self) -> Option<i64> {
        self.next_after_delivered.map(|n| n - 1)
    }

    /// The offsets above the committable offset that are already complete, as
    /// ascending ranges for [`OffsetMap::encode`](crate::OffsetMap::encode): the set a
    /// new owner may skip. Consecutive complete *delivered* offsets form one range
    /// even across offsets never delivered (compacted records, transaction markers),
    /// which no consumer will see either. O(records above the committable offset).
    pub fn completed_ranges(&self) -> impl Iterator<Item = std::ops::Range<i64>> + '_ {
        let mut slots = self.slots.range(self.lowest_incomplete..).peekable();
        std::iter::from_fn(move || {
            while slots.peek().is_some_and(|s| !s.done) {
                slots.next();
            }
            let start = slots.next()?.offset;
            let mut end = start + 1;
            while let Some(s) = slots.next_if(|s| s.done) {
                end = s.offset + 1;
            }
            Some(start..end)
        })
    }

    /// The fetch position moved back to `position` (a seek, an offset reset, or a
    /// client re-fetching after pause/resume): delivered offsets at or above it are
    /// forgotten — they will be delivered again — and the next delivery may be any
    /// offset ≥ `position`. Returns how many delivered offsets were forgotten.
    ///
    /// Offsets below `position` stay tracked, and the committable offset never goes
    /// below where it was: records below the old committable offset are complete whatever is
    /// re-delivered (a late completion of a forgotten offset is ignored until it is
    /// delivered again, and then counts: that record was processed).
    pub fn rewind(&mut self, position: i64) -> usize {
        if let Some(c) = self.committable() {
            if position < c {
                self.floor = Some(self.floor.map_or(c, |f| f.max(c)));
            }
        }
        let keep = self.slots.partition_point(|s| s.offset < position);
        let forgotten = self.slots.len() - keep;
        let incomplete = self.slots.range(keep..).filter(|s| !s.done).count();
        self.slots.truncate(keep);
        self.in_flight -= incomplete;
        self.lowest_incomplete = self.lowest_incomplete.min(keep);
        self.next_after_delivered = Some(position);
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Epoch = Epoch(1);

    #[test]
    fn empty_tracker_has_nothing_to_commit() {
        let t = PartitionTracker::new(E);
        assert_eq!(t.committable(), None);
        assert!(!t.is_dirty());
    }

    #[test]
    fn committable_offset_waits_for_lowest_incomplete() {
        let mut t = PartitionTracker::new(E);
        for o in 10..15 {
            t.deliver(o).unwrap();
        }
        assert_eq!(t.committable(), Some(10));
        assert_eq!(t.complete(E, 12), Completion::Completed);
        assert_eq!(t.complete(E, 11), Completion::Completed);
        assert_eq!(t.committable(), Some(10));
        assert_eq!(t.complete(E, 10), Completion::Completed);
        assert_eq!(t.committable(), Some(13));
        assert_eq!(t.in_flight(), 2);
        t.complete(E, 14);
        t.complete(E, 13);
        assert_eq!(t.committable(), Some(15));
        assert_eq!(t.uncommitted(), 5);
        t.confirm_committed(13);
        assert_eq!(t.uncommitted(), 2);
        assert_eq!(t.committable(), Some(15));
        t.confirm_committed(15);
        assert_eq!(t.uncommitted(), 0);
    }

    #[test]
    fn gaps_never_block() {
        let mut t = PartitionTracker::new(E);
        t.deliver(5).unwrap();
        t.deliver(9).unwrap(); // 6..=8 compacted away or transaction markers
        t.complete(E, 5);
        assert_eq!(t.committable(), Some(9));
        t.complete(E, 9);
        assert_eq!(t.committable(), Some(10));
    }

    #[test]
    fn stale_epoch_and_duplicates_are_ignored() {
        let mut t = PartitionTracker::new(E);
        t.deliver(0).unwrap();
        assert_eq!(t.complete(Epoch(0), 0), Completion::StaleEpoch);
        assert_eq!(t.committable(), Some(0));
        assert_eq!(t.complete(E, 3), Completion::NotDelivered);
        t.deliver(1).unwrap();
        assert_eq!(t.complete(E, 1), Completion::Completed);
        assert_eq!(t.complete(E, 1), Completion::AlreadyCompleted);
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn non_increasing_delivery_is_rejected_and_rewind_recovers() {
        let mut t = PartitionTracker::new(E);
        for o in 3..=7 {
            t.deliver(o).unwrap();
        }
        assert_eq!(
            t.deliver(7),
            Err(DeliverError::NotIncreasing {
                offset: 7,
                highest: 7
            })
        );
        t.complete(E, 3);
        t.complete(E, 6);
        // Re-fetch from 5: 5..=7 are forgotten, 4 stays in flight.
        assert_eq!(t.rewind(5), 3);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.committable(), Some(4));
        t.deliver(5).unwrap();
        t.complete(E, 4);
        assert_eq!(t.committable(), Some(5));
        // A rewind below the committable offset never moves the committable offset back.
        t.complete(E, 5);
        assert_eq!(t.committable(), Some(6));
        t.rewind(2);
        assert_eq!(t.committable(), Some(6));
        t.deliver(2).unwrap();
        assert_eq!(t.committable(), Some(6));
    }

    #[test]
    fn dirty_until_committed() {
        let mut t = PartitionTracker::new(E);
        t.deliver(0).unwrap();
        assert!(t.is_dirty());
        t.mark_committed(0);
        assert!(!t.is_dirty());
        t.complete(E, 0);
        assert!(t.is_dirty());
        t.mark_committed(1);
        assert!(!t.is_dirty());
        t.commit_failed(1);
        assert!(t.is_dirty());
    }

    #[test]
    fn skip_to_position_moves_past_never_delivered_offsets_only_when_idle() {
        let mut t = PartitionTracker::new(Epoch(1));
        assert!(
            !t.skip_to_position(10),
            "nothing delivered: a position may be stale"
        );
        t.deliver(0).unwrap();
        t.deliver(1).unwrap();
        assert!(!t.skip_to_position(3), "a record is incomplete");
        t.complete(Epoch(1), 0);
        t.complete(Epoch(1), 1);
        assert_eq!(t.committable(), Some(2));
        assert!(!t.skip_to_position(2), "not above what was delivered");
        assert!(
            t.skip_to_position(3),
            "offset 2 (a marker) was never delivered"
        );
        assert_eq!(t.committable(), Some(3));
        assert!(t.is_dirty());
        assert!(t.deliver(2).is_err(), "below the skipped position");
        t.deliver(3).unwrap();
        assert_eq!(t.committable(), Some(3));
    }
}
