//! The failure policy: what happens to a record whose processing or output failed.
//!
//! Every failed record reaches [`FailurePolicy::on_failure`] with its coordinates,
//! cause and attempts so far; the policy answers with a decision the driver
//! applies (docs/DESIGN.md, invariant 4: the record holds its partition's
//! committable offset until it completes or is dead-lettered):
//!
//! - a `Retriable` processor error with attempts left → [`FailureDecision::Retry`]
//!   after the retry policy's backoff (or the error's own `retry_after`);
//! - otherwise, with a dead-letter queue → [`FailureDecision::DeadLetter`], unless
//!   the guard trips (`max_consecutive` dead letters in a row);
//! - a failed output, a failed dead letter, or no dead-letter queue →
//!   [`FailureDecision::Stop`]: the run stops, drains, and commits up to (never past)
//!   the record.

use std::time::Duration;

use crate::error::Error;
use crate::failures::{DeadLetterConfig, RetryPolicy};
use crate::processor::{FailureKind, ProcessError};

/// Why a record could not be completed.
#[derive(Debug, Clone)]
pub(crate) enum FailureCause {
    /// The processor returned an error (or panicked).
    Processor(ProcessError),
    /// An output could not be produced to the sink.
    Sink(rdkafka::error::KafkaError),
    /// The record could not be produced to the dead-letter topic.
    DeadLetter(rdkafka::error::KafkaError),
}

impl FailureCause {
    /// The message a dead letter carries.
    pub(crate) fn message(&self) -> String {
        match self {
            FailureCause::Processor(e) => e.message.clone(),
            FailureCause::Sink(e) | FailureCause::DeadLetter(e) => e.to_string(),
        }
    }
}

/// A failed record, with its coordinates.
#[derive(Debug, Clone)]
pub(crate) struct RecordFailure<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub cause: &'a FailureCause,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// What the driver does with a failed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureDecision {
    /// Run it again after this long.
    Retry(Duration),
    /// Produce it to the dead-letter topic; it completes when that is acknowledged.
    DeadLetter,
    /// Stop the run; the record holds its partition's committable offset.
    Stop,
}

/// The policy in force; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct FailurePolicy {
    retry: RetryPolicy,
    dead_letter: Option<DeadLetterConfig>,
    /// Dead letters since a record last completed.
    consecutive: u64,
    /// Why the run stops, once the policy decided so.
    stop: Option<Error>,
}

impl FailurePolicy {
    /// The policy for `retry` and `dead_letter`. `retries`: false under at-most-once,
    /// where a record is never processed twice.
    pub(crate) fn new(
        retry: RetryPolicy,
        dead_letter: Option<DeadLetterConfig>,
        retries: bool,
    ) -> Self {
        let mut retry = retry;
        if !retries {
            retry.max_attempts = 1;
        }
        FailurePolicy {
            retry,
            dead_letter,
            consecutive: 0,
            stop: None,
        }
    }

    /// Decides what happens to `failure`.
    pub(crate) fn on_failure(&mut self, failure: RecordFailure<'_>) -> FailureDecision {
        let RecordFailure {
            topic,
            partition,
            offset,
            cause,
            attempts,
        } = failure;
        if self.stop.is_some() {
            return FailureDecision::Stop;
        }
        if let FailureCause::Processor(e) = cause {
            if e.kind == FailureKind::Retriable && attempts < self.retry.max_attempts {
                let wait = e
                    .retry_after
                    .unwrap_or_else(|| self.retry.backoff(attempts, rand::random::<f64>()));
                tracing::debug!(topic, partition, offset, attempts, wait_ms = wait.as_millis() as u64, message = %e.message, "retrying");
                return FailureDecision::Retry(wait);
            }
            if let Some(dl) = &self.dead_letter {
                self.consecutive += 1;
                if self.consecutive < dl.max_consecutive {
                    tracing::warn!(topic, partition, offset, attempts, message = %e.message, dlq = %dl.topic, "dead-lettering");
                    return FailureDecision::DeadLetter;
                }
                tracing::error!(
                    topic,
                    partition,
                    offset,
                    consecutive = self.consecutive,
                    "dead-letter guard tripped: stopping"
                );
                self.stop = Some(Error::DeadLetterLimit {
                    count: self.consecutive,
                    topic: topic.to_string(),
                    partition,
                    offset,
                });
                return FailureDecision::Stop;
            }
        }
        tracing::warn!(
            topic,
            partition,
            offset,
            attempts,
            ?cause,
            "record failed: stopping at the committable offset"
        );
        let (topic, cause) = (topic.to_string(), cause.clone());
        self.stop = Some(match cause {
            FailureCause::Processor(source) => Error::Processor {
                topic,
                partition,
                offset,
                source,
            },
            FailureCause::Sink(source) => Error::Sink {
                topic,
                partition,
                offset,
                source: source.into(),
            },
            FailureCause::DeadLetter(source) => Error::DeadLetter {
                topic,
                partition,
                offset,
                source: source.into(),
            },
        });
        FailureDecision::Stop
    }

    /// Records completed: the dead-letter guard's count starts again.
    pub(crate) fn completed(&mut self) {
        self.consecutive = 0;
    }

    /// True once the policy has decided to stop the run.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.is_some()
    }

    /// The error `run` returns for what the run stopped on.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.stop.take()
    }
}
