//! When the poll loop commits: the commit policy, plus the commits that
//! the commit-lag bound forces (only a confirmed commit frees room under
//! `max_uncommitted_records`).

use std::time::{Duration, Instant};

use crate::commit::CommitPolicy;
use crate::engine::state::RunState;

/// After a failed commit, commits forced by back-pressure wait this long.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Why a commit is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The policy's interval, record count or task completion.
    Policy,
    /// The uncommitted records passed half of `max_uncommitted_records` and no
    /// commit is on its way.
    Forced,
}

/// The commit policy's clock and counters.
pub(crate) struct CommitSchedule {
    policy: CommitPolicy,
    /// Half of `max_uncommitted_records`: past it a commit goes out whatever the
    /// policy, so confirmed commits release room before the bound pauses fetching.
    early_commit_at: usize,
    last_commit: Instant,
    completed_at_last: u64,
    tasks_at_last: u64,
}

impl CommitSchedule {
    pub(crate) fn new(policy: CommitPolicy, max_uncommitted_records: usize) -> Self {
        CommitSchedule {
            policy,
            early_commit_at: (max_uncommitted_records / 2).max(1),
            last_commit: Instant::now(),
            completed_at_last: 0,
            tasks_at_last: 0,
        }
    }

    /// True when the policy commits every completed record itself, one commit each.
    pub(crate) fn per_record(&self) -> bool {
        self.policy == CommitPolicy::EveryRecord
    }

    /// Whether a commit is due at `now`. Past half the commit-lag bound a commit
    /// goes out too (one at a time), so that in a steady flow the bound is never
    /// reached: pausing costs librdkafka its prefetched records, and resuming a
    /// fetch round trip. Resets the policy's clock and counters when it answers
    /// `Some`.
    pub(crate) fn due(&mut self, now: Instant, state: &RunState) -> Option<Due> {
        let completed = state.stats.completed;
        let policy = match self.policy {
            CommitPolicy::EveryMs(ms) => {
                now.duration_since(self.last_commit) >= Duration::from_millis(ms)
            }
            CommitPolicy::EveryRecords(n) => completed - self.completed_at_last >= n,
            CommitPolicy::EveryBatch => state.stats.tasks_done > self.tasks_at_last,
            // Stored at once; librdkafka's timer decides when they are committed.
            CommitPolicy::Auto(_) => true,
            CommitPolicy::EveryRecord | CommitPolicy::AtEnd => false,
        };
        let backing_off = state
            .commits
            .last_failure
            .is_some_and(|t| now.duration_since(t) < RETRY_BACKOFF);
        let filling = state.partitions.records_uncommitted() >= self.early_commit_at;
        let forced = filling && state.commits.sent.is_empty() && !backing_off;
        let due = match (policy, forced) {
            (_, true) => Due::Forced,
            (true, false) => Due::Policy,
            (false, false) => return None,
        };
        self.last_commit = now;
        self.completed_at_last = completed;
        self.tasks_at_last = state.stats.tasks_done;
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn state() -> RunState {
        RunState::new(&Config::new("fake:9092", "g", ["t"]))
    }

    #[test]
    fn every_ms_is_due_once_the_interval_passed_since_the_last_commit() {
        let mut s = CommitSchedule::new(CommitPolicy::EveryMs(100), 1_000);
        let st = state();
        let start = s.last_commit;
        assert_eq!(s.due(start + Duration::from_millis(99), &st), None);
        assert_eq!(
            s.due(start + Duration::from_millis(100), &st),
            Some(Due::Policy)
        );
        assert_eq!(
            s.due(start + Duration::from_millis(150), &st),
            None,
            "the clock restarted"
        );
    }

    #[test]
    fn every_records_counts_completions_since_the_last_commit() {
        let mut s = CommitSchedule::new(CommitPolicy::EveryRecords(10), 1_000);
        let mut st = state();
        let now = Instant::now();
        st.stats.completed = 9;
        assert_eq!(s.due(now, &st), None);
        st.stats.completed = 10;
        assert_eq!(s.due(now, &st), Some(Due::Policy));
        st.stats.completed = 19;
        assert_eq!(s.due(now, &st), None);
        st.stats.completed = 20;
        assert_eq!(s.due(now, &st), Some(Due::Policy));
    }

    #[test]
    fn every_batch_is_due_after_each_task_and_at_end_never() {
        let mut batch = CommitSchedule::new(CommitPolicy::EveryBatch, 1_000);
        let mut at_end = CommitSchedule::new(CommitPolicy::AtEnd, 1_000);
        let mut st = state();
        let now = Instant::now() + Duration::from_secs(3_600);
        assert_eq!(batch.due(now, &st), None);
        st.stats.tasks_done = 1;
        st.stats.completed = 1_000_000;
        assert_eq!(batch.due(now, &st), Some(Due::Policy));
        assert_eq!(batch.due(now, &st), None);
        assert_eq!(at_end.due(now, &st), None);
        assert!(!at_end.per_record());
        assert!(CommitSchedule::new(CommitPolicy::EveryRecord, 1).per_record());
    }
}
