//! Back-pressure: how the records and bytes in flight (polled, not complete) and
//! the uncommitted records (polled, not covered by a confirmed commit) stay within
//! their bounds — a [`FlowDecision`] the driver applies (this module writes no run
//! state); polling never stops (docs/DESIGN.md, invariant 8). At the global bounds
//! every partition is *held back*: the poll rounds take no records ([`Limits::room`])
//! and librdkafka keeps them prefetched in the record queue, where its own
//! thresholds stop the fetching (`seams::record_queue`). A partition's own bounds
//! (`max_in_flight_records_per_partition`, its share of the commit-lag bound)
//! *pause* it, since the record queue is shared. The two record bounds are separate
//! on purpose: completions free memory at once, commits only every so often, so a
//! bound on uncommitted records alone held back a CPU-bound pipeline on every
//! commit round trip (BENCHMARKS.md, "Headline at the default Config").
//!
//! Pausing a partition in librdkafka stops its fetcher and discards what it had
//! prefetched; resuming fetches again from the position after the last record
//! polled, so nothing is skipped — but the discarded prefetch is fetched and parsed
//! again, which is why the global bounds hold back instead of pausing.

use crate::config::Config;
use crate::engine::intake::partitions::Partitions;
use crate::engine::state::RunState;
use crate::metrics::Counters;
use crate::topic_partition::TopicPartition;

/// The bounds, from [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `max_in_flight_records`.
    pub(in crate::engine) records: usize,
    /// `max_in_flight_bytes`.
    pub(in crate::engine) bytes: usize,
    /// `max_uncommitted_records`.
    pub(in crate::engine) uncommitted: usize,
    /// `max_in_flight_records_per_partition`.
    pub(in crate::engine) per_partition: Option<usize>,
}

impl Limits {
    pub(crate) fn from_config(c: &Config) -> Self {
        Limits {
            records: c.flow.max_in_flight_records,
            bytes: c.flow.max_in_flight_bytes,
            uncommitted: c.flow.max_uncommitted_records,
            per_partition: c.flow.max_in_flight_records_per_partition,
        }
    }

    /// How many records a poll round may take now before the record bounds are
    /// reached (computed once per round: it walks the partitions). Every
    /// uncommitted record counts, those of paused partitions too, so the records
    /// not covered by a confirmed commit never exceed `max_uncommitted_records`
    /// (what a crash makes the next owner process again).
    pub(crate) fn room(&self, partitions: &Partitions) -> usize {
        self.records
            .saturating_sub(partitions.records_in_flight())
            .min(
                self.uncommitted
                    .saturating_sub(partitions.records_uncommitted()),
            )
    }

    /// True when a poll round must stop taking records: the byte bound is reached
    /// or the partition that just got a record (`partition_in_flight`) is at its
    /// bound. O(1), checked per record.
    pub(crate) fn reached(&self, partitions: &Partitions, partition_in_flight: usize) -> bool {
        partitions.bytes_in_flight() >= self.bytes
            || self.per_partition.is_some_and(|l| partition_in_flight >= l)
    }
}

/// A partition whose back-pressure flags change: the values it must have now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionFlow {
    pub(in crate::engine) tp: TopicPartition,
    /// Over its per-partition bound (`PartitionState::held`).
    pub(in crate::engine) held: bool,
    /// Over its share of the commit-lag bound (`PartitionState::held_uncommitted`).
    pub(in crate::engine) held_uncommitted: bool,
    /// Whether the consumer must have it paused.
    pub(in crate::engine) paused: bool,
}

/// What back-pressure decided this round; the driver applies it to the run state
/// and the consumer (flow writes nothing but counters).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FlowDecision {
    /// Every partition is held back for the global bounds (`RunState::held_back`).
    pub(in crate::engine) held_back: bool,
    /// The partitions whose flags change, with their new values.
    pub(in crate::engine) changed: Vec<PartitionFlow>,
}

