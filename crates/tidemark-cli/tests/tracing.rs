//! Tracing across Kafka, end to end on Apache Kafka and Jaeger v2: records produced
//! with known W3C `traceparent` headers (and some without) go through
//! `tidemark run --otlp-endpoint …` with a sink topic, a dead-letter topic, poison
//! records and retried ones; Jaeger's query API must hold each record's
//! `process {topic}` span (messaging attributes, the producer's span as parent, the
//! outcome), and the outputs and dead letters an independent client reads must
//! carry a `traceparent` naming that very span.

// Needs Apache Kafka and Jaeger: `scripts/test.sh` runs it (feature `broker-tests`);
// the CLI's `otel` feature (on by default) exports the spans.
#![cfg(all(feature = "broker-tests", feature = "otel"))]

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use tidemark_testkit::jaeger::{Jaeger, Span};
use tidemark_testkit::verify::{self, ReadRecord};
use tidemark_testkit::{unique_name, Broker, KafkaBroker};

/// A parsed `traceparent`: (trace id, span id, flags).
type TraceParent = (String, String, String);

/// `value` parsed as a W3C `traceparent`.
fn parse_traceparent(value: &str) -> TraceParent {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "not a W3C traceparent: {value:?}");
    assert_eq!(parts[0], "00", "version: {value:?}");
    assert_eq!(parts[1].len(), 32, "trace id: {value:?}");
    assert_eq!(parts[2].len(), 16, "span id: {value:?}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// One input: its key, whether it is poison, and the producer's context if any.
struct Input {
    key: String,
    poison: bool,
    /// (trace id, producer span id)
    context: Option<(String, String)>,
}

/// Produces `n` records to `topic` (partition `i % partitions`): every 7th is not
/// JSON (poison), every 3rd has no trace context, the rest a traceparent of a
/// trace of its own; returns them by (partition, offset).
fn produce(brokers: &str, topic: &str, n: usize, partitions: i32) -> BTreeMap<(i32, i64), Input> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..n {
        let key = format!("k{i}");
        let poison = i % 7 == 3;
        let payload = if poison {
            format!("not json {i}")
        } else {
            format!("{{\"id\":{i}}}")
        };
        let context = (i % 3 != 0).then(|| {
            (
                format!("{:032x}", 0x7e1d_0000 + i),
                format!("{:016x}", 0x5a00 + i),
            )
        });
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "app",
            value: Some("tracing-test"),
        });
        if let Some((trace, span)) = &context {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(&format!("00-{trace}-{span}-01")),
            });
        }
        let partition = (i as i32) % partitions;
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        sent.push((
            partition,
            Input {
                key,
                poison,
                context,
            },
        ));
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    // Offsets in each partition follow the order sent (one producer, acks in order).
    let mut next: HashMap<i32, i64> = HashMap::new();
    sent.into_iter()
        .map(|(p, input)| {
            let o = next.entry(p).or_default();
            *o += 1;
            ((p, *o - 1), input)
        })
        .collect()
}

fn tidemark_run(brokers: &str, jaeger: &Jaeger, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(["run", "--brokers", brokers])
        .args(["--otlp-endpoint", &jaeger.otlp_endpoint()])
        .args(["--workers", "2", "--exit-when-idle", "3"])
        .args(["-X", "session.timeout.ms=6000"])
        .args(args)
        .env("OTEL_SERVICE_NAME", "tidemark-tracing-test")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_TRACES_SAMPLER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// Every record of `topic` up to its high watermarks, as an independent client reads it.
fn read_all(brokers: &str, topic: &str) -> Vec<ReadRecord> {
    verify::read_all(brokers, topic).unwrap()
}

/// The spans of `trace`, waiting (the exporter batches) until `ready` holds of them.
fn spans_when(jaeger: &Jaeger, trace: &str, ready: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spans = jaeger.trace(trace).unwrap();
        if ready(&spans) || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tag<'a>(span: &'a Span, key: &str) -> &'a str {
    span.tags
        .get(key)
        .map(String::as_str)
        .unwrap_or("<missing>")
}

/// The trace id of output (or dead letter) `r`'s `traceparent` and the span it
/// names, as Jaeger holds it (waiting for the export).
fn span_named_by(jaeger: &Jaeger, r: &ReadRecord) -> (String, Span) {
    let at = r.source().unwrap();
    let (trace, span_id, _) = parse_traceparent(r.header("traceparent").expect("traceparent"));
    let spans = spans_when(jaeger, &trace, |spans| {
        spans.iter().any(|s| s.span_id == span_id)
    });
    let span = spans
        .into_iter()
        .find(|s| s.span_id == span_id)
        .unwrap_or_else(|| panic!("{at:?}: span {span_id} not in Jaeger's trace {trace}"));
    (trace, span)
}

