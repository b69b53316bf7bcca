//! Start-up, the idle stop, the drain and refusals: [`LifecycleConfig`].

use std::time::Duration;

use super::invalid;
use crate::error::Error;
use serde::{Deserialize, Serialize};

/// How a run starts and stops: start-up, the idle stop and the drain on revoke and
/// stop. Durations in serde forms are milliseconds or strings with units (`"10s"`),
/// and take their old names with `_ms` too. Part of [`Config`](crate::Config); every field has a default
/// (`LifecycleConfig::default()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LifecycleConfig {
    /// How long start-up may take to reach the brokers and find every topic.
    /// Default 10 s; past it, `run` returns [`Error::BrokerUnreachable`].
    #[serde(with = "super::duration::ms", alias = "startup_timeout_ms")]
    pub startup_timeout: Duration,
    /// Stop gracefully (final sync commit) once caught up: the member has joined
    /// and received its first assignment (an empty one counts; a group join is not
    /// idleness), every assigned partition has reached its end (librdkafka's
    /// partition EOF, `enable.partition.eof`, which the pipeline's consumer turns on: the
    /// fetch position reached the high watermark, or the last stable offset under
    /// `read_committed`), no assigned partition is paused, nothing is staged, in
    /// flight, waiting in a lane or waiting for a retry, and no record has arrived
    /// for this long (counted from the latest assignment at the earliest). A member
    /// whose assignment was lost (session timeout, network cut) is not idle until it
    /// has rejoined and received an assignment again. A member
    /// with an empty assignment (more members than partitions) stops this long after
    /// its join. `None` (the default) runs until shut down.
    #[serde(with = "super::duration::option_ms", alias = "exit_when_idle_ms")]
    pub exit_when_idle: Option<Duration>,
    /// Longest a revoke or a graceful shutdown waits for in-flight records before
    /// committing. Default 10 s: well under the rebalance timeout
    /// (`max.poll.interval.ms`, 300000 by default), which it must stay below. Records
    /// still in flight then are not committed (the next owner processes them again).
    #[serde(with = "super::duration::ms", alias = "drain_timeout_ms")]
    pub drain_timeout: Duration,
    /// How long the cluster may go on refusing this client's authentication (SASL) or
    /// TLS handshake, with no record or assignment in between, before `run` stops
    /// with [`Error::Refused`]. Default 10 s. (librdkafka retries both forever;
    /// an ACL's denial stops the run at once; a broker that is down or cut off is no
    /// refusal and is waited out.) See docs/SECURITY.md.
    #[serde(with = "super::duration::ms", alias = "refusal_timeout_ms")]
    pub refusal_timeout: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            startup_timeout: Duration::from_secs(10),
            exit_when_idle: None,
            drain_timeout: Duration::from_secs(10),
            refusal_timeout: Duration::from_secs(10),
        }
    }
}

impl LifecycleConfig {
    /// The drain stays below the rebalance timeout (`max.poll.interval.ms`,
    /// `max_poll_interval_ms`): a revoke that drained longer would get the member
    /// removed from the group.
    pub(super) fn validate(&self, max_poll_interval_ms: u64) -> Result<(), Error> {
        if self.drain_timeout >= Duration::from_millis(max_poll_interval_ms) {
            return Err(invalid(
                "lifecycle.drain_timeout",
                "must be below max.poll.interval.ms (the rebalance timeout), or a revoke \
                 that drains would get this member kicked out of the group",
            ));
        }
        Ok(())
    }
}
