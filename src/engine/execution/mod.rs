//! The execution seam: where a dispatched task runs. A blocking [`Processor`] runs
//! on the worker pool ([`pool`], [`worker`]); an
//! [`AsyncProcessor`] runs on a tokio runtime, one tokio task per dispatched task
//! driving its records' futures (or one batch future per layer), under a bound on
//! the records processed at once. Both complete records and end tasks the same way
//! ([`completion`](crate::engine::completion)): the poll thread cannot tell them apart.

pub(in crate::engine) mod layers;
pub(in crate::engine) mod pool;
pub(crate) mod worker;

use std::sync::Arc;
use std::time::Instant;

use std::panic::AssertUnwindSafe;
use tokio::runtime::{Handle, Runtime};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::async_processor::AsyncProcessor;
use crate::engine::completion::failure::FailureCause;
use crate::engine::completion::progress::{FailedRecord, PendingTask};
use crate::engine::execution::layers::{LayerStep, LayerWalk};
use crate::engine::execution::pool::Pool;
use crate::engine::execution::worker::{run_task, send_outputs};
use crate::engine::observation::trace::{RecordSpan, Tracer};
use crate::engine::scheduling::scheduler::Task;
use crate::engine::seams::sink::Sink;
use crate::metrics::Shared;
use crate::processor::{panic_message, ProcessError, Processor};
use crate::record::Record;
use crate::topic_partition::TopicPartition;

/// What the pipeline runs: a blocking processor or an async one (type-erased).
#[derive(Clone)]
pub(crate) enum Work {
    Blocking(Arc<dyn Processor>),
    Async(Arc<dyn AsyncRunner>),
}

/// A processor's lifecycle hooks behind a trait object
/// ([`Processor::partitions_assigned`] and the others), for the poll thread.
pub(crate) trait Hooks: Send + Sync {
    fn partitions_assigned(&self, partitions: &[TopicPartition]);
    fn partitions_revoked(&self, partitions: &[TopicPartition]);
    fn partitions_lost(&self, partitions: &[TopicPartition]);
    fn stopping(&self);
}

/// The hooks of whichever kind of processor the pipeline runs.
impl Hooks for Work {
    fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        match self {
            Work::Blocking(p) => p.partitions_assigned(partitions),
            Work::Async(r) => r.partitions_assigned(partitions),
        }
    }
    fn partitions_revoked(&self, partitions: &[TopicPartition]) {
        match self {
            Work::Blocking(p) => p.partitions_revoked(partitions),
            Work::Async(r) => r.partitions_revoked(partitions),
        }
    }
    fn partitions_lost(&self, partitions: &[TopicPartition]) {
        match self {
            Work::Blocking(p) => p.partitions_lost(partitions),
            Work::Async(r) => r.partitions_lost(partitions),
        }
    }
    fn stopping(&self) {
        match self {
            Work::Blocking(p) => p.stopping(),
            Work::Async(r) => r.stopping(),
        }
    }
}

impl<P: AsyncProcessor> Hooks for AsyncWork<P> {
    fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        self.0.partitions_assigned(partitions)
    }
    fn partitions_revoked(&self, partitions: &[TopicPartition]) {
        self.0.partitions_revoked(partitions)
    }
    fn partitions_lost(&self, partitions: &[TopicPartition]) {
        self.0.partitions_lost(partitions)
    }
    fn stopping(&self) {
        self.0.stopping()
    }
}

/// An async processor behind a trait object: spawns one task's run on a runtime.
pub(crate) trait AsyncRunner: Hooks {
    fn spawn(
        &self,
        handle: &Handle,
        task: Task,
        pending: Arc<PendingTask>,
        sink: Option<Arc<Sink>>,
        tracer: Arc<Tracer>,
        limit: Arc<Limit>,
    );
}

/// The [`AsyncRunner`] of processor `P`.
pub(crate) struct AsyncWork<P>(pub Arc<P>);

impl<P: AsyncProcessor> AsyncRunner for AsyncWork<P> {
    fn spawn(
        &self,
        handle: &Handle,
        task: Task,
        pending: Arc<PendingTask>,
        sink: Option<Arc<Sink>>,
        tracer: Arc<Tracer>,
        limit: Arc<Limit>,
    ) {
        handle.spawn(run_task_async(
            self.0.clone(),
            task,
            pending,
            sink,
            tracer,
            limit,
        ));
    }
}

/// The bound on the records an async processor processes at once: one permit
/// each, `total` (`Config::concurrency`) in all.
pub(crate) struct Limit {
    semaphore: Arc<Semaphore>,
    total: usize,
}

/// Where tasks run during one `Pipeline::run`, and the records' spans.
pub(crate) struct Execution {
    on: On,
    tracer: Arc<Tracer>,
}

