//! The user's side of tidemark: the [`Processor`] trait and its error type.

use crate::record::{Outputs, Record};

/// Whether a failed record may succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A transient failure (a timeout, an unavailable dependency): trying again may
    /// succeed. Retried per `FailureConfig::retry`; once the attempts are exhausted it is
    /// dead-lettered, or the pipeline stops at the committable offset.
    Retriable,
    /// The record can never be processed (malformed input, a bug): it is
    /// dead-lettered at once (`FailureConfig::dead_letter`), or the pipeline stops at the
    /// committable offset.
    Permanent,
}

/// A processor's failure for one record.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?} failure: {message}")]
#[non_exhaustive]
pub struct ProcessError {
    /// Retriable or permanent.
    pub kind: FailureKind,
    /// Human-readable reason, reported with the record's coordinates (and in the
    /// dead letter's `tidemark-error` header).
    pub message: String,
    /// A retriable failure's own wait before the next attempt (e.g. a rate limit's
    /// `Retry-After`), instead of the retry policy's backoff.
    pub retry_after: Option<std::time::Duration>,
}

impl ProcessError {
    /// A failure that may succeed when retried.
    pub fn retriable(message: impl Into<String>) -> Self {
        ProcessError {
            kind: FailureKind::Retriable,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure that never will.
    pub fn permanent(message: impl Into<String>) -> Self {
        ProcessError {
            kind: FailureKind::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    /// This (retriable) failure asks to be retried after `wait`, not after the
    /// retry policy's backoff.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

/// The result of processing one record: its outputs for the sink, or why it failed.
pub type ProcessResult = Result<Outputs, ProcessError>;

/// User code that processes records. One instance is shared by every worker of the pool
/// (`&self`, `Send + Sync`), so keep per-record state local or behind your own sync.
///
/// tidemark calls [`process_batch`](Processor::process_batch) with the records of one
/// partition that may run together, on its worker pool; the default runs
/// [`process`](Processor::process) for each of them in parallel on that same pool. A
/// record counts complete only when `process` has returned `Ok` *and* every output it
/// returned has been acknowledged by the sink; only then can the committed offset
/// pass it. With the default `process_batch` each record completes on its own; with
/// an overriding one, when the call returns.
///
/// ```
/// use tidemark::{Outputs, ProcessError, Processor, ProcessResult, Record};
///
/// struct Uppercase;
///
/// impl Processor for Uppercase {
///     fn process(&self, record: &Record) -> ProcessResult {
///         let text = std::str::from_utf8(record.payload.as_deref().unwrap_or_default())
///             .map_err(|e| ProcessError::permanent(format!("not UTF-8: {e}")))?;
///         Ok(Outputs::one(record.key.clone(), text.to_uppercase().into_bytes()))
///     }
/// }
/// ```
pub trait Processor: Send + Sync + 'static {
    /// Processes one record. Called from a worker thread of the pool, possibly for
    /// several records of the same partition at once.
    fn process(&self, record: &Record) -> ProcessResult;

    /// Processes a batch of records of one partition that may run together and
    /// returns one result per record in the same order (the engine checks the length
    /// and treats a missing result as a permanent failure). A batch is one *layer* of
    /// a task (see "Ordering" in the README): it never holds two records of one
    /// lane (key under `ProcessingOrder::Key`, partition under
    /// `ProcessingOrder::Partition`), its records are in offset order, and the next
    /// layer starts only when this call has returned. Override it to amortise
    /// per-batch costs (one database round trip per batch, say).
    ///
    /// The default runs [`process`](Processor::process) over the records in
    /// parallel on the pool, and each record completes (its outputs sent, then
    /// acknowledged) the moment its own `process` returns `Ok`, so a slow record
    /// holds back no other one. **An overriding `process_batch` completes its batch
    /// together**: no record of it is complete, nor any output sent, before the
    /// call returns, so its slowest record holds back the committed offset and the
    /// offset map of the others.
    ///
    /// A panic in `process` is caught by the default and fails that record alone
    /// (a permanent [`ProcessError`] carrying the panic message); a panic in an
    /// overriding `process_batch` fails every record of the batch the same way.
    fn process_batch(&self, records: &[Record]) -> Vec<ProcessResult> {
        let reporter = crate::engine::worker::take_reporter();
        crate::engine::worker::claim_each(records, reporter.map(|r| r.busy), |i, r| {
            let mut result = catch_panic("process", || self.process(r));
            if let Some(reporter) = reporter {
                reporter.report(i, &mut result);
            }
            result
        })
    }
}

/// Runs `f`; a panic becomes a permanent [`ProcessError`] naming `what` panicked and
/// the panic's message (the panic hook has printed it already).
pub(crate) fn catch_panic<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, ProcessError>,
) -> Result<T, ProcessError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(ProcessError::permanent(format!(
            "{what} panicked: {}",
            panic_message(&*panic)
        )))
    })
}

/// The message of a panic payload (`&str` or `String`), else a placeholder.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

impl<P: Processor + ?Sized> Processor for std::sync::Arc<P> {
    fn process(&self, record: &Record) -> ProcessResult {
        (**self).process(record)
    }

    fn process_batch(&self, records: &[Record]) -> Vec<ProcessResult> {
        (**self).process_batch(records)
    }
}
