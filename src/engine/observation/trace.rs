//! Tracing across Kafka (feature `otel`): a `process {topic}` span per record
//! attempt, continuing the W3C trace context of the record's headers, and that
//! span's context on every output and dead letter.
//!
//! The spans are `tracing` spans (target [`TARGET`], level INFO) with the
//! attributes of OpenTelemetry's messaging semantic conventions (v1.44, Kafka):
//! the application's `tracing-opentelemetry` layer turns them into OpenTelemetry
//! spans with its own tracer provider, and the user's `tracing` spans inside
//! `process` nest under them. The engine creates a record's span when its task's
//! layer starts, hands it explicitly to the code that runs the record (entered
//! around `process` on the pool; instrumenting the record's future on the runtime),
//! to the sink (its context into the outputs' headers) and, when the record fails,
//! to the poll thread (the outcome: retried, dead-lettered, failed). Nothing goes
//! through a thread-local of the engine's own.
//!
//! Without the feature every type here is empty and every method does nothing,
//! so the hot paths pay nothing; with it and no subscriber interested in
//! [`TARGET`], a layer costs one `enabled` check.

use crate::record::Record;

/// The `tracing` target of the `process` spans (and their `retry` events): what a
/// subscriber's filter names to export them.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) const TARGET: &str = "tidemark::process";

/// The span of one attempt at one record; `none()` when tracing is off.
#[derive(Debug)]
pub(crate) struct RecordSpan(#[cfg(feature = "otel")] tracing::Span);

/// What happened to a failed record after its attempt (the `tidemark.outcome`
/// attribute of its span).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Scheduled for another attempt.
    Retried,
    /// Produced to the dead-letter topic.
    DeadLettered,
    /// Neither: the partition stops (or the run, per the failure policy).
    Failed,
}

impl Outcome {
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Failed => "failed",
        }
    }
}

/// No span: what records get when tracing is off (and what an index past a
/// layer's spans reads).
static NONE: RecordSpan = RecordSpan::none();

impl RecordSpan {
    /// No span.
    pub(crate) const fn none() -> Self {
        RecordSpan(
            #[cfg(feature = "otel")]
            tracing::Span::none(),
        )
    }

    /// Span `index` of `spans` (a layer's, from [`Tracer::spans`]), or none.
    pub(crate) fn at(spans: &[RecordSpan], index: usize) -> &RecordSpan {
        spans.get(index).unwrap_or(&NONE)
    }

    /// Span `index` of `spans`, taken out (none left in its place), or none.
    pub(crate) fn take(spans: &mut [RecordSpan], index: usize) -> RecordSpan {
        spans.get_mut(index).map_or_else(RecordSpan::none, |s| {
            std::mem::replace(s, RecordSpan::none())
        })
    }