/// The checks a `process` span of `input` at (partition, offset) must pass.
fn assert_process_span(span: &Span, topic: &str, group: &str, at: (i32, i64), key: &str) {
    let what = format!("process span of {topic}/{}@{}", at.0, at.1);
    assert_eq!(span.name, format!("process {topic}"), "{what}");
    assert_eq!(
        tag(span, "span.kind"),
        "consumer",
        "{what}: {:?}",
        span.tags
    );
    assert_eq!(tag(span, "messaging.system"), "kafka", "{what}");
    assert_eq!(tag(span, "messaging.operation.name"), "process", "{what}");
    assert_eq!(tag(span, "messaging.operation.type"), "process", "{what}");
    assert_eq!(tag(span, "messaging.destination.name"), topic, "{what}");
    assert_eq!(
        tag(span, "messaging.destination.partition.id"),
        at.0.to_string(),
        "{what}"
    );
    assert_eq!(tag(span, "messaging.consumer.group.name"), group, "{what}");
    assert_eq!(
        tag(span, "messaging.kafka.offset"),
        at.1.to_string(),
        "{what}"
    );
    assert_eq!(tag(span, "messaging.kafka.message.key"), key, "{what}");
}

/// A blocking processor with poison records (dead-lettered) and retried ones: each
/// record's span continues its producer's trace, its outcome is recorded, and each
/// output and dead letter names the span that produced it.
#[test]
fn process_spans_continue_the_producers_trace_into_outputs_and_dead_letters() {
    let jaeger = Jaeger::start().unwrap();
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (topic, output, dlq, group) = (
        unique_name("traced-in"),
        unique_name("traced-out"),
        unique_name("traced-dlq"),
        unique_name("traced-g"),
    );
    broker.create_topic(&topic, 2).unwrap();
    let inputs = produce(&brokers, &topic, 120, 2);

    let status = tidemark_run(&brokers, &jaeger, &["--topic", &topic, "--group", &group])
        .args(["--processor", "json", "--sink", &format!("topic:{output}")])
        .args(["--dead-letter-topic", &dlq])
        // Offsets divisible by 10 fail retriably once, then succeed.
        .args(["--test-flaky", "10:1", "--retry-backoff-ms", "50:100"])
        .status()
        .unwrap();
    assert!(status.success(), "tidemark run: {status}");

    // What an independent client reads: one output per good input, one dead letter
    // per poison one, each with a traceparent.
    let mut produced: BTreeMap<(i32, i64), (String, TraceParent)> = BTreeMap::new();
    for (to, records) in [
        (&output, read_all(&brokers, &output)),
        (&dlq, read_all(&brokers, &dlq)),
    ] {
        for r in records {
            let source = r.source().expect("source headers");
            let traceparent = r
                .header("traceparent")
                .unwrap_or_else(|| panic!("{to} record of {source:?} has no traceparent"));
            assert_eq!(
                r.headers.iter().filter(|(k, _)| k == "traceparent").count(),
                1
            );
            produced.insert(source, (to.clone(), parse_traceparent(traceparent)));
        }
    }
    assert_eq!(
        produced.len(),
        inputs.len(),
        "an output or dead letter per input"
    );

    let mut new_traces = std::collections::BTreeSet::new();
    for (&at, input) in &inputs {
        let (to, (trace, span_id, flags)) = &produced[&at];
        assert_eq!(to, if input.poison { &dlq } else { &output }, "{at:?}");
        assert_eq!(
            flags, "01",
            "sampled (the producer's flag, parent-based sampler)"
        );
        match &input.context {
            Some((producer_trace, producer_span)) => {
                assert_eq!(
                    trace, producer_trace,
                    "{at:?}: the output continues the producer's trace"
                );
                assert_ne!(
                    span_id, producer_span,
                    "{at:?}: the output names tidemark's span, not the producer's"
                );
            }
            None => {
                assert!(
                    new_traces.insert(trace.clone()),
                    "{at:?}: a new trace per record without context"
                );
            }
        }
    }

    // What Jaeger holds: the span each output names, with its parent and outcome.
    for (&at, input) in &inputs {
        let (_, (trace, span_id, _)) = &produced[&at];
        let retried = at.1 % 10 == 0;
        let attempts = if retried { 2 } else { 1 };
        let spans = spans_when(&jaeger, trace, |spans| {
            spans
                .iter()
                .filter(|s| {
                    s.tags.get("messaging.kafka.offset") == Some(&at.1.to_string())
                        && s.tags.get("messaging.destination.partition.id")
                            == Some(&at.0.to_string())
                })
                .count()
                >= attempts
        });
        let mine: Vec<&Span> = spans
            .iter()
            .filter(|s| {
                tag(s, "messaging.kafka.offset") == at.1.to_string()
                    && tag(s, "messaging.destination.partition.id") == at.0.to_string()
            })
            .collect();
        assert_eq!(
            mine.len(),
            attempts,
            "{at:?}: one process span per attempt in trace {trace}: {spans:?}"
        );
        let last = mine
            .iter()
            .find(|s| &s.span_id == span_id)
            .unwrap_or_else(|| panic!("{at:?}: no span {span_id} in trace {trace}: {mine:?}"));
        assert_process_span(last, &topic, &group, at, &input.key);
        let producer = input.context.as_ref().map(|(_, s)| s.clone());
        if input.poison {
            assert_eq!(tag(last, "tidemark.outcome"), "dead_lettered", "{at:?}");
            assert_eq!(tag(last, "error.type"), "permanent", "{at:?}");
            assert_eq!(tag(last, "otel.status_code"), "ERROR", "{at:?}");
        } else {
            assert_eq!(tag(last, "tidemark.outcome"), "complete", "{at:?}");
        }
        if retried {
            // The retry is the failed attempt's child, in the same trace.
            let first = mine.iter().find(|s| &s.span_id != span_id).unwrap();
            assert_eq!(
                first.parent, producer,
                "{at:?}: the producer's span is the first attempt's parent"
            );
            assert_eq!(
                last.parent.as_ref(),
                Some(&first.span_id),
                "{at:?}: the retry is a child of the failed attempt"
            );
            assert_eq!(tag(first, "tidemark.outcome"), "retried", "{at:?}");
            assert_eq!(tag(first, "error.type"), "retriable", "{at:?}");
            assert_eq!(first.events, vec!["retry".to_string()], "{at:?}");
        } else {
            assert_eq!(
                last.parent, producer,
                "{at:?}: the producer's span is the parent"
            );
        }
    }
}

