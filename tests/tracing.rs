//! Tracing across Kafka with the application's tracer provider (feature `otel`), on
//! the embedded cluster: the producer's sampling decision in each record's
//! `traceparent` is honoured (a sampled parent gives an exported `process` span, an
//! unsampled one none, and no parent a root the sampler keeps), the processor's own
//! span nests under the record's, and every output carries the `traceparent` of its
//! record's span — the sampled flag included — read back by an independent client.
//! Tidemark's Jaeger test (crates/tidemark-cli/tests/tracing.rs) checks the export
//! end to end on Apache Kafka.

#![cfg(feature = "otel")]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tidemark::{Config, Outputs, Pipeline, ProcessResult, Processor, Record, SinkConfig};
use tidemark::{HEADER_SRC_OFFSET, HEADER_SRC_PARTITION, HEADER_TRACEPARENT};
use tidemark_testkit::{unique_name, verify, Broker, EmbeddedCluster};

/// Keeps every span it is given.
#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// Echoes each record, inside a span of its own made with the application's tracer
/// from OpenTelemetry's current context (what the engine sets around `process`).
struct Traced(opentelemetry_sdk::trace::Tracer);

impl Processor for Traced {
    fn process(&self, record: &Record) -> ProcessResult {
        let _span = self.0.start_with_context("user work", &Context::current());
        Ok(Outputs::one(
            record.key.clone(),
            record.payload.clone().unwrap_or_default(),
        ))
    }
}

/// What the producer said about record `i`: a sampled parent, an unsampled one, or
/// no `traceparent` at all.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Producer3 {
    Sampled,
    Unsampled,
    None,
}

fn producer_of(i: u64) -> Producer3 {
    match i % 3 {
        0 => Producer3::Sampled,
        1 => Producer3::Unsampled,
        _ => Producer3::None,
    }
}

/// The producer's trace and span ids of record `i` (distinct per record).
fn producer_ids(i: u64) -> (TraceId, SpanId) {
    (
        TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_0000_u128 + u128::from(i) + 1),
        SpanId::from(0xb7ad_6b71_6920_0000_u64 + i + 1),
    )
}

/// (version, trace id, span id, flags) of a W3C `traceparent`.
fn parse(traceparent: &str) -> (String, TraceId, SpanId, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "not a traceparent: {traceparent:?}");
    (
        parts[0].to_string(),
        TraceId::from_hex(parts[1]).unwrap(),
        SpanId::from_hex(parts[2]).unwrap(),
        parts[3].to_string(),
    )
}

/// Every record of `topic` up to its high watermarks, as an independent client reads it.
fn read_all(brokers: &str, topic: &str) -> Vec<verify::ReadRecord> {
    verify::read_all(brokers, topic).unwrap()
}

