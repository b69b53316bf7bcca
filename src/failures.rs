//! What happens to records that fail: retries with backoff, and the dead-letter
//! queue.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Header naming the input record's topic on every dead letter.
pub const HEADER_SRC_TOPIC: &str = "tidemark-src-topic";
/// Header carrying the failure's message on every dead letter (UTF-8).
pub const HEADER_ERROR: &str = "tidemark-error";
/// Header carrying how many times the record was tried, on every dead letter
/// (decimal string).
pub const HEADER_ATTEMPTS: &str = "tidemark-attempts";

/// Retries of records whose processor returned a
/// [`Retriable`](crate::FailureKind::Retriable) error (`FailureConfig::retry`).
///
/// The n-th retry waits `initial_backoff × multiplier^(n-1)`, capped at
/// `max_backoff`, with full jitter (a uniformly random wait between half and all
/// of it, so retries of many records spread out), unless the error carries its own
/// `retry_after`. While it waits the record holds its partition's committable offset
/// and blocks what the processing order says (its key; its partition; nothing); the
/// poll loop and other partitions go on.
///
/// `#[non_exhaustive]`: build it with [`RetryPolicy::attempts`] or `default()` and the
/// `with_*` methods (or set its public fields on a value you have).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 disables retries. Default 3.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry. Default 100 ms. Serde: milliseconds or a string
    /// with units (`"100ms"`), also as `initial_backoff_ms`.
    #[serde(
        default = "default_initial_backoff",
        with = "crate::config::duration::ms",
        alias = "initial_backoff_ms"
    )]
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Default 10 s (serde as `initial_backoff`,
    /// also as `max_backoff_ms`).
    #[serde(
        default = "default_max_backoff",
        with = "crate::config::duration::ms",
        alias = "max_backoff_ms"
    )]
    pub max_backoff: Duration,
    /// Growth of the wait per retry. Default 2.0.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}
fn default_multiplier() -> f64 {
    2.0
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            multiplier: default_multiplier(),
        }
    }
}

impl RetryPolicy {
    /// `max_attempts` attempts in all (the first included; 1 disables retries), the
    /// default backoff (100 ms growing ×2 up to 10 s).
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    /// The same policy waiting `initial` before the first retry and at most `max`
    /// between attempts.
    pub fn with_backoff(self, initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            initial_backoff: initial,
            max_backoff: max,
            ..self
        }
    }

    /// The same policy with the wait growing by `multiplier` per retry (values below
    /// 1 count as 1).
    pub fn with_multiplier(self, multiplier: f64) -> Self {
        RetryPolicy { multiplier, ..self }
    }

    /// The wait before attempt `attempt + 1` after `attempt` failed attempts (≥ 1),
    /// with jitter drawn from `jitter` (a uniform value in `[0, 1)`).
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1) as i32);
        let full = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(full * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
    }
}

/// The dead-letter queue (`FailureConfig::dead_letter`, CLI `--dead-letter-topic`).
///
/// A record that failed permanently, exhausted its attempts or panicked is produced
/// to `topic` with its original key, value and headers plus `tidemark-src-topic`,
/// `tidemark-src-partition`, `tidemark-src-offset`, `tidemark-error` and
/// `tidemark-attempts`; it counts complete once that produce is acknowledged
/// (under exactly-once, inside the transaction). Without a dead-letter queue such a
/// record stops the pipeline at its committable offset.
///
/// `#[non_exhaustive]`: build it with [`DeadLetterConfig::new`] and
/// [`with_max_consecutive`](DeadLetterConfig::with_max_consecutive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeadLetterConfig {
    /// The dead-letter topic (created with the input's partition count by the CLI
    /// when missing).
    pub topic: String,
    /// The guard against dead-lettering a whole topic after a bad deploy: this many
    /// dead letters in a row, with no record completing in between, stop the
    /// pipeline at its committable offset with
    /// [`Error::DeadLetterLimit`](crate::Error::DeadLetterLimit). Default 1000.
    #[serde(default = "default_max_consecutive")]
    pub max_consecutive: u64,
}

fn default_max_consecutive() -> u64 {
    1_000
}

impl DeadLetterConfig {
    /// Dead letters to `topic`, with the default guard.
    pub fn new(topic: impl Into<String>) -> Self {
        DeadLetterConfig {
            topic: topic.into(),
            max_consecutive: default_max_consecutive(),
        }
    }

    /// The same, stopping after `n` dead letters in a row with no record completing
    /// in between ([`Error::DeadLetterLimit`](crate::Error::DeadLetterLimit)).
    pub fn with_max_consecutive(self, n: u64) -> Self {
        DeadLetterConfig {
            max_consecutive: n,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let r = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
        };
        assert_eq!(r.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(r.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(r.backoff(3, 0.0), Duration::from_millis(200));
        assert_eq!(r.backoff(9, 1.0), Duration::from_millis(1_000));
    }
}
