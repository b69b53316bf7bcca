//! The public face of the engine: [`Pipeline`] (a processor, its [`Config`] and
//! the handles a caller keeps) and [`RunSummary`]; `Pipeline::run` checks the
//! configuration and topics, creates the consumer, the sink and the execution,
//! runs the driver on the calling thread, and joins them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use crate::async_processor::AsyncProcessor;
use crate::commit::{CommitCallback, CommitEvent, CommitHandle, CommitRequest};
use crate::config::Config;
use crate::engine::commits::target::CommitTarget;
use crate::engine::driver::{Driver, Engine};
use crate::engine::execution::{AsyncWork, Execution, Work};
use crate::engine::intake::callbacks::PipelineContext;
use crate::engine::observation::lag_sampler::LagSampler;
use crate::engine::observation::trace::OtelTracer;
use crate::engine::seams::consumer::{CommitQueue, KafkaConsumer};
use crate::engine::seams::record_queue::RecordQueue;
use crate::engine::seams::sink::Sink;
use crate::engine::state::RunState;
use crate::error::Error;
use crate::metrics::MetricsHandle;
use crate::offset_store::OffsetStore;
use crate::processor::Processor;
use crate::shutdown::ShutdownHandle;
use crate::topic_partition::TopicPartition;

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
    /// The last offset the coordinator accepted per partition during this run: the
    /// next offset to read.
    pub committed: BTreeMap<TopicPartition, i64>,
    /// Worker threads in the pool (`Config::workers`).
    pub workers: usize,
    /// Time the workers spent running records, summed over workers: per worker and
    /// batch from its first claimed record to its last (the default
    /// `process_batch`), or the whole call of an overriding `process_batch` on the
    /// worker that made it. Zero for an async processor (its time is awaiting).
    pub workers_busy: Duration,
}

impl RunSummary {
    /// Completed records per second while records flowed ([`busy`](Self::busy)).
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.busy.as_secs_f64().max(1e-9)
    }

    /// The fraction of the time records flowed ([`busy`](Self::busy)) that the
    /// workers spent running records: [`workers_busy`](Self::workers_busy) /
    /// (`workers` × `busy`), in 0..=1 (1: no worker ever waited for work).
    pub fn busy_fraction(&self) -> f64 {
        let capacity = self.busy.as_secs_f64() * self.workers.max(1) as f64;
        (self.workers_busy.as_secs_f64() / capacity.max(1e-9)).min(1.0)
    }
}

/// A configured pipeline: one consumer-group member that processes its partitions'
/// records in parallel and commits per-partition committable offsets.
///
/// Build it with [`Pipeline::new`], optionally add a commit callback, take a
/// [`ShutdownHandle`], then [`run`](Pipeline::run) it on the current thread (which
/// becomes the poll thread).
pub struct Pipeline {
    config: Config,
    work: Work,
    /// The user's runtime for an async processor (`with_runtime`).
    runtime: Option<tokio::runtime::Handle>,
    on_commit: Option<CommitCallback>,
    offset_store: Option<Arc<dyn OffsetStore>>,
    shutdown: ShutdownHandle,
    metrics: MetricsHandle,
    commit_requests: (
        crossbeam_channel::Sender<CommitRequest>,
        crossbeam_channel::Receiver<CommitRequest>,
    ),
    /// The application's tracer for the records' spans (`with_tracer_provider`).
    otel: Option<OtelTracer>,
}

impl Pipeline {
    /// A pipeline running `processor` with `config`. Nothing connects until `run`.
    pub fn new(config: Config, processor: impl Processor) -> Self {
        Self::with_work(config, Work::Blocking(Arc::new(processor)))
    }

    /// A pipeline running the async `processor` with `config` (see
    /// [`AsyncProcessor`]): each record's future is a task of
    /// a tokio runtime — the pipeline's own, with [`Config::workers`] threads, or
    /// the one given to [`with_runtime`](Self::with_runtime) — and at most
    /// [`Config::concurrency`] records are processed at once. Nothing connects until
    /// `run`.
    pub fn new_async(config: Config, processor: impl AsyncProcessor) -> Self {
        Self::with_work(
            config,
            Work::Async(Arc::new(AsyncWork(Arc::new(processor)))),
        )
    }

