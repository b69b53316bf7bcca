//! The engine: one poll thread owning the consumer and all offset state, a rayon pool
//! running the processor, completions coming back over a channel.

mod committer;
pub(crate) mod context;
mod flow;
pub(crate) mod partitions;
mod start;
pub(crate) mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use self::committer::{CommitRoute, Committer};
use self::context::{OffsetTarget, PipelineContext, Shared};
use self::flow::Limits;
use self::partitions::{Partitions, RecordFailure};
use self::worker::{run_batch, FailureCause};
use crate::commit::{CommitCallback, CommitEvent, CommitHandle, CommitPolicy, CommitRequest};
use crate::config::{Config, Delivery, SinkConfig};
use crate::error::Error;
use crate::offset_store::OffsetStore;
use crate::processor::Processor;
use crate::shutdown::{Progress, ShutdownHandle};
use crate::sink::Sink;

/// Poll timeout while every partition is paused for back-pressure.
const PRESSED_POLL_TIMEOUT: Duration = Duration::from_millis(5);

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Records completed (processed and, with a sink, acknowledged) by this run.
    pub records: u64,
    /// Wall time from start-up to the final commit.
    pub elapsed: Duration,
    /// Time from the first dispatched record to the last completed one: the time
    /// records flowed, without group join or idle waits.
    pub busy: Duration,
    /// The last offset the coordinator accepted per `(topic, partition)` during this
    /// run: the next offset to read.
    pub committed: BTreeMap<(String, i32), i64>,
}

impl RunSummary {
    /// Completed records per second while records flowed ([`busy`](Self::busy)).
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

/// A configured pipeline: one consumer-group member that processes its partitions'
/// records in parallel and commits per-partition watermarks.
///
/// Build it with [`Pipeline::new`], optionally add a commit callback, take a
/// [`ShutdownHandle`], then [`run`](Pipeline::run) it on the current thread (which
/// becomes the poll thread).
pub struct Pipeline {
    config: Config,
    processor: Arc<dyn Processor>,
    on_commit: Option<CommitCallback>,
    offset_store: Option<Arc<dyn OffsetStore>>,
    shutdown: ShutdownHandle,
    progress: Arc<Progress>,
    commit_requests: (
        crossbeam_channel::Sender<CommitRequest>,
        crossbeam_channel::Receiver<CommitRequest>,
    ),
}

impl Pipeline {
    /// A pipeline running `processor` with `config`. Nothing connects until `run`.
    pub fn new(config: Config, processor: impl Processor) -> Self {
        Pipeline {
            config,
            processor: Arc::new(processor),
            on_commit: None,
            offset_store: None,
            shutdown: ShutdownHandle::default(),
            progress: Arc::default(),
            commit_requests: crossbeam_channel::unbounded(),
        }
    }

    /// Makes this pipeline a free consumer's: start offsets of
    /// [`Config::assignment`] come from `store` (a partition with nothing stored
    /// starts at the start position, else per `auto.offset.reset`), and every commit
    /// saves the watermarks there instead of to a group. Required when the config has
    /// no `group_id`; refused otherwise.
    pub fn with_offset_store(mut self, store: impl OffsetStore + 'static) -> Self {
        self.offset_store = Some(Arc::new(store));
        self
    }

    /// A handle that asks the running pipeline to commit one partition, or all, now.
    pub fn commit_handle(&self) -> CommitHandle {
        CommitHandle(self.commit_requests.0.clone())
    }

    /// Calls `callback` with the outcome of every commit (offsets sent, and success or
    /// librdkafka's error). It runs on the poll thread: keep it short, never block.
    pub fn on_commit(mut self, callback: impl Fn(&CommitEvent) + Send + Sync + 'static) -> Self {
        self.on_commit = Some(Arc::new(callback));
        self
    }