#[test]
fn the_producers_sampling_is_honoured_and_outputs_carry_each_records_context() {
    const RECORDS: u64 = 300;
    let cluster = EmbeddedCluster::start(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("trace"));
    cluster.create_topic(&input, 2).unwrap();
    cluster.create_topic(&output, 2).unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..RECORDS {
        let (trace, span) = producer_ids(i);
        let key = format!("k{i}");
        let mut record = BaseRecord::to(&input)
            .key(&key)
            .payload(&key)
            .partition((i % 2) as i32);
        let flags = match producer_of(i) {
            Producer3::Sampled => Some("01"),
            Producer3::Unsampled => Some("00"),
            Producer3::None => None,
        };
        let traceparent = flags.map(|f| format!("00-{trace}-{span}-{f}"));
        if let Some(tp) = &traceparent {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: HEADER_TRACEPARENT,
                value: Some(tp.as_str()),
            }));
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    // Which input record each (partition, offset) is: its payload says.
    let inputs = read_all(&brokers, &input);
    assert_eq!(inputs.len() as u64, RECORDS);
    let index: HashMap<(i32, i64), u64> = inputs
        .iter()
        .map(|r| {
            let key = std::str::from_utf8(&r.payload).unwrap();
            ((r.partition, r.offset), key[1..].parse().unwrap())
        })
        .collect();

    // The application's provider (the SDK's default sampler: parent-based, always
    // on for roots), spans kept in memory.
    let spans = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let mut config = Config::new(&brokers, &group, [&input]);
    config.workers = 2;
    config.lifecycle.exit_when_idle = Some(Duration::from_millis(1_000));
    config.sink = SinkConfig::Topic {
        topic: output.clone(),
    };
    let processor = Traced(provider.tracer("the application"));
    let summary = Pipeline::new(config, processor)
        .with_tracer_provider(&provider)
        .run()
        .unwrap();
    assert_eq!(summary.records, RECORDS);
    provider.force_flush().unwrap();
    let spans = spans.0.lock().unwrap().clone();

    let process: BTreeMap<(i32, i64), &SpanData> = spans
        .iter()
        .filter(|s| s.name == format!("process {input}"))
        .map(|s| {
            let attr = |key: &str| {
                s.attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == key)
                    .unwrap_or_else(|| panic!("{key} missing on {s:?}"))
                    .value
                    .to_string()
            };
            assert_eq!(attr("messaging.destination.name"), input);
            assert_eq!(attr("messaging.consumer.group.name"), group);
            assert_eq!(s.span_kind, opentelemetry::trace::SpanKind::Consumer);
            (
                (
                    attr("messaging.destination.partition.id").parse().unwrap(),
                    attr("messaging.kafka.offset").parse().unwrap(),
                ),
                s,
            )
        })
        .collect();
    let user: HashMap<SpanId, &SpanData> = spans
        .iter()
        .filter(|s| s.name == "user work")
        .map(|s| (s.parent_span_id, s))
        .collect();

    let outputs = read_all(&brokers, &output);
    assert_eq!(outputs.len() as u64, RECORDS, "one output per input");
    for out in &outputs {
        let at: (i32, i64) = (
            out.header(HEADER_SRC_PARTITION).unwrap().parse().unwrap(),
            out.header(HEADER_SRC_OFFSET).unwrap().parse().unwrap(),
        );
        let i = index[&at];
        let (producer_trace, producer_span) = producer_ids(i);
        let traceparent = out
            .header(HEADER_TRACEPARENT)
            .unwrap_or_else(|| panic!("output of {at:?} has no traceparent"));
        let (version, trace, span, flags) = parse(traceparent);
        assert_eq!(version, "00");
        match producer_of(i) {
            Producer3::Sampled => {
                let s = process
                    .get(&at)
                    .unwrap_or_else(|| panic!("no span for {at:?}"));
                assert_eq!(s.span_context.trace_id(), producer_trace, "{at:?}");
                assert_eq!(
                    s.parent_span_id, producer_span,
                    "{at:?}: the producer's child"
                );
                assert_eq!(
                    (trace, span, flags.as_str()),
                    (producer_trace, s.span_context.span_id(), "01")
                );
                let nested = user.get(&s.span_context.span_id());
                assert!(
                    nested.is_some(),
                    "{at:?}: the processor's span is not the record span's child"
                );
                assert_eq!(nested.unwrap().span_context.trace_id(), producer_trace);
            }
            Producer3::Unsampled => {
                assert!(
                    !process.contains_key(&at),
                    "{at:?}: a span exported though the producer sampled the trace out"
                );
                assert_eq!(trace, producer_trace, "{at:?}: the trace goes on");
                assert_ne!(
                    span, producer_span,
                    "{at:?}: the output names tidemark's span"
                );
                assert_eq!(flags, "00", "{at:?}: the decision goes on");
            }
            Producer3::None => {
                let s = process
                    .get(&at)
                    .unwrap_or_else(|| panic!("no span for {at:?}"));
                assert_eq!(s.parent_span_id, SpanId::INVALID, "{at:?}: a root");
                assert_eq!(
                    (trace, span, flags.as_str()),
                    (s.span_context.trace_id(), s.span_context.span_id(), "01")
                );
            }
        }
    }
    let sampled = (0..RECORDS)
        .filter(|&i| producer_of(i) != Producer3::Unsampled)
        .count();
    assert_eq!(process.len(), sampled, "one span per sampled record, once");
}