/// Decides whether to hold every partition back (at a global bound; let go below
/// half of every bound) and which partitions to pause (at their own bounds) and
/// resume, given the run state, and publishes the in-flight gauges.
pub(crate) fn regulate(st: &RunState, limits: Limits, counters: &Counters) -> FlowDecision {
    let records = st.partitions.records_in_flight();
    let bytes = st.partitions.bytes_in_flight();
    let uncommitted = st.partitions.records_uncommitted();
    counters.set_in_flight(records as u64, bytes as u64, uncommitted as u64);
    let above: usize = st
        .partitions
        .iter()
        .map(|s| s.tracker.completed_above_committable())
        .sum();
    counters
        .completed_above_committable
        .store(above as u64, std::sync::atomic::Ordering::Relaxed);

    let mut held_back = st.held_back;
    if !held_back && (records >= limits.records || bytes >= limits.bytes) {
        held_back = true;
        Counters::add(&counters.pauses, 1);
        tracing::debug!(records, bytes, "a bound is reached: holding back");
    } else if held_back && records <= limits.records / 2 && bytes <= limits.bytes / 2 {
        held_back = false;
        Counters::add(&counters.resumes, 1);
        tracing::debug!(
            records,
            bytes,
            "below half the bounds: taking records again"
        );
    }

    // The commit-lag bound. At the bound nothing more is taken (`room` counts every
    // uncommitted record, those of paused partitions too), and nothing is paused
    // for it: the records wait in the record queue. Before it, a
    // record stuck at one partition's committable offset must not stop the others
    // (their commits follow their completions): past half the bound, a partition
    // whose completed records waiting above its committable offset reach its share
    // (bound ÷ assigned partitions) pauses alone, so it never holds more than about
    // half the bound and the others keep the rest. A partition resumes below half
    // the bound or below half its share.
    let past_half = uncommitted >= limits.uncommitted / 2;
    let share = (limits.uncommitted / st.partitions.len().max(1)).max(1);
    let mut decision = FlowDecision {
        held_back,
        changed: Vec::new(),
    };
    for state in st.partitions.iter() {
        let mut held = state.held;
        if let Some(limit) = limits.per_partition {
            let n = state.in_flight();
            if n >= limit {
                held = true;
            } else if n <= limit / 2 {
                held = false;
            }
        }
        let own = state.uncommitted();
        let stuck = state.tracker.completed_above_committable();
        let mut held_uncommitted = state.held_uncommitted;
        if past_half && stuck >= share {
            if !held_uncommitted {
                tracing::debug!(
                    topic = &*state.topic,
                    partition = state.partition,
                    uncommitted = own,
                    completed_above_committable = stuck,
                    "at the commit-lag bound: pausing the partition"
                );
            }
            held_uncommitted = true;
        } else if !past_half || own <= share / 2 {
            held_uncommitted = false;
        }
        let paused = held || held_uncommitted;
        if (held, held_uncommitted, paused) != (state.held, state.held_uncommitted, state.paused) {
            decision.changed.push(PartitionFlow {
                tp: TopicPartition::new(state.topic.clone(), state.partition),
                held,
                held_uncommitted,
                paused,
            });
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;
    use crate::engine::intake::partitions::Delivered;
    use crate::PartitionOffset;

    const LIMITS: Limits = Limits {
        records: 100,
        bytes: usize::MAX,
        uncommitted: 1_000,
        per_partition: None,
    };

    /// A run state with `partitions` of topic `t`, nothing polled.
    fn state(partitions: i32) -> RunState {
        let mut st = RunState::default();
        for p in 0..partitions {
            st.partitions.assign("t", p);
        }
        st
    }

    /// Polls and delivers `n` more records of partition `p` (none complete).
    fn poll(st: &mut RunState, p: i32, n: i64) -> Delivered {
        let from = st
            .partitions
            .get("t", p)
            .unwrap()
            .tracker
            .highest_delivered()
            .map_or(0, |o| o + 1);
        for offset in from..from + n {
            let msg = OwnedMessage::new(
                None,
                None,
                "t".into(),
                Timestamp::NotAvailable,
                p,
                offset,
                None,
            );
            st.partitions.stage(&msg);
        }
        st.partitions.deliver_staged().0.pop().unwrap()
    }

    /// Completes `offsets` of a delivery.
    fn complete(st: &mut RunState, d: &Delivered, offsets: impl IntoIterator<Item = i64>) {
        let offsets: Vec<i64> = offsets.into_iter().collect();
        st.partitions
            .complete("t", d.records[0].partition, d.epoch, |f| {
                offsets.iter().for_each(|&o| f(o))
            });
    }

    /// Applies a decision the way the driver does (flags only).
    fn apply(st: &mut RunState, decision: &FlowDecision) {
        st.held_back = decision.held_back;
        for c in &decision.changed {
            let s = st.partitions.get_mut(&c.tp.topic, c.tp.partition).unwrap();
            (s.held, s.held_uncommitted, s.paused) = (c.held, c.held_uncommitted, c.paused);
        }
    }

    fn paused(decision: &FlowDecision) -> Vec<(i32, bool)> {
        let mut paused: Vec<_> = decision
            .changed
            .iter()
            .map(|c| (c.tp.partition, c.paused))
            .collect();
        paused.sort();
        paused
    }

    #[test]
    fn the_record_bound_holds_every_partition_back_without_pausing_until_half_of_it() {
        let counters = Counters::default();
        let mut st = state(2);
        let d = poll(&mut st, 0, 99);
        let none = regulate(&st, LIMITS, &counters);
        assert_eq!(
            none,
            FlowDecision::default(),
            "below the bound nothing changes"
        );

        let _ = poll(&mut st, 1, 1);
        let at = regulate(&st, LIMITS, &counters);
        assert!(at.held_back);
        assert_eq!(
            paused(&at),
            [],
            "a pause would discard librdkafka's prefetch"
        );
        apply(&mut st, &at);

        complete(&mut st, &d, 0..40);
        let above_half = regulate(&st, LIMITS, &counters);
        assert!(
            above_half.held_back && above_half.changed.is_empty(),
            "60 > 50: still held back"
        );

        complete(&mut st, &d, 40..50);
        let half = regulate(&st, LIMITS, &counters);
        assert!(!half.held_back);
        assert_eq!(paused(&half), []);
        assert_eq!(Counters::get(&counters.pauses), 1);
        assert_eq!(Counters::get(&counters.resumes), 1);
    }

    #[test]
    fn past_half_the_commit_lag_bound_a_stuck_partition_pauses_alone() {
        let counters = Counters::default();
        let limits = Limits {
            records: 10_000,
            ..LIMITS
        };
        let mut st = state(2);
        // Partition 0: its first record is stuck, the 599 after it complete, so
        // nothing of it can be committed; partition 1: 201 records in flight.
        let d0 = poll(&mut st, 0, 600);
        complete(&mut st, &d0, 1..600);
        let _ = poll(&mut st, 1, 201);
        let decision = regulate(&st, limits, &counters);
        assert!(!decision.held_back);
        assert_eq!(
            paused(&decision),
            [(0, true)],
            "only the partition with its share (500) waiting above a stuck record pauses"
        );
        assert!(decision.changed[0].held_uncommitted);
        apply(&mut st, &decision);
        assert_eq!(limits.room(&st.partitions), 199, "the rest is the others'");

        // The stuck record completes: its partition's records become committable,
        // but only a confirmed commit lowers what is uncommitted.
        complete(&mut st, &d0, [0]);
        assert!(regulate(&st, limits, &counters).changed.is_empty());
    }

    #[test]
    fn at_the_commit_lag_bound_nothing_more_is_taken_and_nothing_is_paused() {
        let counters = Counters::default();
        let limits = Limits {
            records: 10_000,
            ..LIMITS
        };
        let mut st = state(4);
        // Nothing stuck, nothing committed (a coordinator that does not answer):
        // 400, 300, 200 and 100 records of partitions 0 to 3, complete in order.
        for (p, n) in [(0, 400), (1, 300), (2, 200), (3, 100)] {
            let d = poll(&mut st, p, n);
            complete(&mut st, &d, 0..n);
        }
        assert_eq!(limits.room(&st.partitions), 0);
        let decision = regulate(&st, limits, &counters);
        assert_eq!(
            paused(&decision),
            [],
            "nothing is stuck: every record waits for the commit alone"
        );
        apply(&mut st, &decision);
        assert_eq!(limits.room(&st.partitions), 0, "nothing more is taken");

        // Partition 0's commit confirms: 600 are left, and room for 400.
        st.partitions
            .commit_result(&[PartitionOffset::new("t", 0, 400)], true);
        let decision = regulate(&st, limits, &counters);
        assert_eq!(paused(&decision), []);
        apply(&mut st, &decision);
        assert_eq!(limits.room(&st.partitions), 400);
    }

    #[test]
    fn the_per_partition_bound_holds_that_partition_until_half_of_it() {
        let counters = Counters::default();
        let limits = Limits {
            per_partition: Some(10),
            ..LIMITS
        };
        let mut st = state(2);
        let d = poll(&mut st, 1, 10);
        let _ = poll(&mut st, 0, 3);
        let at = regulate(&st, limits, &counters);
        assert_eq!(paused(&at), [(1, true)]);
        assert!(at.changed[0].held);
        apply(&mut st, &at);

        complete(&mut st, &d, 0..4);
        assert!(
            regulate(&st, limits, &counters).changed.is_empty(),
            "6 > 5: still held"
        );
        complete(&mut st, &d, 4..5);
        let below = regulate(&st, limits, &counters);
        assert_eq!(paused(&below), [(1, false)]);
        assert!(!below.changed[0].held);
    }
}