/// The pool or the runtime.
enum On {
    Threads {
        pool: Pool,
        processor: Arc<dyn Processor>,
    },
    Async {
        handle: Handle,
        runner: Arc<dyn AsyncRunner>,
        /// The records processed at once (`Config::concurrency`).
        limit: Arc<Limit>,
        /// The pipeline's own runtime (`None` with the user's `Handle`).
        runtime: Option<Runtime>,
    },
}

impl Execution {
    /// Starts running `work`: the worker pool of `workers` threads, or (async) the
    /// runtime behind `handle`, else a runtime of its own with `workers` threads;
    /// records get their spans from `tracer`. Errors when the OS refuses a thread.
    pub(crate) fn start(
        work: &Work,
        workers: usize,
        concurrency: usize,
        handle: Option<Handle>,
        tracer: Arc<Tracer>,
    ) -> std::io::Result<Execution> {
        let on = match work {
            Work::Blocking(processor) => On::Threads {
                pool: Pool::new(workers)?,
                processor: processor.clone(),
            },
            Work::Async(runner) => {
                let (runtime, handle) = match handle {
                    Some(handle) => (None, handle),
                    None => {
                        let runtime = tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(workers.max(1))
                            .thread_name("tidemark-async")
                            .enable_all()
                            .build()?;
                        let handle = runtime.handle().clone();
                        (Some(runtime), handle)
                    }
                };
                On::Async {
                    handle,
                    runner: runner.clone(),
                    limit: Arc::new(Limit {
                        semaphore: Arc::new(Semaphore::new(concurrency.max(1))),
                        total: concurrency.max(1),
                    }),
                    runtime,
                }
            }
        };
        Ok(Execution { on, tracer })
    }

    /// Runs `task` (its records complete through `pending`).
    pub(crate) fn run(
        &self,
        task: Task,
        pending: Arc<PendingTask>,
        sink: Option<Arc<Sink>>,
        metrics: &Arc<Shared>,
    ) {
        let tracer = self.tracer.clone();
        match &self.on {
            On::Threads { pool, processor } => {
                let processor = processor.clone();
                let metrics = metrics.clone();
                pool.spawn(move || {
                    let busy = &metrics.counters.worker_busy_ns;
                    run_task(&*processor, sink.as_deref(), &tracer, task, pending, busy)
                });
            }
            On::Async {
                handle,
                runner,
                limit,
                ..
            } => runner.spawn(handle, task, pending, sink, tracer, limit.clone()),
        }
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if let On::Async { runtime, .. } = &mut self.on {
            if let Some(runtime) = runtime.take() {
                // Records still running after the drain are abandoned (processed
                // again by the next owner), never waited for.
                runtime.shutdown_background();
            }
        }
    }
}

