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
    /// The failure's class, for a span's `error.type` (OpenTelemetry: low
    /// cardinality): `retriable` or `permanent` from the processor, `sink` or
    /// `dead_letter` from the producer.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn error_type(&self) -> &'static str {
        match self {
            FailureCause::Processor(e) => match e.kind {
                crate::FailureKind::Retriable => "retriable",
                crate::FailureKind::Permanent => "permanent",
            },
            FailureCause::Sink(_) => "sink",
            FailureCause::DeadLetter(_) => "dead_letter",
        }
    }

    /// The message a dead letter carries.
    pub(crate) fn message(&self) -> String {
        match self {
            FailureCause::Processor(e) => e.chain_message(),
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

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: std::time::Duration::from_millis(100),
        max_backoff: std::time::Duration::from_millis(1_000),
        multiplier: 2.0,
    };

    fn decide(policy: &mut FailurePolicy, cause: FailureCause, attempts: u32) -> FailureDecision {
        policy.on_failure(RecordFailure {
            topic: "t",
            partition: 1,
            offset: 7,
            cause: &cause,
            attempts,
        })
    }

    fn retriable() -> FailureCause {
        FailureCause::Processor(ProcessError::retriable("busy"))
    }

    fn permanent() -> FailureCause {
        FailureCause::Processor(ProcessError::permanent("bad"))
    }

    #[test]
    fn a_retriable_failure_waits_its_backoff_until_the_last_attempt() {
        let mut p = FailurePolicy::new(RETRY, None, true);
        for attempts in 1..3 {
            let FailureDecision::Retry(wait) = decide(&mut p, retriable(), attempts) else {
                panic!("attempt {attempts} not retried");
            };
            let full = RETRY.backoff(attempts, 1.0);
            assert!(
                wait >= full / 2 && wait <= full,
                "{wait:?} outside [{full:?}/2, {full:?}]"
            );
        }
        assert_eq!(decide(&mut p, retriable(), 3), FailureDecision::Stop);
        match p.take_error() {
            Some(Error::Processor {
                offset: 7, source, ..
            }) => assert_eq!(source.message, "busy"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_overrides_the_backoff() {
        let mut p = FailurePolicy::new(RETRY, None, true);
        let cause = FailureCause::Processor(
            ProcessError::retriable("429").retry_after(Duration::from_secs(7)),
        );
        assert_eq!(
            decide(&mut p, cause, 1),
            FailureDecision::Retry(Duration::from_secs(7))
        );
    }

    #[test]
    fn at_most_once_never_retries() {
        let mut p = FailurePolicy::new(RETRY, None, false);
        assert_eq!(decide(&mut p, retriable(), 1), FailureDecision::Stop);
    }

    #[test]
    fn permanent_failures_and_exhausted_retries_go_to_the_dead_letter_topic() {
        let mut p = FailurePolicy::new(RETRY, Some(DeadLetterConfig::new("dlq")), true);
        assert_eq!(decide(&mut p, permanent(), 1), FailureDecision::DeadLetter);
        assert_eq!(decide(&mut p, retriable(), 3), FailureDecision::DeadLetter);
        assert!(!p.stopped());
    }

    #[test]
    fn the_dead_letter_guard_stops_after_too_many_in_a_row_and_completions_reset_it() {
        let mut dlq = DeadLetterConfig::new("dlq");
        dlq.max_consecutive = 3;
        let mut p = FailurePolicy::new(RETRY, Some(dlq), true);
        assert_eq!(decide(&mut p, permanent(), 1), FailureDecision::DeadLetter);
        assert_eq!(decide(&mut p, permanent(), 1), FailureDecision::DeadLetter);
        p.completed();
        assert_eq!(decide(&mut p, permanent(), 1), FailureDecision::DeadLetter);
        assert_eq!(decide(&mut p, permanent(), 1), FailureDecision::DeadLetter);
        assert_eq!(decide(&mut p, permanent(), 1), FailureDecision::Stop);
        assert!(matches!(
            p.take_error(),
            Some(Error::DeadLetterLimit { count: 3, .. })
        ));
    }

    #[test]
    fn a_failed_output_stops_even_with_a_dead_letter_topic_and_so_does_all_after_a_stop() {
        let mut p = FailurePolicy::new(RETRY, Some(DeadLetterConfig::new("dlq")), true);
        let sink = FailureCause::Sink(rdkafka::error::KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
        ));
        assert_eq!(decide(&mut p, sink, 1), FailureDecision::Stop);
        assert_eq!(decide(&mut p, permanent(), 1), FailureDecision::Stop);
        assert!(matches!(
            p.take_error(),
            Some(Error::Sink { offset: 7, .. })
        ));
    }
}
