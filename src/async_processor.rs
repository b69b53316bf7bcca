//! Async processors: IO-bound work (an HTTP call, a database write, a cache) with
//! thousands of records in flight on a tokio runtime, instead of one blocked OS
//! thread per record.
//!
//! Implement [`AsyncProcessor`] and build the pipeline with
//! [`Pipeline::new_async`](crate::Pipeline::new_async). Each dispatched task (a
//! partition's or a key lane's records of one poll round) is one tokio task that
//! drives its records' `process` futures together; at most
//! [`Config::concurrency`](crate::Config::concurrency) records are processed at
//! once, whatever the number of runtime threads. The records of one task share a
//! runtime thread while they run, so a future must not block it. Everything else is
//! the engine's, as for a blocking [`Processor`](crate::Processor): ordering (a
//! layer's records run together, the next layer after them), retries with backoff
//! (the poll thread's timers: no thread waits), the dead-letter queue, the offset
//! map, the sink and exactly-once, back-pressure, drains, metrics. A future that
//! panics fails its record alone (a permanent [`ProcessError`] carrying the panic
//! message); records still running when the pipeline's own runtime shuts down
//! are abandoned, not completed (the next owner processes them).
//!
//! CPU-heavy steps inside an async processor must not block the runtime's threads:
//! hand them to a blocking pool with [`run_blocking`] (or
//! `tokio::task::spawn_blocking` yourself) and await the result.
//!
//! ```no_run
//! use tidemark::{AsyncProcessor, Outputs, ProcessError, ProcessResult, Record};
//!
//! struct Enrich;
//!
//! impl AsyncProcessor for Enrich {
//!     async fn process(&self, record: &Record) -> ProcessResult {
//!         // An IO call would go here, e.g. an HTTP request.
//!         tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//!         let payload = record.payload.clone().unwrap_or_default();
//!         // A CPU-heavy step off the runtime's threads.
//!         let digest = tidemark::run_blocking(move || payload.len()).await?;
//!         Ok(Outputs::one(record.key.clone(), digest.to_string().into_bytes()))
//!     }
//! }
//! ```

use std::future::Future;

use crate::processor::{panic_message, ProcessError, ProcessResult};
use crate::record::Record;
use crate::topic_partition::TopicPartition;

/// User code that processes records asynchronously. One instance is shared by every
/// record's task (`&self`, `Send + Sync`).
///
/// A record counts complete when its future resolves to `Ok` *and* every output it
/// returned is acknowledged by the sink, as for [`Processor`](crate::Processor).
pub trait AsyncProcessor: Send + Sync + 'static {
    /// Processes one record: its outputs for the sink, or why it failed
    /// (retriable errors are retried with backoff per [`FailureConfig::retry`](crate::FailureConfig::retry),
    /// permanent ones go to the dead-letter topic or stop the pipeline). The future
    /// must be `Send`: it runs as a task of a multi-threaded tokio runtime.
    fn process(&self, record: &Record) -> impl Future<Output = ProcessResult> + Send;

    /// The batch form, to amortise a round trip over many records (one multi-row
    /// `INSERT`, one bulk HTTP call): `Some(future)` processes `records` together and
    /// resolves to one result per record, in their order; `None` (the default) means
    /// "call [`process`](AsyncProcessor::process) per record".
    ///
    /// `records` is one *layer* of a dispatched task, as for
    /// [`Processor::process_batch`](crate::Processor::process_batch): records of one
    /// partition in offset order, never two of one lane (key under
    /// `ProcessingOrder::Key`, partition under `ProcessingOrder::Partition`), at most
    /// [`FlowConfig::max_batch_records`](crate::FlowConfig::max_batch_records) of them; the
    /// next layer starts only after this future resolved. The batch holds one
    /// permit of [`Config::concurrency`](crate::Config::concurrency) per record
    /// (all of them when it has more records than that) while it runs.
    ///
    /// **A batch completes together**: no record of it is complete, nor any output
    /// sent, before its future resolves, so its slowest record holds back the
    /// committed offset and the offset map of the others. Records without a result
    /// (fewer results than records) fail permanently, extra results are ignored; a
    /// panic while the future runs fails every record of the batch permanently
    /// (the panic's message in the [`ProcessError`]).
    fn process_batch(
        &self,
        records: &[Record],
    ) -> Option<impl Future<Output = Vec<ProcessResult>> + Send> {
        let _ = records;
        None::<std::future::Ready<Vec<ProcessResult>>>
    }

    /// Partitions were assigned: as
    /// [`Processor::partitions_assigned`](crate::Processor::partitions_assigned) (the
    /// hooks are plain functions run on the poll thread, not on the runtime).
    fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// Partitions leave in an orderly way, after their drain and before their final
    /// commit: as [`Processor::partitions_revoked`](crate::Processor::partitions_revoked).
    fn partitions_revoked(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// The assignment was lost, nothing is committed: as
    /// [`Processor::partitions_lost`](crate::Processor::partitions_lost).
    fn partitions_lost(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// The pipeline stops, before its final commit: as
    /// [`Processor::stopping`](crate::Processor::stopping).
    fn stopping(&self) {}
}

/// Runs the CPU-heavy `f` on tokio's blocking pool (`tokio::task::spawn_blocking`)
/// and awaits it, so the runtime's threads go on driving other records' IO. A panic
/// in `f` becomes a permanent [`ProcessError`] carrying its message.
///
/// Must be awaited inside a tokio runtime (as an [`AsyncProcessor`]'s future is).
pub async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProcessError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        if e.is_panic() {
            ProcessError::permanent(format!(
                "run_blocking panicked: {}",
                panic_message(&*e.into_panic())
            ))
        } else {
            ProcessError::retriable("run_blocking was cancelled: the runtime is shutting down")
        }
    })
}
