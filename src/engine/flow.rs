//! Back-pressure: which partitions to pause and resume so the records and bytes in
//! flight (polled, not complete) and the uncommitted records (polled, not covered by
//! a confirmed commit) stay within their bounds (the memory bounds pause every
//! partition, the commit-lag bound only those over their share of it) — a decision the driver applies;
//! polling never stops (docs/DESIGN.md, invariant 8). The two record bounds are
//! separate on purpose: completions free memory at once, commits only every so
//! often, so a bound on uncommitted records alone paused a CPU-bound pipeline on
//! every commit round trip (BENCHMARKS.md, "Headline at the default Config").
//!
//! Pausing a partition in librdkafka stops its fetcher and discards what it had
//! prefetched; resuming fetches again from the position after the last record
//! polled, so nothing is skipped.

use std::sync::Arc;

use super::partitions::Partitions;
use super::state::RunState;
use crate::config::Config;
use crate::metrics::Counters;

/// The bounds, from [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `max_in_flight_records`.
    pub records: usize,
    /// `max_in_flight_bytes`.
    pub bytes: usize,
    /// `max_uncommitted_records`.
    pub uncommitted: usize,
    /// `max_in_flight_records_per_partition`.
    pub per_partition: Option<usize>,
}

impl Limits {
    pub(crate) fn from_config(c: &Config) -> Self {
        Limits {
            records: c.max_in_flight_records,
            bytes: c.max_in_flight_bytes,
            uncommitted: c.max_uncommitted_records,
            per_partition: c.max_in_flight_records_per_partition,
        }
    }

    /// How many records a poll round may take now before the record bounds are
    /// reached (computed once per round: it walks the partitions). The records of
    /// partitions paused over their share of the commit-lag bound do not count
    /// against it: they come no nearer, and counting them would leave the others
    /// one record per round.
    pub(crate) fn room(&self, partitions: &Partitions) -> usize {
        let (mut in_flight, mut uncommitted) = (0, 0);
        for state in partitions.iter() {
            in_flight += state.in_flight();
            if !state.held_uncommitted {
                uncommitted += state.uncommitted();
            }
        }
        self.records
            .saturating_sub(in_flight)
            .min(self.uncommitted.saturating_sub(uncommitted))
    }

    /// True when a poll round must stop taking records: the byte bound is reached
    /// or the partition that just got a record (`partition_in_flight`) is at its
    /// bound. O(1), checked per record.
    pub(crate) fn reached(&self, partitions: &Partitions, partition_in_flight: usize) -> bool {
        partitions.bytes_in_flight() >= self.bytes
            || self.per_partition.is_some_and(|l| partition_in_flight >= l)
    }
}

/// Partitions to pause and to resume now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FlowChange {
    pub pause: Vec<(Arc<str>, i32)>,
    pub resume: Vec<(Arc<str>, i32)>,
}

/// Decides which partitions to pause (at a bound) and resume (below half of every
/// bound), marks them so in `st`, and publishes the in-flight gauges. `st.paused_all`
/// is true afterwards while every partition is paused for the global bounds.
pub(crate) fn regulate(st: &mut RunState, limits: Limits, counters: &Counters) -> FlowChange {
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

    if !st.paused_all && (records >= limits.records || bytes >= limits.bytes) {
        st.paused_all = true;
        Counters::add(&counters.pauses, 1);
        tracing::debug!(records, bytes, "a bound is reached: pausing");
    } else if st.paused_all && records <= limits.records / 2 && bytes <= limits.bytes / 2 {
        st.paused_all = false;
        Counters::add(&counters.resumes, 1);
        tracing::debug!(records, bytes, "below half the bounds: resuming");
    }

    // The commit-lag bound pauses only the partitions over their share of it: a
    // record stuck at one partition's committable offset must not stop the others,
    // whose commits follow their completions (pausing all and resuming below half
    // never resumed when the stuck partition alone held over half the bound). The
    // sum reaching the bound means some partition holds at least its share.
    let lag_reached = uncommitted >= limits.uncommitted;
    let lag_half = uncommitted <= limits.uncommitted / 2;
    let share = (limits.uncommitted / st.partitions.len().max(1)).max(1);
    let paused_all = st.paused_all;
    let mut change = FlowChange::default();
    for state in st.partitions.iter_mut() {
        if let Some(limit) = limits.per_partition {
            let n = state.in_flight();
            if n >= limit {
                state.held = true;
            } else if n <= limit / 2 {
                state.held = false;
            }
        }
        let own = state.uncommitted();
        if lag_reached && own >= share {
            if !state.held_uncommitted {
                tracing::debug!(
                    topic = &*state.topic,
                    partition = state.partition,
                    uncommitted = own,
                    "over its share of the commit-lag bound: pausing the partition"
                );
            }
            state.held_uncommitted = true;
        } else if lag_half || own <= share / 2 {
            state.held_uncommitted = false;
        }
        let want = paused_all || state.held || state.held_uncommitted;
        if want != state.paused {
            state.paused = want;
            let list = if want {
                &mut change.pause
            } else {
                &mut change.resume
            };
            list.push((state.topic.clone(), state.partition));
        }
    }
    change
}