/// An async processor: each record's span continues its producer's trace and the
/// outputs name it.
#[test]
fn async_process_spans_continue_the_producers_trace() {
    let jaeger = Jaeger::start().unwrap();
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, output, group) = (
        unique_name("traced-async-in"),
        unique_name("traced-async-out"),
        unique_name("traced-async-g"),
    );
    broker.create_topic(&input, 2).unwrap();
    let inputs: BTreeMap<_, _> = produce(&brokers, &input, 60, 2)
        .into_iter()
        .filter(|(_, i)| !i.poison)
        .collect();
    // `io` passes every payload through, poison or not.
    let all = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(10)).unwrap();
    let status = tidemark_run(&brokers, &jaeger, &["--topic", &input, "--group", &group])
        .args([
            "--processor",
            "io:200",
            "--sink",
            &format!("topic:{output}"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "tidemark run: {status}");
    let records = read_all(&brokers, &output);
    assert_eq!(records.len() as i64, all.values().sum::<i64>());
    for r in records {
        let at = r.source().unwrap();
        let Some(input_record) = inputs.get(&at) else {
            continue;
        };
        let (trace, span) = span_named_by(&jaeger, &r);
        let span = &span;
        assert_process_span(span, &input, &group, at, &input_record.key);
        match &input_record.context {
            Some((producer_trace, producer_span)) => {
                assert_eq!(&trace, producer_trace, "{at:?}");
                assert_eq!(span.parent.as_ref(), Some(producer_span), "{at:?}");
            }
            None => assert_eq!(span.parent, None, "{at:?}"),
        }
        assert_eq!(tag(span, "tidemark.outcome"), "complete", "{at:?}");
    }
}

/// `--producer-context link`: each record's span starts a trace of its own and links
/// to the producer's span; the outputs carry the new trace.
#[test]
fn linked_process_spans_start_their_own_trace() {
    let jaeger = Jaeger::start().unwrap();
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (topic, output, group) = (
        unique_name("linked-in"),
        unique_name("linked-out"),
        unique_name("linked-g"),
    );
    broker.create_topic(&topic, 1).unwrap();
    let inputs = produce(&brokers, &topic, 30, 1);
    let status = tidemark_run(&brokers, &jaeger, &["--topic", &topic, "--group", &group])
        .args(["--processor", "noop", "--sink", &format!("topic:{output}")])
        .args(["--producer-context", "link"])
        .status()
        .unwrap();
    assert!(status.success(), "tidemark run: {status}");
    let records = read_all(&brokers, &output);
    assert_eq!(records.len(), inputs.len());
    for r in records {
        let at = r.source().unwrap();
        let input = &inputs[&at];
        let (trace, span) = span_named_by(&jaeger, &r);
        let span = &span;
        assert_process_span(span, &topic, &group, at, &input.key);
        assert_eq!(span.parent, None, "{at:?}: a root span");
        match &input.context {
            Some((producer_trace, producer_span)) => {
                assert_ne!(&trace, producer_trace, "{at:?}: a trace of its own");
                assert_eq!(
                    span.links,
                    vec![(producer_trace.clone(), producer_span.clone())],
                    "{at:?}: linked to the producer's span"
                );
            }
            None => assert!(span.links.is_empty(), "{at:?}"),
        }
    }
}
