//! The commit policy at work: when the poll loop commits, and how.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::context::PipelineContext;
use super::partitions::Partitions;
use crate::commit::{offsets_of, CommitMode, CommitPolicy};
use crate::shutdown::Progress;

/// After a failed commit, commits forced by back-pressure wait this long.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// How the committer sends what the policy decides to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitRoute {
    /// OffsetCommit to the group coordinator, async or sync.
    Group(CommitMode),
    /// Store the watermarks in librdkafka; its auto-commit timer commits them.
    LibrdkafkaAuto,
    /// Save to the free consumer's offset store (synchronous).
    Store,
    /// Drain everything in flight, then commit the producer transaction with the
    /// offsets (exactly-once).
    Transaction { drain_timeout: Duration },
}

pub(crate) struct Committer {
    policy: CommitPolicy,
    route: CommitRoute,
    /// Half of `max_in_flight_records`: past it a commit goes out whatever the
    /// policy, so confirmed commits release room before the bound pauses fetching.
    early_commit_at: usize,
    last_commit: Instant,
    completed_at_last: u64,
    batches_at_last: u64,
}

impl Committer {
    pub(crate) fn new(policy: CommitPolicy, route: CommitRoute, max_in_flight: usize) -> Self {
        Committer {
            policy,
            route,
            early_commit_at: (max_in_flight / 2).max(1),
            last_commit: Instant::now(),
            completed_at_last: 0,
            batches_at_last: 0,
        }
    }

    /// True when the policy handles every completed record itself
    /// ([`commit_partition`](Self::commit_partition) per record).
    pub(crate) fn per_record(&self) -> bool {
        self.policy == CommitPolicy::EveryRecord
    }

    /// Commits the dirty partitions if the policy says so now. `pressed`: the
    /// in-flight bound is reached, and only a confirmed commit can release it. Past
    /// half the bound a commit goes out too (one at a time), so that in a steady
    /// flow the bound is rarely reached: pausing costs librdkafka its prefetched
    /// records, and resuming a fetch round trip.
    pub(crate) fn maybe_commit(
        &mut self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
        now: Instant,
        pressed: bool,
    ) {
        let completed = Progress::get(&partitions.progress.completed);
        let due = match self.policy {
            CommitPolicy::EveryMs(ms) => {
                now.duration_since(self.last_commit) >= Duration::from_millis(ms)
            }
            CommitPolicy::EveryRecords(n) => completed - self.completed_at_last >= n,
            CommitPolicy::EveryBatch => partitions.batches_done > self.batches_at_last,
            // Stored at once; librdkafka's timer decides when they are committed.
            CommitPolicy::Auto(_) => true,
            CommitPolicy::EveryRecord | CommitPolicy::AtEnd => false,
        };
        let backing_off = partitions
            .last_commit_failure
            .is_some_and(|t| now.duration_since(t) < RETRY_BACKOFF);
        let filling = pressed || partitions.records_in_flight() >= self.early_commit_at;
        let forced = filling && partitions.commits_sent.is_empty() && !backing_off;
        if !(due || forced) {
            return;
        }
        self.last_commit = now;
        self.completed_at_last = completed;
        self.batches_at_last = partitions.batches_done;
        super::context::skip_undelivered(consumer, partitions);
        if self.route == CommitRoute::LibrdkafkaAuto {
            self.store(consumer, partitions, forced);
        } else {
            self.commit_now(consumer, partitions, |_, _| true);
        }
    }

    /// Commits the dirty partitions that `filter` accepts now, whatever the policy
    /// (with a transaction: every dirty partition, since one transaction covers
    /// them all).
    pub(crate) fn commit_now(
        &mut self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
        filter: impl Fn(&str, i32) -> bool,
    ) {
        if let CommitRoute::Transaction { drain_timeout } = self.route {
            let left = partitions.drain(drain_timeout, |_, _| true);
            if left > 0 {
                tracing::debug!(
                    in_flight = left,
                    "transaction commit postponed: records still in flight"
                );
                return;
            }
            if let Some(tpl) = partitions.take_dirty(|_, _| true) {
                let _ = consumer.context().commit_sync(consumer, partitions, &tpl);
            }
        } else if let Some(tpl) = partitions.take_dirty(filter) {
            self.send(consumer, partitions, &tpl);
        }
    }

    /// Commits the watermark of one partition now, dirty or not (the per-record
    /// policy: one commit per completed record).
    pub(crate) fn commit_partition(
        &mut self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
        topic: &str,
        partition: i32,
    ) {
        let Some(offset) = partitions.mark_for_commit(topic, partition) else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .expect("an absolute offset is valid");
        self.send(consumer, partitions, &tpl);
    }

    /// librdkafka auto-commit: stores the dirty watermarks (`rd_kafka_offsets_store`,
    /// which takes the offsets as given: the next offset to read). When `forced`
    /// (back-pressure), also asks for a commit of what is stored now instead of
    /// waiting for the timer.
    fn store(
        &self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
        forced: bool,
    ) {
        consumer.context().store_watermarks(consumer, partitions);
        if forced {
            match PipelineContext::commit_async(consumer, None) {
                Ok(()) => partitions.commits_sent.push_back(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "commit of the stored offsets not sent"),
            }
        }
    }

    fn send(
        &self,
        consumer: &BaseConsumer<PipelineContext>,
        partitions: &mut Partitions,
        tpl: &TopicPartitionList,
    ) {
        if self.route != CommitRoute::Group(CommitMode::Async) {
            let _ = consumer.context().commit_sync(consumer, partitions, tpl);
            return;
        }
        let _span =
            tracing::debug_span!("commit", kind = "async", partitions = tpl.count()).entered();
        match PipelineContext::commit_async(consumer, Some(tpl)) {
            Ok(()) => partitions.commits_sent.push_back(Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "async commit not sent");
                partitions.commit_result(&offsets_of(tpl), false);
            }
        }
    }
}