    /// A handle that stops this pipeline gracefully from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Live counters of this pipeline (records dispatched and completed, commits).
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Runs until shut down, idle for `exit_when_idle_ms`, or a record fails. On every
    /// such stop it drains in-flight records (up to `drain_timeout_ms`), commits the
    /// watermarks synchronously and leaves the group.
    ///
    /// # Errors
    /// - [`Error::Config`]: invalid configuration, before connecting;
    /// - [`Error::BrokerUnreachable`]: no metadata within `startup_timeout_ms`;
    /// - [`Error::UnknownTopic`]: a subscribed topic does not exist;
    /// - [`Error::Kafka`]: creating the consumer or producer, or subscribing, failed;
    /// - [`Error::Processor`] / [`Error::Sink`]: a record failed; offsets were committed
    ///   up to, never past, that record;
    /// - [`Error::OffsetReset`]: `auto.offset.reset=error` and a partition has no valid
    ///   offset to start from;
    /// - [`Error::FinalCommit`]: the final synchronous commit failed;
    /// - [`Error::OffsetStore`]: a free consumer's store could not be read;
    /// - [`Error::Transaction`]: exactly-once: the producer could not start
    ///   transactions, or a transaction could not even be aborted (fenced).
    pub fn run(self) -> Result<RunSummary, Error> {
        let config = &self.config;
        config.validate()?;
        match (config.is_free(), self.offset_store.is_some()) {
            (true, false) => return Err(Error::Config(
                "assignment: a free consumer needs an offset store (Pipeline::with_offset_store)"
                    .into(),
            )),
            (false, true) => {
                return Err(Error::Config(
                    "offset store: only a free consumer (no group_id) keeps its offsets in a store"
                        .into(),
                ))
            }
            _ => {}
        }
        let started = Instant::now();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .thread_name(|i| format!("tidemark-worker-{i}"))
            // User panics are caught where they happen (`run_batch`); one that
            // escapes anyway is logged instead of aborting the process (rayon's
            // default without a handler).
            .panic_handler(|panic| {
                tracing::error!(
                    message = %crate::processor::panic_message(&*panic),
                    "panic on a worker thread"
                )
            })
            .build()
            .map_err(|e| Error::Config(format!("workers: cannot start the pool: {e}")))?;
        let sink = match &config.sink {
            SinkConfig::None => None,
            SinkConfig::Topic { topic } => Some(Arc::new(Sink::new(config, topic)?)),
        };

        let target = match (&self.offset_store, &sink) {
            (Some(store), _) => OffsetTarget::Store(store.clone()),
            (None, Some(sink)) if config.delivery == Delivery::ExactlyOnce => {
                let timeout = Duration::from_millis(config.startup_timeout_ms);
                sink.start_transactions(timeout)
                    .map_err(Error::Transaction)?;
                OffsetTarget::Transaction(sink.clone())
            }
            _ => OffsetTarget::Group,
        };
        let route = match (&target, config.commit) {
            (OffsetTarget::Store(_), _) => CommitRoute::Store,
            (OffsetTarget::Transaction(_), _) => CommitRoute::Transaction {
                drain_timeout: Duration::from_millis(config.drain_timeout_ms),
            },
            (OffsetTarget::Group, CommitPolicy::Auto(_)) => CommitRoute::LibrdkafkaAuto,
            (OffsetTarget::Group, _) => CommitRoute::Group(config.commit_mode),
        };
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            partitions: Mutex::new(Partitions::new(done_rx, self.progress.clone())),
            progress: self.progress.clone(),
            on_commit: self.on_commit.clone(),
            drain_timeout: Duration::from_millis(config.drain_timeout_ms),
            commit_watermarks: config.delivery != Delivery::AtMostOnce,
            start_position: config.start_position,
            target,
            auto_commit: route == CommitRoute::LibrdkafkaAuto,
        });
        shared.partitions.lock().release_on_complete = config.delivery == Delivery::AtMostOnce;
        let consumer: BaseConsumer<PipelineContext> = config
            .consumer_client_config()
            .create_with_context(PipelineContext {
                shared: shared.clone(),
            })
            .map_err(Error::kafka("creating the consumer"))?;
        check_topics(&consumer, config)?;
        match &self.offset_store {
            Some(store) => start::assign_from_store(&consumer, &shared, config, &**store)?,
            None => {
                let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&topics)
                    .map_err(Error::kafka("subscribing"))?;
                tracing::info!(topics = ?config.topics, group = ?config.group_id, workers = config.workers, "subscribed");
            }
        }

        let poll_timeout = Duration::from_millis(config.poll_timeout_ms);
        let mut committer = Committer::new(config.commit, route, config.max_in_flight_records);
        let idle_limit = config.exit_when_idle_ms.map(Duration::from_millis);
        let limits = Limits::from_config(config);
        let mut first_dispatch: Option<Instant> = None;
        let mut last_record = Instant::now();
        let mut pressed = false;

        loop {
            if self.shutdown.is_requested() {
                tracing::info!("shutdown requested");
                break;
            }
            // Poll a round: wait for the first record, then take what is ready, up to
            // the batch size or an in-flight bound. Rebalance and commit callbacks run
            // inside these polls. While paused for back-pressure, progress comes from
            // completions, which do not wake `poll`: wait briefly then.
            let timeout = if pressed {
                PRESSED_POLL_TIMEOUT
            } else {
                poll_timeout
            };
            let polled = poll_round(
                &consumer,
                &shared,
                config.max_batch_records,
                timeout,
                limits,
            );
            let now = Instant::now();
            if polled > 0 {
                last_record = now;
            }

            let mut partitions = shared.partitions.lock();
            if polled > 0 && config.delivery == Delivery::AtMostOnce {
                commit_before_processing(&consumer, &mut partitions);
            }
            if polled > 0 {
                first_dispatch.get_or_insert(now);
                let _span = tracing::trace_span!("dispatch", records = polled).entered();
                let generation = sink.as_ref().map_or(0, |s| s.generation());
                for batch in partitions.take_batches(generation) {
                    Progress::add(&self.progress.dispatched, batch.records.len() as u64);
                    let processor = self.processor.clone();
                    let sink = sink.clone();
                    let done = done_tx.clone();
                    pool.spawn(move || run_batch(&*processor, sink.as_deref(), batch, done));
                }
            }
            if committer.per_record() {
                while let Some(done) = partitions.next_ready() {
                    let (topic, partition) = (done.topic.clone(), done.partition);
                    for _ in 0..partitions.apply(done) {
                        committer.commit_partition(&consumer, &mut partitions, &topic, partition);
                    }
                }
            } else {
                partitions.apply_ready();
            }
            if partitions.failure.is_some() || partitions.fatal.is_some() {
                break;
            }
            pressed = flow::regulate(&consumer, &mut partitions, limits);
            if shared.commit_watermarks {
                committer.maybe_commit(&consumer, &mut partitions, now, pressed);
                while let Ok(request) = self.commit_requests.1.try_recv() {
                    match request {
                        CommitRequest::All => {
                            committer.commit_now(&consumer, &mut partitions, |_, _| true)
                        }
                        CommitRequest::Partition(topic, partition) => {
                            committer.commit_now(&consumer, &mut partitions, |t, p| {
                                t == topic && p == partition
                            })
                        }
                    }
                }
            }
            if partitions.fatal.is_some() {
                break;
            }
            if let Some(limit) = idle_limit {
                let active = partitions
                    .last_assigned
                    .map_or(last_record, |a| a.max(last_record));
                if now.duration_since(active) >= limit && partitions.in_flight(|_, _| true) == 0 {
                    tracing::info!(idle_ms = limit.as_millis() as u64, "idle: stopping");
                    break;
                }
            }
        }

        let final_commit = finish(consumer, &shared, sink.as_deref(), config);
        let mut partitions = shared.partitions.lock();
        let summary = RunSummary {
            records: self.progress.completed(),
            elapsed: started.elapsed(),
            busy: match (first_dispatch, partitions.last_completion) {
                (Some(first), Some(last)) => last.saturating_duration_since(first),
                _ => Duration::ZERO,
            },
            committed: partitions.committed.clone(),
        };
        // A fenced transactional producer fails every output: report the cause.
        if config.delivery == Delivery::ExactlyOnce {
            if let Some(e) = sink.as_ref().and_then(|s| s.fatal_error()) {
                return Err(Error::Transaction(e));
            }
        }
        if let Some(RecordFailure {
            topic,
            partition,
            failure,
        }) = partitions.failure.take()
        {
            return Err(match failure.cause {
                FailureCause::Processor(source) => Error::Processor {
                    topic,
                    partition,
                    offset: failure.offset,
                    source,
                },
                FailureCause::Sink(source) => Error::Sink {
                    topic,
                    partition,
                    offset: failure.offset,
                    source,
                },
            });
        }
        if let Some(e) = partitions.fatal.take() {
            return Err(e);
        }
        final_commit.map_err(Error::FinalCommit)?;
        tracing::info!(
            records = summary.records,
            elapsed_ms = summary.elapsed.as_millis() as u64,
            "stopped"
        );
        Ok(summary)
    }
}

