//! Back-pressure and poll rounds: [`FlowConfig`].

use std::time::Duration;

use super::invalid;
use crate::error::Error;
use serde::{Deserialize, Serialize};

/// Back-pressure and poll rounds: how much tidemark takes from the consumer and
/// holds (docs/DESIGN.md, invariant 8). Part of [`Config`](crate::Config); every field has a
/// default (`FlowConfig::default()`), so a serde form may name only what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FlowConfig {
    /// Most records taken from the consumer per poll round before dispatching.
    /// Default 2000.
    pub max_batch_records: usize,
    /// Longest a poll waits for the first record of a round. Default 100 ms.
    /// Serde: milliseconds or `"100ms"` (also as `poll_timeout`).
    #[serde(with = "super::duration::ms", alias = "poll_timeout_ms")]
    pub poll_timeout: Duration,
    /// Back-pressure bound on records polled and not yet complete, over all
    /// partitions: staged, running, waiting in a lane or for a retry. At the bound
    /// tidemark pauses its partitions while it keeps polling (docs/DESIGN.md,
    /// invariant 8) and resumes below half of it, so it bounds the memory of held
    /// records and the records a crash finds unfinished. Completed records do not
    /// count (they hold no memory; [`max_uncommitted_records`](Self::max_uncommitted_records)
    /// bounds them). Default 20000.
    pub max_in_flight_records: usize,
    /// Commit-lag bound on records polled and not yet covered by a confirmed commit,
    /// over all partitions: in flight, or completed above a partition's committed
    /// offset. Past half of it a commit goes out whatever the policy (one at a
    /// time), and a partition whose completed records waiting above its committable
    /// offset reach its share of the bound (the bound divided by the assigned
    /// partitions) pauses, so a record stuck at one partition's committable offset
    /// stops that partition, not the others; at the bound every partition pauses
    /// (a coordinator that does not confirm commits). Paused partitions resume
    /// below half the bound or below half their share. Never exceeded: without an
    /// offset map this is the most a crash or a lost assignment makes the next
    /// owner process again. Default 100000; must be at least
    /// `max_in_flight_records`.
    pub max_uncommitted_records: usize,
    /// Back-pressure bound on the key + payload bytes of the records polled and not
    /// yet processed, bytes, over all partitions (records waiting for a retry
    /// count). At the bound every partition pauses; fetching resumes once records
    /// and bytes are both at or below half their bounds. Default 64 MiB.
    pub max_in_flight_bytes: usize,
    /// Optional per-partition bound on records polled and not yet complete, so one
    /// busy partition cannot take the whole budget. Default: none.
    pub max_in_flight_records_per_partition: Option<usize>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_batch_records: 2000,
            poll_timeout: Duration::from_millis(100),
            max_in_flight_records: 20_000,
            max_uncommitted_records: 100_000,
            max_in_flight_bytes: 64 << 20,
            max_in_flight_records_per_partition: None,
        }
    }
}

impl FlowConfig {
    /// Every bound at least 1, and the commit-lag bound at least the in-flight one.
    pub(super) fn validate(&self) -> Result<(), Error> {
        if self.max_batch_records == 0 {
            return Err(invalid("flow.max_batch_records", "must be at least 1"));
        }
        if self.max_in_flight_records == 0 || self.max_in_flight_bytes == 0 {
            return Err(invalid(
                "flow.max_in_flight_records/flow.max_in_flight_bytes",
                "must be at least 1",
            ));
        }
        if self.max_uncommitted_records < self.max_in_flight_records {
            return Err(invalid(
                "flow.max_uncommitted_records",
                "must be at least max_in_flight_records (records in flight are uncommitted too)",
            ));
        }
        if self.max_in_flight_records_per_partition == Some(0) {
            return Err(invalid(
                "flow.max_in_flight_records_per_partition",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
