//! Tracing across Kafka (feature `otel`): a `process {topic}` span per record
//! attempt, continuing the W3C trace context of the record's headers, and that
//! span's context on every output and dead letter.
//!
//! The spans are OpenTelemetry spans of the application's tracer provider
//! ([`Pipeline::with_tracer_provider`](crate::Pipeline::with_tracer_provider)),
//! with the attributes of OpenTelemetry's messaging semantic conventions (v1.44,
//! Kafka). The provider's sampler decides first: a span it drops costs no
//! attribute, and its context (sampled flag off) still goes on the outputs, so
//! the next consumer honours the decision. The engine creates a record's span
//! when its task's layer starts and hands it explicitly to the code that runs the
//! record, to the sink (its context into the outputs' headers) and, when the
//! record fails, to the poll thread (the outcome: retried, dead-lettered,
//! failed). Around `process` the span's context is OpenTelemetry's current one
//! (attached on the pool; the record's future carries it on the runtime), so the
//! user's spans — OpenTelemetry's, or `tracing`'s through `tracing-opentelemetry`
//! — nest under it.
//!
//! Without the feature, or without a tracer provider, every type here is empty or
//! `None` and every method does nothing, so the hot paths pay one branch.

use crate::record::Record;

/// The span of one attempt at one record (the OpenTelemetry context holding
/// it); `none()` when tracing is off.
#[derive(Debug)]
pub(crate) struct RecordSpan(#[cfg(feature = "otel")] Option<opentelemetry::Context>);

/// The application's tracer that makes the records' spans (feature `otel`), or
/// nothing.
#[cfg(feature = "otel")]
pub(crate) type OtelTracer = opentelemetry_sdk::trace::Tracer;
/// The application's tracer that makes the records' spans (feature `otel`), or
/// nothing.
#[cfg(not(feature = "otel"))]
pub(crate) type OtelTracer = std::convert::Infallible;

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
            None,
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

    /// Runs `f` with the span's context as OpenTelemetry's current one (the
    /// user's spans in it nest under it).
    #[inline]
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "otel")]
        if let Some(cx) = &self.0 {
            let _attached = cx.clone().attach();
            return f();
        }
        f()
    }

    /// `future` carrying the span's context as OpenTelemetry's current one
    /// whenever it is polled (`future` itself when there is no span).
    #[inline]
    pub(crate) fn instrument<F: std::future::Future>(
        &self,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> {
        #[cfg(feature = "otel")]
        {
            use futures_util::future::Either;
            match &self.0 {
                Some(cx) => Either::Left(opentelemetry::context::FutureExt::with_context(
                    future,
                    cx.clone(),
                )),
                None => Either::Right(future),
            }
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
        if let Some(span) = otel::recording(&self.0) {
            span.set_attribute(opentelemetry::KeyValue::new("tidemark.outcome", "complete"));
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
        if let Some(span) = otel::recording(&self.0) {
            use opentelemetry::KeyValue;
            span.set_attributes([
                KeyValue::new("tidemark.outcome", outcome.as_str()),
                KeyValue::new("error.type", error_type.to_string()),
                KeyValue::new("tidemark.attempts", i64::from(attempts)),
            ]);
            span.set_status(opentelemetry::trace::Status::error(message.to_string()));
            if let Some(wait) = retry_in {
                span.add_event(
                    "retry",
                    vec![
                        KeyValue::new("attempt", i64::from(attempts)),
                        KeyValue::new("backoff_ms", wait.as_millis() as i64),
                    ],
                );
            }
        }
        #[cfg(not(feature = "otel"))]
        let _ = (outcome, error_type, message, attempts, retry_in);
    }

    /// The W3C trace context headers (`traceparent`, and `tracestate` when the
    /// context has one) naming this span — also when the sampler dropped it (flag
    /// 00), so the next consumer honours that — for the records it produces; empty
    /// when there is no span.
    pub(crate) fn context_headers(&self) -> Vec<(&'static str, String)> {
        #[cfg(feature = "otel")]
        if let Some(cx) = &self.0 {
            return otel::inject(cx);
        }
        Vec::new()
    }
}

/// Makes the records' spans for one run: the application's tracer, the consumer
/// group, whether the producer's context is the span's parent or a link, and the
/// context of each record's failed attempt awaiting its retry (the retry's span is
/// its child, so every attempt at a record is in one trace, with or without a
/// producer's context).
#[derive(Debug)]
pub(crate) struct Tracer {
    #[cfg(feature = "otel")]
    otel: Option<OtelTracer>,
    #[cfg(feature = "otel")]
    group: Option<std::sync::Arc<str>>,
    #[cfg(feature = "otel")]
    link: bool,
    #[cfg(feature = "otel")]
    retries: otel::Retries,
}

impl Tracer {
    /// The tracer of a run of `config`, making spans with `otel` (none: no spans).
    pub(crate) fn new(config: &crate::Config, otel: Option<OtelTracer>) -> Self {
        #[cfg(not(feature = "otel"))]
        let _ = (config, otel);
        Tracer {
            #[cfg(feature = "otel")]
            otel,
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
        if let Some(cx) = &span.0 {
            self.retries.keep(record, cx);
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
    /// allocation) without a tracer.
    #[inline]
    pub(crate) fn spans(&self, records: &[Record]) -> Vec<RecordSpan> {
        #[cfg(feature = "otel")]
        if let Some(tracer) = &self.otel {
            let group = self.group.as_deref();
            return records
                .iter()
                .map(|r| {
                    let previous = self.retries.take(r);
                    RecordSpan(Some(otel::start(tracer, r, group, self.link, previous)))
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
    use opentelemetry::trace::{Link, SpanKind, SpanRef, TraceContextExt, Tracer as _};
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use parking_lot::Mutex;

    use super::OtelTracer;
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
        pub(super) fn keep(&self, record: &Record, cx: &Context) {
            let key = (record.topic.clone(), record.partition, record.offset);
            if self.contexts.lock().insert(key, cx.clone()).is_none() {
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

    /// The span in `cx` when the sampler kept it (a dropped span records nothing).
    pub(super) fn recording(cx: &Option<Context>) -> Option<SpanRef<'_>> {
        let span = cx.as_ref()?.span();
        span.is_recording().then_some(span)
    }

    /// Starts `process {topic}` for `record`: the child of its `previous` attempt's
    /// span when it is a retry, else of the producer's context (or a root linked to
    /// it). The sampler sees the name, the kind and the parent; the attributes are
    /// set only on a span it keeps.
    pub(super) fn start(
        tracer: &OtelTracer,
        record: &Record,
        group: Option<&str>,
        link: bool,
        previous: Option<Context>,
    ) -> Context {
        let mut builder = tracer
            .span_builder(format!("process {}", record.topic))
            .with_kind(SpanKind::Consumer);
        let parent = match previous {
            Some(previous) => previous,
            None => {
                let producer = TraceContextPropagator::new().extract(&Headers(record));
                let producer_span = producer.span().span_context().clone();
                if !producer_span.is_valid() {
                    Context::new()
                } else if link {
                    builder = builder.with_links(vec![Link::with_context(producer_span)]);
                    Context::new()
                } else {
                    producer
                }
            }
        };
        let span = tracer.build_with_context(builder, &parent);
        let cx = parent.with_span(span);
        let span = cx.span();
        if span.is_recording() {
            let mut attributes = Vec::with_capacity(9);
            attributes.extend([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", record.topic.to_string()),
                KeyValue::new(
                    "messaging.destination.partition.id",
                    record.partition.to_string(),
                ),
                KeyValue::new("messaging.kafka.offset", record.offset),
            ]);
            if let Some(group) = group {
                attributes.push(KeyValue::new(
                    "messaging.consumer.group.name",
                    group.to_string(),
                ));
            }
            if let Some(key) = record
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
            {
                attributes.push(KeyValue::new(
                    "messaging.kafka.message.key",
                    key.to_string(),
                ));
            }
            span.set_attributes(attributes);
        }
        cx
    }

    /// The W3C headers naming the span of `cx`.
    pub(super) fn inject(cx: &Context) -> Vec<(&'static str, String)> {
        let mut out = Out(Vec::with_capacity(2));
        TraceContextPropagator::new().inject_context(cx, &mut out);
        out.0
    }
}
