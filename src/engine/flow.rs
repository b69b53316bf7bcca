//! Back-pressure: which partitions to pause and resume so the in-flight records and
//! bytes stay within their bounds — a decision the driver applies; polling never
//! stops (docs/DESIGN.md, invariant 8).
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
    pub records: usize,
    pub bytes: usize,
    pub per_partition: Option<usize>,
}

impl Limits {
    pub(crate) fn from_config(c: &Config) -> Self {
        Limits {
            records: c.max_in_flight_records,
            bytes: c.max_in_flight_bytes,
            per_partition: c.max_in_flight_records_per_partition,
        }
    }

    /// True when a poll round must stop taking records: a global bound is reached or
    /// the partition that just got a record (`partition_uncommitted`) is at its bound.
    pub(crate) fn reached(&self, partitions: &Partitions, partition_uncommitted: usize) -> bool {
        partitions.records_in_flight() >= self.records
            || partitions.bytes_in_flight() >= self.bytes
            || self
                .per_partition
                .is_some_and(|l| partition_uncommitted >= l)
    }
}

/// Partitions to pause and to resume now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FlowChange {
    pub pause: Vec<(Arc<str>, i32)>,
    pub resume: Vec<(Arc<str>, i32)>,
}

/// Decides which partitions to pause (at a bound) and resume (below half of it),
/// marks them so in `st`, and publishes the in-flight gauges. `st.paused_all` is
/// true afterwards while every partition is paused for the global bounds (the
/// driver then commits at once, since only a confirmed commit lowers the record
/// count).
pub(crate) fn regulate(st: &mut RunState, limits: Limits, counters: &Counters) -> FlowChange {
    let records = st.partitions.records_in_flight();
    let bytes = st.partitions.bytes_in_flight();
    counters.set_in_flight(records as u64, bytes as u64);

    if !st.paused_all && (records >= limits.records || bytes >= limits.bytes) {
        st.paused_all = true;
        Counters::add(&counters.pauses, 1);
        tracing::debug!(records, bytes, "in-flight bound reached: pausing");
    } else if st.paused_all && records <= limits.records / 2 && bytes <= limits.bytes / 2 {
        st.paused_all = false;
        Counters::add(&counters.resumes, 1);
        tracing::debug!(records, bytes, "below half the bounds: resuming");
    }

    let paused_all = st.paused_all;
    let mut change = FlowChange::default();
    for state in st.partitions.iter_mut() {
        if let Some(limit) = limits.per_partition {
            let n = state.uncommitted();
            if n >= limit {
                state.held = true;
            } else if n <= limit / 2 {
                state.held = false;
            }
        }
        let want = paused_all || state.held;
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
