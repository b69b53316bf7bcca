//! The failure policy: what happens to a record whose processing or output failed.
//!
//! Every failed record reaches [`FailurePolicy::on_failure`] with its coordinates and
//! cause; the policy answers with a decision the driver applies. Today there is one
//! policy: stop at the committable offset (docs/DESIGN.md, invariant 4) — the run stops, what is in
//! flight drains, offsets are committed up to (never past) the failed record, and
//! `run` returns the failure. Retries and dead-lettering will be decisions here.

use crate::error::Error;
use crate::processor::ProcessError;

/// Why a record could not be completed.
#[derive(Debug, Clone)]
pub(crate) enum FailureCause {
    /// The processor returned an error (or panicked).
    Processor(ProcessError),
    /// An output could not be produced to the sink.
    Sink(rdkafka::error::KafkaError),
}

/// A failed record, with its coordinates.
#[derive(Debug, Clone)]
pub(crate) struct RecordFailure {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub cause: FailureCause,
}

/// What the driver does with a failed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureDecision {
    /// Stop the run; the record holds its partition's committable offset.
    Stop,
}

/// The policy in force; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct FailurePolicy {
    /// The first failure the run stopped on.
    stopped_on: Option<RecordFailure>,
}

impl FailurePolicy {
    /// Decides what happens to `failure`. The record stays delivered and incomplete
    /// in its tracker either way, so no commit can pass it.
    pub(crate) fn on_failure(&mut self, failure: RecordFailure) -> FailureDecision {
        tracing::warn!(
            topic = %failure.topic, partition = failure.partition, offset = failure.offset,
            cause = ?failure.cause, "record failed: stopping at the committable offset"
        );
        self.stopped_on.get_or_insert(failure);
        FailureDecision::Stop
    }

    /// True once the policy has decided to stop the run.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped_on.is_some()
    }

    /// The error `run` returns for the failure the run stopped on.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        let RecordFailure {
            topic,
            partition,
            offset,
            cause,
        } = self.stopped_on.take()?;
        Some(match cause {
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
                source,
            },
        })
    }
}