    /// Runs an async processor's futures on the runtime behind `handle` (a
    /// multi-threaded tokio runtime of the application) instead of one of the
    /// pipeline's own. No effect on a blocking processor.
    pub fn with_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    fn with_work(config: Config, work: Work) -> Self {
        Pipeline {
            config,
            work,
            runtime: None,
            on_commit: None,
            offset_store: None,
            shutdown: ShutdownHandle::default(),
            metrics: MetricsHandle::default(),
            commit_requests: crossbeam_channel::unbounded(),
            otel: None,
        }
    }

    /// Feature `otel`: traces every record attempt with a tracer of `provider`
    /// (instrumentation scope `tidemark`), the application's own — the pipeline
    /// installs none. Each attempt is a span `process {topic}` (kind consumer,
    /// OpenTelemetry's messaging semantic conventions for Kafka: the topic,
    /// partition, offset, key, consumer group; `tidemark.outcome`, `error.type`,
    /// `tidemark.attempts` and a `retry` event when it fails) whose parent is the
    /// W3C `traceparent` of the record's headers (or a link to it, per
    /// [`ObservabilityConfig::producer_context`](crate::ObservabilityConfig::producer_context)),
    /// or the failed attempt's span for a retry. The provider's sampler decides
    /// first (a dropped span costs no attribute); either way the span's context
    /// goes on every output and dead letter as `traceparent` (W3C Trace Context),
    /// and is OpenTelemetry's current context while `process` runs, so the
    /// processor's own spans nest under it. Without this call nothing is traced.
    #[cfg(feature = "otel")]
    pub fn with_tracer_provider(
        mut self,
        provider: &opentelemetry_sdk::trace::SdkTracerProvider,
    ) -> Self {
        use opentelemetry::trace::TracerProvider as _;
        let scope = opentelemetry::InstrumentationScope::builder("tidemark")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        self.otel = Some(provider.tracer_with_scope(scope));
        self
    }

    /// Makes this pipeline a free consumer's: start offsets of
    /// [`Membership::Free`](crate::Membership::Free) come from `store` (a partition with nothing stored
    /// starts at the start position, else per `auto.offset.reset`), and every commit
    /// saves the committable offsets there instead of to a group. Required with
    /// `Membership::Free`; refused for a group member.
    pub fn with_offset_store(mut self, store: impl OffsetStore + 'static) -> Self {
        self.offset_store = Some(Arc::new(store));
        self
    }

    /// [`run`](Self::run) for tokio applications: runs the pipeline on a blocking
    /// thread of the current runtime (`tokio::task::spawn_blocking`, which becomes
    /// the poll thread) and resolves with its result. Stop it with the
    /// [`ShutdownHandle`]; dropping (cancelling) the future also asks for the
    /// graceful stop, which then completes in the background (drain up to
    /// `drain_timeout`, final commit) with nobody awaiting it.
    ///
    /// # Errors
    /// Those of [`run`](Self::run); [`Error::Panicked`] if the run's thread panicked.
    ///
    /// # Panics
    /// When not called within a tokio runtime.
    pub async fn run_async(self) -> Result<RunSummary, Error> {
        /// Asks for the graceful stop when the future is dropped before the end.
        struct StopOnDrop(Option<ShutdownHandle>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                if let Some(handle) = self.0.take() {
                    handle.shutdown();
                }
            }
        }
        let mut stop = StopOnDrop(Some(self.shutdown.clone()));
        let result = tokio::task::spawn_blocking(move || self.run()).await;
        stop.0 = None;
        result.map_err(|e| {
            Error::Panicked(if e.is_panic() {
                crate::processor::panic_message(&*e.into_panic())
            } else {
                "cancelled: the runtime is shutting down".into()
            })
        })?
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

    /// A handle to this pipeline's [`Metrics`](crate::Metrics) and
    /// [`Health`](crate::Health), readable from any thread during and after `run`.
    pub fn metrics(&self) -> MetricsHandle {
        self.metrics.clone()
    }

