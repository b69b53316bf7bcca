//! The user's side of tidemark: the [`Processor`] trait and its error type.

use crate::record::{Outputs, Record};
use crate::topic_partition::TopicPartition;

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
#[derive(Debug, Clone)]
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
    /// The error that caused this failure, when it was made from one
    /// ([`retriable_from`](Self::retriable_from), [`permanent_from`](Self::permanent_from)):
    /// this error's [`source`](std::error::Error::source), so it stays in the chain of
    /// [`Error::Processor`](crate::Error::Processor), and its messages go into the
    /// dead letter's `tidemark-error` header. Downcast it to get your type back.
    pub source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::fmt::Display for ProcessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.headline())
    }
}

impl std::error::Error for ProcessError {
    /// The user's own error (not the `Arc` around it), so it downcasts.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl ProcessError {
    /// A failure that may succeed when retried.
    pub fn retriable(message: impl Into<String>) -> Self {
        ProcessError {
            kind: FailureKind::Retriable,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// A failure that never will.
    pub fn permanent(message: impl Into<String>) -> Self {
        ProcessError {
            kind: FailureKind::Permanent,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// A retriable failure caused by `error`: its message is `error`'s, and `error`
    /// stays reachable as [`source`](Self::source) (e.g.
    /// `client.get(url).await.map_err(ProcessError::retriable_from)?`).
    pub fn retriable_from(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ProcessError {
            source: Some(std::sync::Arc::new(error)),
            ..ProcessError::retriable(String::new())
        }
        .with_source_message()
    }

    /// A permanent failure caused by `error` (e.g. a payload that does not parse:
    /// `serde_json::from_slice(payload).map_err(ProcessError::permanent_from)?`).
    pub fn permanent_from(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ProcessError {
            source: Some(std::sync::Arc::new(error)),
            ..ProcessError::permanent(String::new())
        }
        .with_source_message()
    }

    /// What `Display` prints: the kind and the message, or only the kind when the
    /// message is the source's (the chain prints it next, once).
    fn headline(&self) -> String {
        match &self.source {
            Some(_) => format!("{:?} failure", self.kind),
            None => format!("{:?} failure: {}", self.kind, self.message),
        }
    }

    /// The message: the source's own text.
    fn with_source_message(mut self) -> Self {
        if let Some(source) = &self.source {
            self.message = source.to_string();
        }
        self
    }

    /// `message` and the messages of the source chain below it, joined with ": "
    /// (what a dead letter's `tidemark-error` header carries).
    pub fn chain_message(&self) -> String {
        let mut out = self.message.clone();
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().and_then(|s| s.source());
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
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

/// A [`Processor`] made of a closure, for pipelines whose processing is one function:
///
/// ```
/// use tidemark::{Outputs, ProcessError};
///
/// let upper = tidemark::from_fn(|record: &tidemark::Record| {
///     let text = std::str::from_utf8(record.payload.as_deref().unwrap_or_default())
///         .map_err(ProcessError::permanent_from)?;
///     Ok(Outputs::one(record.key.clone(), text.to_uppercase().into_bytes()))
/// });
/// # let _ = tidemark::Pipeline::new(tidemark::Config::new("b:9092", "g", ["t"]), upper);
/// ```
pub fn from_fn<F>(process: F) -> FromFn<F>
where
    F: Fn(&Record) -> ProcessResult + Send + Sync + 'static,
{
    FromFn(process)
}

/// The [`Processor`] of [`from_fn`]: calls the closure for each record.
#[derive(Debug, Clone, Copy)]
pub struct FromFn<F>(F);

impl<F> Processor for FromFn<F>
where
    F: Fn(&Record) -> ProcessResult + Send + Sync + 'static,
{
    fn process(&self, record: &Record) -> ProcessResult {
        (self.0)(record)
    }
}

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
    /// returns one result per record, in the batch's order (the engine checks the
    /// length and treats a missing result as a permanent failure). A batch is one
    /// *layer* of a task (see "Ordering" in the README): it never holds two records of
    /// one lane (key under `ProcessingOrder::Key`, partition under
    /// `ProcessingOrder::Partition`), its records are in offset order, and the next
    /// layer starts only when this call has returned. Override it to amortise
    /// per-batch costs (one database round trip per batch, say).
    ///
    /// The default is [`Batch::process_each`] with [`process`](Processor::process):
    /// the records run in parallel on the pool, and each one completes (its outputs
    /// sent, then acknowledged) the moment its own `process` returns `Ok`, so a slow
    /// record holds back no other one. That early completion is a capability of the
    /// [`Batch`] the engine hands this call, bound to exactly its records: it is
    /// never found through a thread-local or a global.
    ///
    /// **What an override may do.** Anything with the records: filter, reorder,
    /// split, hand them to an inner processor, from this thread or another. The rules:
    ///
    /// * An override that returns its own results completes its batch together: no
    ///   record of it is complete, nor any output sent, before the call returns, so
    ///   its slowest record holds back the committed offset and the offset map of the
    ///   others.
    /// * Passing the engine's `batch` itself on (`self.inner.process_batch(batch)`)
    ///   keeps the inner default's early completion: records the inner completes are
    ///   complete with *their* outputs at once, and the results returned for them are
    ///   `Ok` with no outputs, which the engine ignores (a decorator that wants to
    ///   change outputs must build its own batch instead; a changed result for an
    ///   early-completed record is logged as an error and ignored).
    /// * Any other slice — a filtered copy, a reversed one, a sub-batch — is a
    ///   detached [`Batch::new`]: the inner default runs it in parallel all the same,
    ///   without early completion, and its results are the override's to place.
    ///   A result is attributed only by its position in what this call returns.
    ///
    /// A panic in `process` is caught by the default and fails that record alone
    /// (a permanent [`ProcessError`] carrying the panic message); a panic in an
    /// overriding `process_batch` fails every record of the batch not completed yet.
    ///
    /// ```
    /// use tidemark::{Batch, Outputs, ProcessResult, Processor, Record};
    ///
    /// /// Drops every third record; the inner processor sees only the rest.
    /// struct Filter<P>(P);
    ///
    /// impl<P: Processor> Processor for Filter<P> {
    ///     fn process(&self, r: &Record) -> ProcessResult {
    ///         if r.offset % 3 == 0 { Ok(Outputs::none()) } else { self.0.process(r) }
    ///     }
    ///     fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
    ///         let keep: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].offset % 3 != 0).collect();
    ///         let inner: Vec<Record> = keep.iter().map(|&i| batch[i].clone()).collect();
    ///         let mut results = self.0.process_batch(Batch::new(&inner)).into_iter();
    ///         let mut out: Vec<ProcessResult> = batch.iter().map(|_| Ok(Outputs::none())).collect();
    ///         for &i in &keep { out[i] = results.next().unwrap(); }
    ///         out
    ///     }
    /// }
    /// ```
    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        batch.process_each(|record| self.process(record))
    }

    /// Partitions were assigned to this member (a rebalance; a free consumer's start):
    /// called on the poll thread before any of their records is processed. Build
    /// per-partition state here. The default does nothing.
    ///
    /// Every hook runs on the poll thread while the engine waits, inside the
    /// rebalance (the group's `max.poll.interval.ms` keeps running): keep it short.
    /// A hook that panics stops the run with [`Error::Hook`](crate::Error::Hook), and
    /// what `partitions_revoked` or `stopping` was to flush is not committed (the next
    /// owner processes those records again).
    fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// Partitions leave this member in an orderly way (a rebalance revokes them, or
    /// the pipeline stops): called once their in-flight records have drained (or
    /// `drain_timeout` passed) and **before their final synchronous commit**, so
    /// state flushed here is covered by that commit — what the commit says is done
    /// is flushed, and a crash before the commit re-processes the records the
    /// flushed state came from (at-least-once). The default does nothing.
    fn partitions_revoked(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// The assignment was lost (the session timed out, a network cut; KIP-848: a
    /// fenced member epoch): another member may own these partitions already and
    /// nothing is committed for them, so drop their state without flushing it — the
    /// next owner processes their records again from the committed offset. The
    /// default does nothing.
    fn partitions_lost(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// The pipeline stops (its shutdown handle, a signal, the idle stop, an error):
    /// called once, after every in-flight record drained and after
    /// [`partitions_revoked`](Self::partitions_revoked) for the partitions still
    /// assigned, before the final commit; no hook is called after it. Release what
    /// is shared across partitions here. The default does nothing.
    fn stopping(&self) {}
}

/// The records of one `process_batch` call (a layer of a task: one partition's
/// records, in offset order), and — when the engine made it — the capability to
/// complete each of them the moment its result is known.
///
/// Dereferences to `[Record]`. The engine's batch is bound to exactly the records it
/// was made for and is consumed by the call it is passed to, so a result can never be
/// attributed to another record: an override that passes on anything else passes a
/// detached [`Batch::new`], whose records complete with the override's results.
pub struct Batch<'a> {
    records: &'a [Record],
    /// The engine's early completion for these very records (`None`: detached).
    early: Option<&'a crate::engine::execution::worker::Reporter<'a>>,
}

impl<'a> Batch<'a> {
    /// A detached batch over `records`: [`process_each`](Batch::process_each) still
    /// runs them in parallel on the pool it is called from (in order on any other
    /// thread), but nothing completes before the results are returned to the engine by
    /// the outermost `process_batch`, at their positions there.
    pub fn new(records: &'a [Record]) -> Self {
        Batch {
            records,
            early: None,
        }
    }

    /// The engine's batch over `reporter`'s records, completing them early.
    pub(crate) fn with_early_completion(
        reporter: &'a crate::engine::execution::worker::Reporter<'a>,
    ) -> Self {
        Batch {
            records: reporter.records(),
            early: Some(reporter),
        }
    }

    /// The records, in offset order (also reachable through `Deref`).
    pub fn records(&self) -> &'a [Record] {
        self.records
    }

    /// Runs `process` over every record, in parallel on the worker pool when called
    /// from one (records are claimed one at a time, so a slow record holds no other),
    /// and returns one result per record in the batch's order. A panic in `process`
    /// fails that record alone (a permanent [`ProcessError`] with the panic's message).
    ///
    /// On the engine's batch, each `Ok` record completes as soon as its `process`
    /// returns: its outputs go to the sink at once and its returned result is `Ok`
    /// with no outputs. On a detached batch, the results carry the outputs.
    pub fn process_each(
        self,
        process: impl Fn(&Record) -> ProcessResult + Sync,
    ) -> Vec<ProcessResult> {
        let early = self.early;
        if let Some(reporter) = early {
            reporter.claim();
        }
        crate::engine::execution::worker::claim_each(
            self.records,
            early.map(|r| r.busy),
            |i, record| match early {
                Some(reporter) => reporter.span(i).in_scope(|| {
                    let mut result = catch_panic("process", || process(record));
                    reporter.report(i, &mut result);
                    result
                }),
                None => catch_panic("process", || process(record)),
            },
        )
    }
}

impl std::ops::Deref for Batch<'_> {
    type Target = [Record];

    fn deref(&self) -> &[Record] {
        self.records
    }
}

impl<'a> From<&'a [Record]> for Batch<'a> {
    /// [`Batch::new`].
    fn from(records: &'a [Record]) -> Self {
        Batch::new(records)
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("records", &self.records.len())
            .field("early_completion", &self.early.is_some())
            .finish()
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

    fn process_batch(&self, batch: Batch<'_>) -> Vec<ProcessResult> {
        (**self).process_batch(batch)
    }

    fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        (**self).partitions_assigned(partitions)
    }

    fn partitions_revoked(&self, partitions: &[TopicPartition]) {
        (**self).partitions_revoked(partitions)
    }

    fn partitions_lost(&self, partitions: &[TopicPartition]) {
        (**self).partitions_lost(partitions)
    }

    fn stopping(&self) {
        (**self).stopping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("upstream said 503")]
    struct Upstream(#[source] std::io::Error);

    #[test]
    fn a_failure_from_an_error_keeps_it_as_its_source() {
        let e = ProcessError::retriable_from(Upstream(std::io::Error::other("connection reset")));
        assert_eq!(e.kind, FailureKind::Retriable);
        assert_eq!(e.message, "upstream said 503");
        assert_eq!(
            e.to_string(),
            "Retriable failure",
            "the chain prints the cause once"
        );
        let source = std::error::Error::source(&e).expect("the cause");
        assert!(source.downcast_ref::<Upstream>().is_some());
        assert_eq!(e.chain_message(), "upstream said 503: connection reset");
        let plain = ProcessError::permanent("bad payload");
        assert_eq!(plain.to_string(), "Permanent failure: bad payload");
        assert!(std::error::Error::source(&plain).is_none());
    }

    #[test]
    fn a_closure_is_a_processor() {
        let p = from_fn(|r: &Record| {
            if r.offset == 1 {
                Err(ProcessError::permanent("one"))
            } else {
                Ok(Outputs::none())
            }
        });
        assert!(p.process(&Record::new("t", 0, 0)).is_ok());
        assert!(p.process(&Record::new("t", 0, 1)).is_err());
    }
}
