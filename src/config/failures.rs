//! What a failed record causes: [`FailureConfig`].

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::Error;
use crate::failures::{DeadLetterConfig, RetryPolicy};

/// What happens to a record whose processing fails. Part of [`Config`](crate::Config); every field
/// has a default (`FailureConfig::default()`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FailureConfig {
    /// Retries of retriable failures. Default: 3 attempts, 100 ms doubling up to 10 s.
    pub retry: RetryPolicy,
    /// Where records that cannot be processed go. Default: none (such a record
    /// stops the pipeline at its committable offset).
    pub dead_letter: Option<DeadLetterConfig>,
}

impl FailureConfig {
    /// At least one attempt, a backoff that can grow to its cap, and a dead-letter
    /// topic that is not an input.
    pub(super) fn validate(&self, inputs: &[String]) -> Result<(), Error> {
        if self.retry.max_attempts == 0 {
            return Err(invalid(
                "failures.retry.max_attempts",
                "must be at least 1 (1: no retries)",
            ));
        }
        if self.retry.initial_backoff > self.retry.max_backoff
            || self.retry.multiplier.is_nan()
            || self.retry.multiplier < 1.0
        {
            return Err(invalid(
                "failures.retry",
                "initial_backoff must not exceed max_backoff, and multiplier must be at least 1",
            ));
        }
        if let Some(dl) = &self.dead_letter {
            if dl.topic.trim().is_empty() || inputs.contains(&dl.topic) {
                return Err(invalid(
                    "failures.dead_letter.topic",
                    "must be set and differ from the input topics",
                ));
            }
            if dl.max_consecutive == 0 {
                return Err(invalid(
                    "failures.dead_letter.max_consecutive",
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}