    /// Runs until shut down, idle for `exit_when_idle`, or a record fails. On every
    /// such stop it drains in-flight records (up to `drain_timeout`), commits the
    /// committable offsets synchronously and leaves the group.
    ///
    /// # Errors
    /// - [`Error::Config`]: invalid configuration, before connecting;
    /// - [`Error::BrokerUnreachable`]: no metadata within `startup_timeout`;
    /// - [`Error::UnknownTopic`]: a subscribed topic does not exist;
    /// - [`Error::Kafka`]: creating the consumer or producer, or subscribing, failed;
    /// - [`Error::Processor`] / [`Error::Sink`]: a record failed; offsets were committed
    ///   up to, never past, that record;
    /// - [`Error::OffsetReset`]: `auto.offset.reset=error` and a partition has no valid
    ///   offset to start from;
    /// - [`Error::FinalCommit`]: the final synchronous commit failed — unless a
    ///   rebalance rejected it ([`CommitError::is_rebalance`](crate::CommitError::is_rebalance)):
    ///   that is logged and the run ends `Ok`, the next owner redoing what the commit
    ///   would have covered;
    /// - [`Error::OffsetStore`]: a free consumer's store could not be read;
    /// - [`Error::Transaction`]: exactly-once: the producer could not start
    ///   transactions, or a transaction could not even be aborted (fenced).
    pub fn run(self) -> Result<RunSummary, Error> {
        let config = &self.config;
        config.validate()?;
        check_offset_store(config, self.offset_store.is_some())?;
        let started = Instant::now();
        let tracer = Arc::new(crate::engine::observation::trace::Tracer::new(
            config,
            self.otel.clone(),
        ));
        let execution = Execution::start(
            &self.work,
            config.workers,
            config.concurrency,
            self.runtime.clone(),
            tracer.clone(),
        )
        .map_err(|e| Error::Config(format!("workers: cannot start them: {e}")))?;
        let sink = Sink::new(config)?.map(Arc::new);
        let target = CommitTarget::for_run(config, self.offset_store.as_ref(), sink.as_ref())?;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let engine = Arc::new(Engine {
            tracer,
            state: Mutex::new(RunState::new(config)),
            completions: done_rx,
            sink: sink.clone(),
            done_tx,
            wake: Arc::default(),
            metrics: self.metrics.0.clone(),
            record_processing: metrics::histogram!(crate::metrics::names::RECORD_PROCESSING),
            on_commit: self.on_commit.clone(),
            hooks: Arc::new(self.work.clone()),
            delivery: config.delivery,
            drain_timeout: config.lifecycle.drain_timeout,
            start_position: config.start_position,
            target,
            refusals: crate::engine::observation::refusal::Refusals::new(
                config.lifecycle.refusal_timeout,
                config.input_topics(),
                config.group_id().map(str::to_string),
            ),
        });
        let consumer = create_consumer(config, &engine)?;
        check_topics(&consumer, config, &engine)?;
        join(&consumer, config, &engine, self.offset_store.as_deref())?;

        let mut driver = Driver::new(
            config,
            engine.clone(),
            execution,
            self.commit_requests.1.clone(),
            self.shutdown.clone(),
        );
        let shared = &self.metrics.0;
        let _sampler = match config.observability.lag_refresh {
            Duration::ZERO => None,
            every => LagSampler::start(
                &crate::engine::observation::lag_sampler::client_config(config),
                shared.clone(),
                every,
            )
            .map(|(sampler, sampled)| {
                driver.take_high_watermarks(sampled);
                sampler
            }),
        };
        shared
            .max_poll_interval_ms
            .store(config.max_poll_interval_ms()?, Ordering::Relaxed);
        crate::metrics::names::describe();
        shared.turned(Instant::now());
        shared.running.store(true, Ordering::Release);
        driver.run(&*consumer);
        let final_commit = driver.finish(&*consumer);
        // The last figures, with the partitions as the final commit left them.
        driver.publish();
        // Closing the consumer leaves the group: a revoke with nothing left to
        // commit (the final commit took every async answer), and librdkafka's
        // pending callbacks are served.
        drop(consumer);
        if let Some(sink) = &sink {
            sink.flush(engine.drain_timeout);
        }
        shared.running.store(false, Ordering::Release);

        let st = engine.state.lock();
        let summary = RunSummary {
            records: self.metrics.completed(),
            elapsed: started.elapsed(),
            busy: match (driver.first_dispatch, st.stats.last_completion) {
                (Some(first), Some(last)) => last.saturating_duration_since(first),
                _ => Duration::ZERO,
            },
            committed: st.commits.accepted.clone(),
            workers: config.workers,
            workers_busy: Duration::from_nanos(
                shared.counters.worker_busy_ns.load(Ordering::Relaxed),
            ),
        };
        run_result(config, sink.as_deref(), st, final_commit)?;
        tracing::info!(
            records = summary.records,
            elapsed_ms = summary.elapsed.as_millis() as u64,
            "stopped"
        );
        Ok(summary)
    }
}