    /// Runs `f` inside the span (the user's spans and events in it nest under it).
    #[inline]
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "otel")]
        {
            self.0.in_scope(f)
        }
        #[cfg(not(feature = "otel"))]
        f()
    }

    /// `future` running inside the span.
    #[inline]
    pub(crate) fn instrument<F: std::future::Future>(
        &self,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> {
        #[cfg(feature = "otel")]
        {
            tracing::Instrument::instrument(future, self.0.clone())
        }
        #[cfg(not(feature = "otel"))]
        future
    }

    /// A second handle on the same span (the span ends when the last one drops).
    pub(crate) fn handle(&self) -> RecordSpan {
        RecordSpan(
            #[cfg(feature = "otel")]
            self.0.clone(),
        )
    }

    /// The attempt succeeded: its outputs are on their way.
    #[inline]
    pub(crate) fn complete(&self) {
        #[cfg(feature = "otel")]
        if !self.0.is_disabled() {
            self.0.record("tidemark.outcome", "complete");
        }
    }

    /// The attempt failed with an error of class `error_type` (`retriable`,
    /// `permanent`, `panic`, or the sink's Kafka error) and `message`; `outcome` is
    /// what the failure policy made of it. A retry is also an event `retry` with the
    /// attempt number and the wait before the next one.
    pub(crate) fn failed(
        &self,
        outcome: Outcome,
        error_type: &str,
        message: &str,
        attempts: u32,
        retry_in: Option<std::time::Duration>,
    ) {
        #[cfg(feature = "otel")]
        if !self.0.is_disabled() {
            self.0.record("tidemark.outcome", outcome.as_str());
            self.0.record("error.type", error_type);
            self.0.record("otel.status_code", "error");
            self.0.record("otel.status_description", message);
            self.0.record("tidemark.attempts", attempts);
            if let Some(wait) = retry_in {
                tracing::info!(
                    target: TARGET,
                    parent: &self.0,
                    attempt = attempts,
                    backoff_ms = wait.as_millis() as u64,
                    "retry"
                );
            }
        }
        #[cfg(not(feature = "otel"))]
        let _ = (outcome, error_type, message, attempts, retry_in);
    }

    /// The W3C trace context headers (`traceparent`, and `tracestate` when the
    /// context has one) naming this span, for the records it produces; empty when
    /// there is no span.
    pub(crate) fn context_headers(&self) -> Vec<(&'static str, String)> {
        #[cfg(feature = "otel")]
        if !self.0.is_disabled() {
            return otel::inject(&self.0);
        }
        Vec::new()
    }
}

/// Makes the records' spans for one run: the consumer group, whether the
/// producer's context is the span's parent or a link, and the context of each
/// record's failed attempt awaiting its retry (the retry's span is its child, so
/// every attempt at a record is in one trace, with or without a producer's context).
#[derive(Debug)]
pub(crate) struct Tracer {
    #[cfg(feature = "otel")]
    group: Option<std::sync::Arc<str>>,
    #[cfg(feature = "otel")]
    link: bool,
    #[cfg(feature = "otel")]
    retries: otel::Retries,
}

impl Tracer {
    /// The tracer of a run of `config`.
    pub(crate) fn new(config: &crate::Config) -> Self {
        #[cfg(not(feature = "otel"))]
        let _ = config;
        Tracer {
            #[cfg(feature = "otel")]
            group: config.group_id().map(std::sync::Arc::from),
            #[cfg(feature = "otel")]
            link: config.observability.producer_context == crate::ProducerContext::Link,
            #[cfg(feature = "otel")]
            retries: otel::Retries::default(),
        }
    }

    /// `record`'s attempt `span` failed and the record will be retried: the next
    /// attempt's span becomes its child.
    pub(crate) fn retried(&self, record: &Record, span: &RecordSpan) {
        #[cfg(feature = "otel")]
        if !span.0.is_disabled() {
            self.retries.keep(record, &span.0);
        }
        #[cfg(not(feature = "otel"))]
        let _ = (record, span);
    }

    /// The partition left this member: its records' pending retries will not run
    /// here, so their failed attempts' contexts are dropped.
    pub(crate) fn forget(&self, topic: &str, partition: i32) {
        #[cfg(feature = "otel")]
        self.retries.forget(topic, partition);
        #[cfg(not(feature = "otel"))]
        let _ = (topic, partition);
    }

    /// One span per record of `records` (a layer's), in order; empty (no
    /// allocation) when nothing listens to [`TARGET`].
    #[inline]
    pub(crate) fn spans(&self, records: &[Record]) -> Vec<RecordSpan> {
        #[cfg(feature = "otel")]
        if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            let group = self.group.as_deref();
            return records
                .iter()
                .map(|r| {
                    let previous = self.retries.take(r);
                    RecordSpan(otel::span(r, group, self.link, previous))
                })
                .collect();
        }
        #[cfg(not(feature = "otel"))]
        let _ = records;
        Vec::new()
    }
}

#[cfg(feature = "otel")]
mod otel {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry::Context;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use parking_lot::Mutex;
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TARGET;
    use crate::record::Record;