/// Runs `task` through the async `processor`, layer by layer, inside this one tokio
/// task: a layer's records are futures driven together (`FuturesUnordered`), each
/// started once a permit of `limit` is free and completing the moment it resolves
/// `Ok` and its outputs are acknowledged; the next layer starts when the whole
/// layer has resolved; a lane stops at its first failure (the rest of its chain
/// comes back skipped). A panicking future fails its record alone (permanent).
///
/// Why not a tokio task per record: spawning, scheduling and joining one cost
/// ~25 % of the CPU of 1 ms IO-bound work at concurrency 4,096 on 2 cores (perf:
/// `OwnedTasks` bind/remove, run-queue pushes, the task's allocation), and that
/// work is CPU-bound there (BENCHMARKS.md, "IO-bound work beside Confluent's
/// Parallel Consumer"). The records of one task now share a runtime thread while
/// they run; tasks (partitions, key lanes) still spread over all of them, and a
/// CPU-heavy step belongs in `run_blocking` anyway.
async fn run_task_async<P: AsyncProcessor>(
    processor: Arc<P>,
    task: Task,
    pending: Arc<PendingTask>,
    sink: Option<Arc<Sink>>,
    tracer: Arc<Tracer>,
    limit: Arc<Limit>,
) {
    let aborts = task.aborts;
    let records = task.records;
    let mut walk = LayerWalk::new(&records, task.layer);
    while let Some(step) = walk.next_layer() {
        let started = Instant::now();
        let mut failed = Vec::new();
        let (processor, pending, sink, records, tracer) =
            (&*processor, &pending, sink.as_deref(), &records, &*tracer);
        match run_batch(processor, &step, pending, sink, tracer, aborts, &limit).await {
            Batched::Closed => return,
            Batched::Done(failures) => {
                for (position, failure) in failures {
                    walk.fail(position);
                    failed.push(failure);
                }
                pending.processed(failed, step.skipped, started.elapsed());
                continue;
            }
            Batched::No => {}
        }
        let spans = tracer.spans(&step.records);
        let mut running = FuturesUnordered::new();
        // `j`: the record's index in the layer's live records; `position`: in the task.
        let start = |(j, position): (usize, usize), permit: OwnedSemaphorePermit| {
            let record = &records[position];
            let span = RecordSpan::at(&spans, j);
            let future = span.instrument(processor.process(record));
            AssertUnwindSafe(async move {
                let _permit = permit;
                let outputs = future.await?;
                send_outputs(pending, sink, aborts, position, record, outputs, span);
                Ok::<(), ProcessError>(())
            })
            .catch_unwind()
            .map(move |outcome| (j, position, outcome))
        };
        let mut live = step.live.iter().copied().enumerate().peekable();
        loop {
            // Start what a free permit allows; wait for a permit or a record of
            // this layer, whichever comes first.
            let outcome = if let Some(&next) = live.peek() {
                match limit.semaphore.clone().try_acquire_owned() {
                    Ok(permit) => {
                        running.push(start(next, permit));
                        live.next();
                        continue;
                    }
                    // Closed only when the runtime goes: then nothing more runs.
                    Err(TryAcquireError::Closed) => return,
                    Err(TryAcquireError::NoPermits) => {}
                }
                tokio::select! {
                    permit = limit.semaphore.clone().acquire_owned() => {
                        let Ok(permit) = permit else { return };
                        running.push(start(next, permit));
                        live.next();
                        continue;
                    }
                    Some(outcome) = running.next(), if !running.is_empty() => outcome,
                }
            } else {
                match running.next().await {
                    Some(outcome) => outcome,
                    None => break,
                }
            };
            let (j, position, outcome) = outcome;
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(panic) => {
                    ProcessError::permanent(format!("process panicked: {}", panic_message(&*panic)))
                }
            };
            walk.fail(position);
            failed.push(FailedRecord {
                offset: records[position].offset,
                cause: FailureCause::Processor(error),
                record: Some(records[position].clone()),
                span: RecordSpan::at(&spans, j).handle(),
            });
        }
        drop(running);
        pending.processed(failed, step.skipped, started.elapsed());
    }
    pending.release();
}

/// What [`run_batch`] did with a layer.
enum Batched {
    /// The processor has no batch form: nothing ran.
    No,
    /// The batch ran: the records that failed (their position in the task),
    /// every other live record has sent its outputs.
    Done(Vec<(usize, FailedRecord)>),
    /// The runtime is going: nothing more runs.
    Closed,
}

/// Runs a layer's live records through the processor's batch form, if it has one,
/// holding one permit of `limit` per record (at most all of them) while it runs.
/// Each record has its span from the call to its result (one future covers them
/// all, so none is entered: the user's spans inside the batch are not nested).
async fn run_batch<P: AsyncProcessor>(
    processor: &P,
    step: &LayerStep<'_>,
    pending: &Arc<PendingTask>,
    sink: Option<&Sink>,
    tracer: &Tracer,
    aborts: u64,
    limit: &Limit,
) -> Batched {
    let batch: &[Record] = &step.records;
    let Some(future) = processor.process_batch(batch) else {
        return Batched::No;
    };
    if batch.is_empty() {
        return Batched::Done(Vec::new());
    }
    let mut spans = tracer.spans(batch);
    let permits = batch.len().min(limit.total) as u32;
    let Ok(_permits) = limit.semaphore.clone().acquire_many_owned(permits).await else {
        return Batched::Closed;
    };
    let results = match AssertUnwindSafe(future).catch_unwind().await {
        Ok(results) => results,
        Err(panic) => {
            let error = ProcessError::permanent(format!(
                "process_batch panicked: {}",
                panic_message(&*panic)
            ));
            batch.iter().map(|_| Err(error.clone())).collect()
        }
    };
    if results.len() < batch.len() {
        tracing::error!(
            expected = batch.len(),
            got = results.len(),
            "process_batch returned too few results: failing the records without one"
        );
    }
    let mut results = results.into_iter();
    let mut failed = Vec::new();
    for (j, (&position, record)) in step.live.iter().zip(batch).enumerate() {
        let error = match results.next() {
            Some(Ok(outputs)) => {
                let span = RecordSpan::at(&spans, j);
                send_outputs(pending, sink, aborts, position, record, outputs, span);
                continue;
            }
            Some(Err(e)) => e,
            None => ProcessError::permanent("process_batch returned no result for this record"),
        };
        failed.push((
            position,
            FailedRecord {
                offset: record.offset,
                cause: FailureCause::Processor(error),
                record: Some(record.clone()),
                span: RecordSpan::take(&mut spans, j),
            },
        ));
    }
    Batched::Done(failed)
}
