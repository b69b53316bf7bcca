//! The execution seam: where a dispatched task runs. A blocking [`Processor`] runs
//! on the worker pool ([`pool`](super::pool), [`worker`](super::worker)); an
//! [`AsyncProcessor`] runs on a tokio runtime, one task per record under a bound on
//! the records processed at once. Both complete records and end tasks the same way
//! ([`completion`](super::completion)): the poll thread cannot tell them apart.

use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::Semaphore;

use super::completion::{FailedRecord, PendingTask};
use super::failure::FailureCause;
use super::pool::Pool;
use super::scheduler::Task;
use super::sink::Sink;
use super::worker::{run_task, send_outputs};
use crate::async_processor::AsyncProcessor;
use crate::metrics::Shared;
use crate::processor::{panic_message, ProcessError, Processor};

/// What the pipeline runs: a blocking processor or an async one (type-erased).
#[derive(Clone)]
pub(crate) enum Work {
    Blocking(Arc<dyn Processor>),
    Async(Arc<dyn AsyncRunner>),
}

/// An async processor behind a trait object: spawns one task's run on a runtime.
pub(crate) trait AsyncRunner: Send + Sync {
    fn spawn(
        &self,
        handle: &Handle,
        task: Task,
        pending: Arc<PendingTask>,
        sink: Option<Arc<Sink>>,
        limit: Arc<Semaphore>,
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
        limit: Arc<Semaphore>,
    ) {
        handle.spawn(run_task_async(self.0.clone(), task, pending, sink, limit));
    }
}

/// Where tasks run during one `Pipeline::run`.
pub(crate) enum Execution {
    Threads {
        pool: Pool,
        processor: Arc<dyn Processor>,
    },
    Async {
        handle: Handle,
        runner: Arc<dyn AsyncRunner>,
        /// Permits for the records processed at once (`Config::concurrency`).
        limit: Arc<Semaphore>,
        /// The pipeline's own runtime (`None` with the user's `Handle`).
        runtime: Option<Runtime>,
    },
}

impl Execution {
    /// Starts running `work`: the worker pool of `workers` threads, or (async) the
    /// runtime behind `handle`, else a runtime of its own with `workers` threads.
    /// Errors when the OS refuses a thread.
    pub(crate) fn start(
        work: &Work,
        workers: usize,
        concurrency: usize,
        handle: Option<Handle>,
    ) -> std::io::Result<Execution> {
        Ok(match work {
            Work::Blocking(processor) => Execution::Threads {
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
                Execution::Async {
                    handle,
                    runner: runner.clone(),
                    limit: Arc::new(Semaphore::new(concurrency.max(1))),
                    runtime,
                }
            }
        })
    }

    /// Runs `task` (its records complete through `pending`).
    pub(crate) fn run(
        &self,
        task: Task,
        pending: Arc<PendingTask>,
        sink: Option<Arc<Sink>>,
        metrics: &Arc<Shared>,
    ) {
        match self {
            Execution::Threads { pool, processor } => {
                let processor = processor.clone();
                let metrics = metrics.clone();
                pool.spawn(move || {
                    let busy = &metrics.counters.worker_busy_ns;
                    run_task(&*processor, sink.as_deref(), task, pending, busy)
                });
            }
            Execution::Async {
                handle,
                runner,
                limit,
                ..
            } => runner.spawn(handle, task, pending, sink, limit.clone()),
        }
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if let Execution::Async { runtime, .. } = self {
            if let Some(runtime) = runtime.take() {
                // Records still running after the drain are abandoned (processed
                // again by the next owner), never waited for.
                runtime.shutdown_background();
            }
        }
    }
}

/// Runs `task` through the async `processor`, layer by layer: every record of a
/// layer is a tokio task (once a permit of `limit` is free), completing the moment
/// its future resolves `Ok` and its outputs are acknowledged; the next layer starts
/// when the whole layer has resolved; a lane stops at its first failure (the rest
/// of its chain comes back skipped).
async fn run_task_async<P: AsyncProcessor>(
    processor: Arc<P>,
    task: Task,
    pending: Arc<PendingTask>,
    sink: Option<Arc<Sink>>,
    limit: Arc<Semaphore>,
) {
    let layer = task.layer.max(1);
    let aborts = task.aborts;
    let records = Arc::new(task.records);
    let mut stopped = vec![false; layer];
    let mut base = 0;
    while base < records.len() {
        let end = (base + layer).min(records.len());
        let started = Instant::now();
        let mut running = Vec::with_capacity(end - base);
        let mut skipped = Vec::new();
        for position in base..end {
            if stopped[position - base] {
                skipped.push(records[position].clone());
                continue;
            }
            // Closed only when the runtime goes: then nothing more runs.
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (processor, records, pending, sink) = (
                processor.clone(),
                records.clone(),
                pending.clone(),
                sink.clone(),
            );
            running.push((
                position,
                tokio::spawn(async move {
                    let _permit = permit;
                    let record = &records[position];
                    let outputs = processor.process(record).await?;
                    send_outputs(&pending, sink.as_deref(), aborts, position, record, outputs);
                    Ok::<(), ProcessError>(())
                }),
            ));
        }
        let mut failed = Vec::new();
        for (position, handle) in running {
            let error = match handle.await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) if e.is_panic() => ProcessError::permanent(format!(
                    "process panicked: {}",
                    panic_message(&*e.into_panic())
                )),
                Err(_) => {
                    ProcessError::retriable("process was cancelled: the runtime is shutting down")
                }
            };
            stopped[position - base] = true;
            failed.push(FailedRecord {
                offset: records[position].offset,
                cause: FailureCause::Processor(error),
                record: Some(records[position].clone()),
            });
        }
        pending.processed(failed, skipped, started.elapsed());
        base = end;
    }
    pending.release();
}