/// A free consumer keeps its offsets in a store, and only a free consumer does.
fn check_offset_store(config: &Config, has_store: bool) -> Result<(), Error> {
    match (config.is_free(), has_store) {
        (true, false) => Err(Error::Config(
            "membership: a free consumer needs an offset store (Pipeline::with_offset_store)"
                .into(),
        )),
        (false, true) => Err(Error::Config(
            "offset store: only a free consumer (Membership::Free) keeps its offsets in a store"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The pipeline's consumer. Dropping it closes its record queue before the client
/// is destroyed (`RecordQueue::close`: `rd_kafka_destroy` waits for the partitions
/// the queued records hold), whichever way the run ends.
struct PipelineConsumer(BaseConsumer<PipelineContext>);

impl std::ops::Deref for PipelineConsumer {
    type Target = BaseConsumer<PipelineContext>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for PipelineConsumer {
    fn drop(&mut self) {
        if let Some(records) = self.0.context().record_queue.get() {
            records.close();
        }
    }
}

/// The pipeline's consumer, with the engine behind its callbacks.
fn create_consumer(config: &Config, engine: &Arc<Engine>) -> Result<PipelineConsumer, Error> {
    let mut client_config = config.consumer_client_config();
    // The end of each partition's log is reported: the idle stop waits for it,
    // and only there is the consumer position trusted to move the committable
    // offset past offsets never delivered (`Engine::skip_undelivered`).
    client_config.set("enable.partition.eof", "true");
    let mut consumer: BaseConsumer<PipelineContext> = client_config
        .create_with_context(PipelineContext {
            engine: engine.clone(),
            client_config: client_config.clone(),
            commit_queue: std::sync::OnceLock::new(),
            record_queue: std::sync::OnceLock::new(),
        })
        .map_err(Error::kafka("creating the consumer"))?;
    // The parked poll thread wakes when its queue gets a record or an event, or an
    // async commit is answered.
    let wake = engine.wake.clone();
    consumer.set_nonempty_callback(move || wake.notify());
    let answers = CommitQueue::new(&consumer, engine.wake.clone());
    let _ = consumer.context().commit_queue.set(answers);
    // SAFETY: the consumer's live handle; the queue lives in its context, as the
    // commit queue does.
    let records = unsafe { RecordQueue::new(consumer.client().native_ptr(), engine.wake.clone()) };
    let _ = consumer.context().record_queue.set(records);
    Ok(PipelineConsumer(consumer))
}

/// A free consumer assigns its partitions at the offsets its store holds; a group
/// member subscribes (its assignments arrive through the rebalance callback).
fn join(
    consumer: &BaseConsumer<PipelineContext>,
    config: &Config,
    engine: &Engine,
    store: Option<&dyn OffsetStore>,
) -> Result<(), Error> {
    let Some(store) = store else {
        let subscribed = config.input_topics();
        let topics: Vec<&str> = subscribed.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(Error::kafka("subscribing"))?;
        tracing::info!(topics = ?subscribed, group = ?config.group_id(), workers = config.workers, "subscribed");
        return Ok(());
    };
    let with_maps = engine.state.lock().partitions.map_budget() > 0;
    let starts = crate::engine::intake::start::free_assignment(consumer, config, store, with_maps)?;
    let mut tpl = TopicPartitionList::new();
    for s in &starts {
        tpl.add_partition_offset(&s.tp.topic, s.tp.partition, s.offset)
            .map_err(Error::kafka("building the assignment"))?;
    }
    let partitions: Vec<TopicPartition> = starts.iter().map(|s| s.tp.clone()).collect();
    consumer.forward_to_record_queue(&partitions);
    consumer
        .assign(&tpl)
        .map_err(Error::kafka("assigning the partitions"))?;
    let mut assigned = Vec::new();
    let mut maps = Vec::new();
    for s in starts {
        assigned.push(s.tp.clone());
        if let Some(map) = s.map {
            maps.push((s.tp, map));
        }
    }
    engine.on_assign(&mut engine.state.lock(), &assigned, maps);
    Ok(())
}

/// A produce the cluster refused for want of an ACL, as [`Error::Refused`] naming
/// the sink topic, the dead-letter topic or the transactional id; any other error
/// unchanged.
fn refused_output(config: &Config, e: Error) -> Error {
    use rdkafka::error::RDKafkaErrorCode as C;
    let (code, resource) = match &e {
        Error::Sink { source, .. } => (
            source.kafka().rdkafka_error_code(),
            match &config.sink {
                crate::config::SinkConfig::Topic { topic } => format!("topic {topic}"),
                _ => "the sink".to_string(),
            },
        ),
        Error::DeadLetter { source, .. } => (
            source.kafka().rdkafka_error_code(),
            config
                .failures
                .dead_letter
                .as_ref()
                .map_or("the dead-letter topic".into(), |d| {
                    format!("topic {}", d.topic)
                }),
        ),
        Error::Transaction(source) => (
            source.kafka().rdkafka_error_code(),
            "transactional id".into(),
        ),
        _ => return e,
    };
    let resource = match code {
        Some(C::TopicAuthorizationFailed) => resource,
        Some(C::TransactionalIdAuthorizationFailed) => match &config.commits.transactional_id {
            Some(id) => format!("transactional id {id}"),
            None => "transactional id".into(),
        },
        Some(C::ClusterAuthorizationFailed) => "cluster".into(),
        _ => return e,
    };
    Error::Refused(crate::error::Refusal::Authorization {
        resource,
        operation: "WRITE",
        detail: crate::error::chain(&e),
    })
}

/// What a finished run returns besides its summary: the first error that stopped
/// it (a fenced producer, a record failure the policy stopped on, a fatal consumer
/// error), else the final commit's, except a commit the group's rebalance refused.
fn run_result(
    config: &Config,
    sink: Option<&Sink>,
    mut st: parking_lot::MutexGuard<'_, RunState>,
    final_commit: Result<(), crate::commit::CommitError>,
) -> Result<(), Error> {
    // A fenced transactional producer fails every output: report the cause.
    if config.delivery.commits_in_transaction() {
        if let Some(e) = sink.and_then(|s| s.fatal_error()) {
            return Err(refused_output(config, Error::Transaction(e.into())));
        }
    }
    if let Some(e) = st.failures.take_error() {
        return Err(refused_output(config, e));
    }
    if let Some(e) = st.fatal.take() {
        return Err(e);
    }
    match final_commit {
        // Not this member's failure: like Java's consumer on close, it is
        // reported and the stop completes (at-least-once holds).
        Err(e) if e.is_rebalance() => tracing::warn!(
            error = %e,
            "final commit rejected: the group rebalanced while stopping; the \
             partitions' next owner resumes from their last committed offsets and \
             processes again what this member completed since"
        ),
        result => result.map_err(Error::FinalCommit)?,
    }
    Ok(())
}

/// Fails fast when the brokers are unreachable or refuse this client, or a topic is
/// missing or may not be described.
fn check_topics(
    consumer: &BaseConsumer<PipelineContext>,
    config: &Config,
    engine: &Engine,
) -> Result<(), Error> {
    let timeout = config.lifecycle.startup_timeout;
    let metadata = consumer.fetch_metadata(None, timeout).map_err(|source| {
        // The error events queued meanwhile say why (a wrong password, an
        // untrusted certificate) better than "unreachable" does.
        // (A zero-timeout poll does not serve them: give it up to 500 ms.)
        let deadline = Instant::now() + Duration::from_millis(500);
        while engine.refusals.seen().is_none() && Instant::now() < deadline {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(50)) {
                engine.refusals.saw(&e, "");
            }
        }
        match engine.refusals.seen() {
            Some(refusal) => Error::Refused(refusal),
            None => Error::BrokerUnreachable {
                brokers: config.brokers.clone(),
                timeout_ms: config.lifecycle.startup_timeout.as_millis() as u64,
                source: source.into(),
            },
        }
    })?;
    for topic in &config.input_topics() {
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(Error::UnknownTopic(topic.clone()));
        };
        if let Some(code) = t.error() {
            let code = rdkafka::error::RDKafkaErrorCode::from(code);
            if code == rdkafka::error::RDKafkaErrorCode::TopicAuthorizationFailed {
                return Err(Error::Refused(crate::error::Refusal::Authorization {
                    resource: format!("topic {topic}"),
                    operation: "DESCRIBE",
                    detail: "Metadata: topic authorization failed".into(),
                }));
            }
            return Err(Error::UnknownTopic(topic.clone()));
        }
        if t.partitions().is_empty() {
            return Err(Error::UnknownTopic(topic.clone()));
        }
    }
    Ok(())
}