/// Polls one round: waits up to `timeout` for the first record, then takes what is
/// ready, up to `max_records` or an in-flight bound, staging each record in its
/// partition. Rebalance and commit callbacks run inside these polls. Returns the
/// number of records polled.
fn poll_round(
    consumer: &BaseConsumer<PipelineContext>,
    shared: &Shared,
    max_records: usize,
    mut timeout: Duration,
    limits: Limits,
) -> usize {
    let mut polled = 0;
    while polled < max_records {
        let Some(result) = consumer.poll(timeout) else {
            break;
        };
        timeout = Duration::ZERO;
        match result {
            Ok(msg) => {
                polled += 1;
                let mut partitions = shared.partitions.lock();
                if let Some(n) = partitions.stage(&msg) {
                    if limits.reached(&partitions, n) {
                        break;
                    }
                }
            }
            Err(e @ KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                shared
                    .partitions
                    .lock()
                    .fatal
                    .get_or_insert(Error::OffsetReset(e));
                break;
            }
            Err(e) => tracing::warn!(error = %e, "consumer error"),
        }
    }
    polled
}

/// The graceful stop: nothing new is dispatched; what is in flight drains (up to
/// `drain_timeout_ms`); the watermarks are committed synchronously; the consumer
/// leaves the group (dropping it closes it: a revoke with nothing left to commit,
/// and the pending commit callbacks are served); the sink is flushed. Returns the
/// final commit's result.
fn finish(
    consumer: BaseConsumer<PipelineContext>,
    shared: &Shared,
    sink: Option<&Sink>,
    config: &Config,
) -> Result<(), crate::commit::CommitError> {
    let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
    let result = {
        let mut partitions = shared.partitions.lock();
        partitions.discard_staged();
        let left = partitions.drain(drain_timeout, |_, _| true);
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "drain timeout on shutdown: those records will be processed again"
            );
        }
        let transaction = matches!(shared.target, OffsetTarget::Transaction(_));
        if partitions.fatal.is_some() && transaction {
            // The producer cannot commit any more; the last transaction stands.
            Ok(())
        } else if left > 0 && transaction {
            // Outputs of records still in flight may be in the open transaction:
            // closing the producer aborts it.
            Ok(())
        } else if !shared.commit_watermarks {
            Ok(())
        } else {
            context::skip_undelivered(&consumer, &mut partitions);
            consumer
                .context()
                .store_watermarks(&consumer, &mut partitions);
            match partitions.take_dirty(|_, _| true) {
                Some(tpl) => consumer
                    .context()
                    .commit_sync(&consumer, &mut partitions, &tpl),
                None => Ok(()),
            }
        }
    };
    drop(consumer);
    if let Some(sink) = sink {
        sink.flush(drain_timeout);
    }
    result
}