    /// A record's headers as a W3C carrier (names compared exactly: producers
    /// write them lower-case, as the specification says).
    struct Headers<'a>(&'a Record);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            let header = self.0.headers.iter().find(|h| h.key == key)?;
            std::str::from_utf8(header.value.as_deref()?).ok()
        }

        fn keys(&self) -> Vec<&str> {
            self.0.headers.iter().map(|h| h.key.as_str()).collect()
        }
    }

    /// Collects the injected headers.
    struct Out(Vec<(&'static str, String)>);

    impl Injector for Out {
        fn set(&mut self, key: &str, value: String) {
            let key = match key {
                "traceparent" => crate::HEADER_TRACEPARENT,
                "tracestate" => crate::HEADER_TRACESTATE,
                _ => return,
            };
            self.0.push((key, value));
        }
    }

    /// A record's topic, partition and offset.
    type Coordinates = (Arc<str>, i32, i64);

    /// Failed attempts' contexts awaiting their records' retries, by coordinates
    /// (touched only when a retry is pending: `waiting` is checked first).
    #[derive(Debug, Default)]
    pub(super) struct Retries {
        waiting: AtomicUsize,
        contexts: Mutex<HashMap<Coordinates, Context>>,
    }

    impl Retries {
        pub(super) fn keep(&self, record: &Record, span: &tracing::Span) {
            let key = (record.topic.clone(), record.partition, record.offset);
            if self.contexts.lock().insert(key, span.context()).is_none() {
                self.waiting.fetch_add(1, Ordering::Relaxed);
            }
        }

        pub(super) fn forget(&self, topic: &str, partition: i32) {
            if self.waiting.load(Ordering::Relaxed) == 0 {
                return;
            }
            let mut contexts = self.contexts.lock();
            let before = contexts.len();
            contexts.retain(|(t, p, _), _| !(&**t == topic && *p == partition));
            self.waiting
                .fetch_sub(before - contexts.len(), Ordering::Relaxed);
        }

        pub(super) fn take(&self, record: &Record) -> Option<Context> {
            if self.waiting.load(Ordering::Relaxed) == 0 {
                return None;
            }
            let key = (record.topic.clone(), record.partition, record.offset);
            let context = self.contexts.lock().remove(&key)?;
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            Some(context)
        }
    }

    /// `process {topic}` for `record`: the child of its `previous` attempt's span
    /// when it is a retry, else of the producer's context (or linked to it).
    pub(super) fn span(
        record: &Record,
        group: Option<&str>,
        link: bool,
        previous: Option<Context>,
    ) -> tracing::Span {
        // A root in `tracing`'s tree: the OpenTelemetry parent is the producer's
        // context (or none: a new trace), never the span current on this thread.
        let span = tracing::info_span!(
            target: TARGET,
            parent: None,
            "process",
            otel.name = format!("process {}", record.topic),
            otel.kind = "consumer",
            otel.status_code = Empty,
            otel.status_description = Empty,
            messaging.system = "kafka",
            messaging.operation.name = "process",
            messaging.operation.type = "process",
            messaging.destination.name = &*record.topic,
            messaging.destination.partition.id = record.partition.to_string(),
            messaging.consumer.group.name = group,
            messaging.kafka.offset = record.offset,
            messaging.kafka.message.key = Empty,
            error.type = Empty,
            tidemark.outcome = Empty,
            tidemark.attempts = Empty,
        );
        if span.is_disabled() {
            return span;
        }
        if let Some(key) = record
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
        {
            span.record("messaging.kafka.message.key", key);
        }
        if let Some(previous) = previous {
            let _ = span.set_parent(previous);
            return span;
        }
        let producer = TraceContextPropagator::new().extract(&Headers(record));
        let producer_span = producer.span().span_context().clone();
        if producer_span.is_valid() {
            if link {
                span.add_link(producer_span);
            } else {
                let _ = span.set_parent(producer);
            }
        }
        span
    }

    /// The W3C headers naming `span`.
    pub(super) fn inject(span: &tracing::Span) -> Vec<(&'static str, String)> {
        let mut out = Out(Vec::with_capacity(2));
        TraceContextPropagator::new().inject_context(&span.context(), &mut out);
        out.0
    }
}
