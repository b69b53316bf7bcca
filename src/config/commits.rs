//! When and how offsets are committed: [`CommitConfig`].

use serde::{Deserialize, Serialize};

use super::{invalid, Delivery};
use crate::commit::{CommitMode, CommitPolicy};
use crate::error::Error;

/// When and how committable offsets are committed. Part of [`Config`](crate::Config); every field
/// has a default (`CommitConfig::default()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CommitConfig {
    /// When to commit the dirty partitions' committable offsets. Default: every 1000 ms. A
    /// synchronous commit always happens on revoke and on graceful shutdown.
    pub policy: CommitPolicy,
    /// Whether policy-driven commits are asynchronous (default) or synchronous.
    pub mode: CommitMode,
    /// Byte budget of the **offset map** each commit carries in its metadata: the
    /// records completed above the committed offset, so that the partition's next
    /// owner skips them instead of processing them again (docs/DESIGN.md, "The offset
    /// map"). When the map does not fit, its longest prefix that fits is kept (the
    /// rest is processed again by a new owner); the map never stops tidemark from
    /// taking new records. Default 4096, the broker's default
    /// `offset.metadata.max.bytes`: lower it if the brokers' is lower (a commit
    /// with larger metadata fails with OFFSET_METADATA_TOO_LARGE). 0 turns the map
    /// off (commits carry no metadata, and maps found on assignment are ignored).
    pub offset_map_max_bytes: usize,
    /// `transactional.id` of the sink producer with [`Delivery::ExactlyOnce`].
    /// Default: `tidemark-<group>-<random>`, unique per instance (fencing of zombies
    /// comes from the group metadata sent with the offsets, KIP-447).
    pub transactional_id: Option<String>,
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            policy: CommitPolicy::default(),
            mode: CommitMode::default(),
            offset_map_max_bytes: tidemark_offsets::offset_map::KAFKA_METADATA_MAX_BYTES,
            transactional_id: None,
        }
    }
}

impl CommitConfig {
    /// Intervals and counts at least 1; exactly-once commits in transactions (not per
    /// record, not librdkafka's auto-commit); auto-commit needs a group.
    pub(super) fn validate(&self, delivery: Delivery, free: bool) -> Result<(), Error> {
        if delivery == Delivery::ExactlyOnce
            && matches!(
                self.policy,
                CommitPolicy::EveryRecord | CommitPolicy::Auto(_)
            )
        {
            return Err(invalid(
                "commits.policy",
                "exactly-once commits offsets in producer transactions: use every-ms, every-records, every-batch or at-end",
            ));
        }
        if matches!(self.policy, CommitPolicy::Auto(_)) && free {
            return Err(invalid(
                "commits.policy",
                "librdkafka's auto-commit commits to a group; a free consumer saves to its offset store",
            ));
        }
        if matches!(
            self.policy,
            CommitPolicy::EveryMs(0) | CommitPolicy::EveryRecords(0) | CommitPolicy::Auto(0)
        ) {
            return Err(invalid(
                "commits.policy",
                "the interval or record count must be at least 1",
            ));
        }
        Ok(())
    }
}
