//! The run state: everything a pipeline's poll thread knows while it runs, grouped by
//! what it is about. The driver (the poll loop and the librdkafka callbacks it runs
//! inside `poll`, all on the poll thread) is its only writer.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::completion::failure::FailurePolicy;
use super::completion::progress::{Applied, PendingTask};
use super::intake::partitions::Partitions;
use super::scheduling::scheduler::Scheduler;
use super::FastMap;
use crate::commit::PartitionOffset;
use crate::config::Config;
use crate::error::Error;
use crate::topic_partition::TopicPartition;

/// The poll thread's state, behind the engine's mutex (never contended: only the
/// poll thread locks it; the mutex exists because librdkafka's callbacks reach it
/// through a `Sync` context).
#[derive(Default)]
pub(crate) struct RunState {
    /// Offset state of the assigned partitions.
    pub(super) partitions: Partitions,
    /// Which delivered records run when: lanes, waiting records, retries.
    pub(super) scheduler: Scheduler,
    /// Commits in flight and their history.
    pub(super) commits: CommitBook,
    /// What happens to failed records.
    pub(super) failures: FailurePolicy,
    /// Tasks dispatched (and dead letters sent) whose end has not arrived, by task
    /// id: their records' completions are read from them every round.
    pub(super) live: FastMap<u64, LiveTask>,
    /// Back-pressure holds every partition back (the global bounds): the poll rounds
    /// take no records; librdkafka keeps them prefetched (`seams::record_queue`).
    pub(super) held_back: bool,
    /// A consumer or producer error that stops the run (not tied to a record).
    pub(super) fatal: Option<Error>,
    /// Counters and times of the run.
    pub(super) stats: RunStats,
}

impl RunState {
    /// The state of a run of `config` before any assignment.
    pub(crate) fn new(config: &Config) -> Self {
        let at_least_once = config.delivery.may_process_again();
        RunState {
            // At-most-once commits before processing: nothing completed lies above
            // a committed offset, so no map.
            partitions: Partitions::new(if at_least_once {
                config.commits.offset_map_max_bytes
            } else {
                0
            }),
            scheduler: Scheduler::new(config.ordering),
            failures: FailurePolicy::new(
                config.failures.retry,
                config.failures.dead_letter.clone(),
                at_least_once,
            ),
            ..RunState::default()
        }
    }

    /// Records of the partitions `filter` accepts that are running (dispatched, or a
    /// dead letter unacknowledged): what a drain waits for. Records waiting in a lane
    /// or for a retry, and records the run stopped on, are not.
    pub(crate) fn pending(&self, filter: impl Fn(&str, i32) -> bool) -> usize {
        self.partitions
            .iter()
            .filter(|s| filter(&s.topic, s.partition))
            .map(|s| {
                s.pending()
                    .saturating_sub(self.scheduler.parked(&s.topic, s.partition))
            })
            .sum()
    }

    /// True when the run must stop: a record failure the policy stops on, or a fatal
    /// error.
    pub(crate) fn must_stop(&self) -> bool {
        self.fatal.is_some() || self.failures.stopped()
    }
}

/// A task in flight as the poll thread sees it: the shared progress and what of it
/// was applied already.
pub(crate) struct LiveTask {
    pub(super) pending: std::sync::Arc<PendingTask>,
    pub(super) applied: Applied,
    /// A dead letter: its completion counts as dead-lettered, not completed.
    pub(super) dead_letter: bool,
}

impl LiveTask {
    /// Records of the task completed so far.
    pub(crate) fn applied_count(&self) -> usize {
        self.applied.count()
    }

    pub(crate) fn new(pending: std::sync::Arc<PendingTask>, dead_letter: bool) -> Self {
        LiveTask {
            applied: Applied::new(&pending),
            pending,
            dead_letter,
        }
    }
}

/// The commit bookkeeping: what was sent and not answered, what was accepted.
#[derive(Default)]
pub(crate) struct CommitBook {
    /// When each async commit whose result has not arrived was sent, oldest first
    /// (librdkafka answers commits in order).
    pub(super) sent: VecDeque<Instant>,
    /// When a commit last failed (commits forced by back-pressure wait a little
    /// after it instead of retrying at once).
    pub(super) last_failure: Option<Instant>,
    /// The last offset the coordinator (or store, or transaction) accepted, per
    /// partition, across assignments.
    pub(super) accepted: BTreeMap<TopicPartition, i64>,
}

impl CommitBook {
    /// Records the answer to a commit of `offsets`.
    pub(crate) fn record(&mut self, offsets: &[PartitionOffset], ok: bool) {
        if ok {
            for po in offsets {
                let entry = self
                    .accepted
                    .entry(TopicPartition::new(&*po.topic, po.partition))
                    .or_insert(po.offset);
                *entry = (*entry).max(po.offset);
            }
        } else {
            self.last_failure = Some(Instant::now());
        }
    }
}

/// Counters and times of the run.
#[derive(Default)]
pub(crate) struct RunStats {
    /// Task completions applied so far (one per dispatched task).
    pub(super) tasks_done: u64,
    /// Records completed so far.
    pub(super) completed: u64,
    /// When a partition was last assigned (the idle clock starts no earlier).
    pub(super) last_assigned: Option<Instant>,
    /// The stop has called the processor's `stopping` hook: no hook after it.
    pub(super) stopped_hooks: bool,
    /// When the member received its first assignment, an empty one included (a
    /// free consumer: when it assigned its partitions); cleared when the
    /// assignment is lost (a session timeout, a fenced member epoch), until the
    /// member's next assignment. The idle stop never fires while it is `None`.
    pub(super) joined: Option<Instant>,
    /// When the last record completed.
    pub(super) last_completion: Option<Instant>,
}
