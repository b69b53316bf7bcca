//! Back-pressure: pause partitions over the in-flight bounds, resume them below half,
//! and never stop polling (DESIGN.md invariant 8).
//!
//! Pausing a partition in librdkafka stops its fetcher and discards what it had
//! prefetched; resuming fetches again from the position after the last record
//! polled, so nothing is skipped.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::context::PipelineContext;
use super::partitions::Partitions;
use crate::config::Config;
use crate::shutdown::Progress;

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

/// Pauses and resumes partitions to keep within `limits`; publishes the gauges.
/// Returns true while every partition is paused for the global bounds (the caller
/// then commits at once, since only a confirmed commit lowers the record count).
pub(crate) fn regulate(
    consumer: &BaseConsumer<PipelineContext>,
    partitions: &mut Partitions,
    limits: Limits,
) -> bool {
    let records = partitions.records_in_flight();
    let bytes = partitions.bytes_in_flight();
    partitions
        .progress
        .set_in_flight(records as u64, bytes as u64);

    if !partitions.paused_all && (records >= limits.records || bytes >= limits.bytes) {
        partitions.paused_all = true;
        Progress::add(&partitions.progress.pauses, 1);
        tracing::debug!(records, bytes, "in-flight bound reached: pausing");
    } else if partitions.paused_all && records <= limits.records / 2 && bytes <= limits.bytes / 2 {
        partitions.paused_all = false;
        Progress::add(&partitions.progress.resumes, 1);
        tracing::debug!(records, bytes, "below half the bounds: resuming");
    }

    let paused_all = partitions.paused_all;
    let mut pause = TopicPartitionList::new();
    let mut resume = TopicPartitionList::new();
    for state in partitions.iter_mut() {
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
            let list = if want { &mut pause } else { &mut resume };
            list.add_partition(&state.topic, state.partition);
        }
    }
    if pause.count() > 0 {
        if let Err(e) = consumer.pause(&pause) {
            tracing::warn!(error = %e, "pause failed");
        }
    }
    if resume.count() > 0 {
        if let Err(e) = consumer.resume(&resume) {
            tracing::warn!(error = %e, "resume failed");
        }
        kick_fetcher(consumer, &resume);
    }
    paused_all
}

/// After `resume`, librdkafka (2.12, on Tansu and on the mock cluster alike) sends
/// the partitions' next Fetch only about a second later; measured in BENCHMARKS.md,
/// it capped CPU-bound pipelines at one in-flight window per second. A seek to the
/// position resume itself would use (the offset after the last record polled)
/// starts the fetcher at once; it neither skips nor repeats a record. Partitions
/// with no record polled yet in this assignment keep their pending start.
fn kick_fetcher(consumer: &BaseConsumer<PipelineContext>, resumed: &TopicPartitionList) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    let mut seek = TopicPartitionList::new();
    for e in resumed.elements() {
        if let Some(Offset::Offset(o)) = positions
            .find_partition(e.topic(), e.partition())
            .map(|p| p.offset())
        {
            let _ = seek.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o));
        }
    }
    if seek.count() > 0 {
        if let Err(e) = consumer.seek_partitions(seek, Duration::ZERO) {
            tracing::debug!(error = %e, "seek after resume failed; the fetcher starts late");
        }
    }
}
