//! What runs on the rayon pool: a batch of one partition through the processor, its
//! outputs to the sink, and one completion message back to the poll thread.
//!
//! Workers never touch the consumer nor the tracker; they only send on the unbounded
//! completion channel, so they can never block on the poll thread (DESIGN.md
//! invariant 9).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use tidemark_offsets::Epoch;

use crate::processor::{ProcessError, Processor};
use crate::record::Record;
use crate::sink::Sink;

/// A batch of records of one partition, dispatched under one assignment epoch.
pub(crate) struct Batch {
    pub topic: Arc<str>,
    pub partition: i32,
    pub epoch: Epoch,
    /// Key + payload bytes of `records`.
    pub bytes: usize,
    pub records: Vec<Record>,
    /// The sink's transaction generation at dispatch (exactly-once; see `Sink::send`).
    pub generation: u64,
}

/// Why a record could not be completed.
#[derive(Debug, Clone)]
pub(crate) enum FailureCause {
    Processor(ProcessError),
    Sink(rdkafka::error::KafkaError),
}

/// The first failed record of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub offset: i64,
    pub cause: FailureCause,
}

/// Sent by a worker (or the sink's delivery callback) when a batch is done: the
/// offsets that completed and the first failure, if any.
#[derive(Debug)]
pub(crate) struct BatchDone {
    pub topic: Arc<str>,
    pub partition: i32,
    pub epoch: Epoch,
    /// Key + payload bytes of the batch, free again.
    pub bytes: usize,
    pub completed: Vec<i64>,
    /// Offsets that failed and will never complete under this epoch.
    pub failed: Vec<i64>,
    /// The lowest failed offset and why.
    pub failure: Option<Failure>,
}

/// Runs `batch` through `processor`; sends one [`BatchDone`] on `done` once every
/// record is processed and every output acknowledged.
pub(crate) fn run_batch(
    processor: &dyn Processor,
    sink: Option<&Sink>,
    batch: Batch,
    done: Sender<BatchDone>,
) {
    let _span = tracing::trace_span!("batch", topic = %batch.topic, partition = batch.partition, records = batch.records.len()).entered();
    // A panic in an overriding `process_batch` fails the whole batch; the default
    // catches each record's own (see `Processor::process_batch`).
    let mut results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process_batch(&batch.records)
    }))
    .unwrap_or_else(|panic| {
        let message = crate::processor::panic_message(&*panic);
        tracing::error!(topic = %batch.topic, partition = batch.partition, %message, "process_batch panicked: failing its records");
        batch
            .records
            .iter()
            .map(|_| {
                Err(ProcessError::permanent(format!(
                    "process_batch panicked: {message}"
                )))
            })
            .collect()
    });
    if results.len() != batch.records.len() {
        tracing::error!(
            expected = batch.records.len(),
            got = results.len(),
            "process_batch returned the wrong number of results"
        );
        results.resize_with(batch.records.len(), || {
            Err(ProcessError::permanent(
                "process_batch returned no result for this record",
            ))
        });
    }

    let pending = Arc::new(PendingBatch {
        outstanding: AtomicUsize::new(1),
        state: Mutex::new(PendingState {
            completed: Vec::with_capacity(batch.records.len()),
            failed: Vec::new(),
            failure: None,
        }),
        topic: batch.topic.clone(),
        partition: batch.partition,
        epoch: batch.epoch,
        bytes: batch.bytes,
        done,
    });
    {
        let mut state = pending.state.lock();
        for (record, result) in batch.records.iter().zip(&results) {
            match result {
                Ok(_) => state.completed.push(record.offset),
                Err(e) => state.fail(record.offset, FailureCause::Processor(e.clone())),
            }
        }
    }
    if sink.is_none()
        && results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|o| !o.is_empty()))
    {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "the processor returned outputs but no sink is configured: they are dropped"
            )
        });
    }
    if let Some(sink) = sink {
        for (record, result) in batch.records.iter().zip(results) {
            if let Ok(outputs) = result {
                for output in outputs.0 {
                    pending.outstanding.fetch_add(1, Ordering::AcqRel);
                    sink.send(
                        record,
                        output,
                        Ack::new(pending.clone(), record.offset),
                        batch.generation,
                    );
                }
            }
        }
    }
    pending.release();
}

struct PendingState {
    completed: Vec<i64>,
    failed: Vec<i64>,
    failure: Option<Failure>,
}

impl PendingState {
    /// Records a failed offset; keeps the cause of the lowest one, where the watermark
    /// stops.
    fn fail(&mut self, offset: i64, cause: FailureCause) {
        if !self.failed.contains(&offset) {
            self.failed.push(offset);
        }
        if self.failure.as_ref().is_none_or(|f| offset < f.offset) {
            self.failure = Some(Failure { offset, cause });
        }
    }
}

/// A batch whose outputs are not all acknowledged yet.
pub(crate) struct PendingBatch {
    /// Outputs not yet acknowledged, + 1 while the worker is still sending.
    outstanding: AtomicUsize,
    state: Mutex<PendingState>,
    topic: Arc<str>,
    partition: i32,
    epoch: Epoch,
    bytes: usize,
    done: Sender<BatchDone>,
}

impl PendingBatch {
    fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut state = self.state.lock();
            let completed = std::mem::take(&mut state.completed);
            // The receiver is gone only when the pipeline has stopped: nothing to do.
            let _ = self.done.send(BatchDone {
                topic: self.topic.clone(),
                partition: self.partition,
                epoch: self.epoch,
                bytes: self.bytes,
                completed,
                failed: std::mem::take(&mut state.failed),
                failure: state.failure.take(),
            });
        }
    }
}

/// The acknowledgement owed for one output record of one input record.
pub(crate) struct Ack {
    batch: Arc<PendingBatch>,
    input_offset: i64,
}

impl Ack {
    fn new(batch: Arc<PendingBatch>, input_offset: i64) -> Self {
        Ack {
            batch,
            input_offset,
        }
    }

    /// The sink acknowledged (`Ok`) or finally failed (`Err`) this output.
    pub(crate) fn resolve(self, result: Result<(), rdkafka::error::KafkaError>) {
        if let Err(error) = result {
            let mut state = self.batch.state.lock();
            state.fail(self.input_offset, FailureCause::Sink(error));
            // A record with a failed output is not complete (invariant 3).
            let offset = self.input_offset;
            state.completed.retain(|o| *o != offset);
        }
        self.batch.release();
    }
}