/// At-most-once: commits the offsets after the staged records synchronously, before
/// they are dispatched. If the commit fails they are dropped unprocessed (a later
/// owner reads them from the older commit), so no record is ever processed twice.
fn commit_before_processing(consumer: &BaseConsumer<PipelineContext>, partitions: &mut Partitions) {
    if let Some(tpl) = partitions.take_staged_ends() {
        if consumer
            .context()
            .commit_sync(consumer, partitions, &tpl)
            .is_err()
        {
            tracing::warn!(
                "at-most-once: commit before processing failed; dropping the polled records"
            );
            partitions.discard_staged();
        }
    }
}

/// Fails fast when the brokers are unreachable or a topic is missing.
fn check_topics(consumer: &BaseConsumer<PipelineContext>, config: &Config) -> Result<(), Error> {
    let timeout = Duration::from_millis(config.startup_timeout_ms);
    let metadata =
        consumer
            .fetch_metadata(None, timeout)
            .map_err(|source| Error::BrokerUnreachable {
                brokers: config.brokers.clone(),
                timeout_ms: config.startup_timeout_ms,
                source,
            })?;
    for topic in &config.input_topics() {
        let found = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !found {
            return Err(Error::UnknownTopic(topic.clone()));
        }
    }
    Ok(())
}
