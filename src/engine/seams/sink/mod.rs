//! The output side: a producer whose delivery reports complete input records, or
//! (feature `postgres`) a PostgreSQL table whose committed rows do.

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_tls;
mod producer;

#[cfg(test)]
pub(crate) use producer::Refused;
pub(crate) use producer::{GroupMetadata, KafkaProducer, Produce};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use smallvec::SmallVec;

use crate::commit::{CommitError, PartitionOffset};
use crate::engine::completion::progress::Ack;
use crate::engine::observation::trace::RecordSpan;
use crate::error::Error;
use crate::record::{OutputRecord, Record};

/// A transaction commit unanswered after this many times its librdkafka timeout is
/// stuck ([`CommitError::TransactionStuck`]).
pub(crate) const STUCK_AFTER: u32 = 2;

/// Header naming the input record's partition on every sink output (decimal string).
pub const HEADER_SRC_PARTITION: &str = "tidemark-src-partition";
/// Header naming the input record's offset on every sink output (decimal string).
pub const HEADER_SRC_OFFSET: &str = "tidemark-src-offset";
/// W3C Trace Context's `traceparent` header (`00-{trace id}-{span id}-{flags}`,
/// lower-case hex): read from inputs, and (feature `otel`) written on every output
/// and dead letter, naming the `process` span that produced it.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// W3C Trace Context's `tracestate` header (vendor entries), carried with
/// [`HEADER_TRACEPARENT`] when the context has one.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// Where outputs go.
enum Output {
    /// Nowhere (`SinkConfig::None`: the sink is there for dead letters).
    None,
    /// This topic, through the producer.
    Topic(String),
    /// A PostgreSQL table.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresWriter),
}

/// Sends outputs to one topic or table, and dead letters to the dead-letter topic;
/// the producer's own thread serves delivery reports (the PostgreSQL writers run on
/// a runtime of their own), so workers sending to it never depend on the poll
/// thread.
pub(crate) struct Sink {
    /// The producer, for an output topic or the dead-letter topic.
    producer: Option<Box<dyn KafkaProducer>>,
    output: Output,
    /// The dead-letter topic, if any.
    dead_letter_topic: Option<String>,
    /// Exactly-once: transactions aborted so far. A task dispatched before an abort
    /// carries the older count and sends nothing more, so no output of an aborted
    /// transaction's records can slip into the next transaction.
    aborts: AtomicU64,
    /// Held (shared) around each send and (exclusive) around an abort, so a send
    /// either completes before the abort or sees the new count.
    gate: RwLock<()>,
    /// Transactions started (exactly-once): only then can an abort happen, so only
    /// then do sends take the gate (no shared lock per output otherwise).
    transactional: AtomicBool,
}

impl Sink {
    /// The producer of `config`'s output topic and dead-letter topic; `None` when it
    /// has neither.
    ///
    /// # Errors
    /// [`Error::Kafka`] when librdkafka refuses the producer configuration;
    /// [`Error::Database`] when the PostgreSQL sink cannot connect or prepare its
    /// table; [`Error::Config`] for a PostgreSQL sink in a build without the
    /// `postgres` feature.
    pub(crate) fn new(config: &crate::Config) -> Result<Option<Self>, Error> {
        let dead_letter_topic = config
            .failures
            .dead_letter
            .as_ref()
            .map(|d| d.topic.clone());
        let output = match &config.sink {
            crate::SinkConfig::Topic { topic } => Output::Topic(topic.clone()),
            crate::SinkConfig::None if dead_letter_topic.is_none() => return Ok(None),
            crate::SinkConfig::None => Output::None,
            #[cfg(feature = "postgres")]
            crate::SinkConfig::Postgres(table) => {
                Output::Postgres(postgres::PostgresWriter::start(table)?)
            }
            #[cfg(not(feature = "postgres"))]
            crate::SinkConfig::Postgres(_) => {
                return Err(Error::Config(
                    "sink: tidemark was built without the `postgres` feature".into(),
                ))
            }
        };
        let topics: Vec<&str> = match &output {
            Output::Topic(topic) => Some(topic.as_str()),
            _ => None,
        }
        .into_iter()
        .chain(dead_letter_topic.as_deref())
        .collect();
        let producer = if topics.is_empty() {
            None
        } else {
            Some(producer::create(&config.producer_client_config(), &topics)?)
        };
        Ok(Some(Sink::with(producer, output, dead_letter_topic)))
    }

    fn with(
        producer: Option<Box<dyn KafkaProducer>>,
        output: Output,
        dead_letter_topic: Option<String>,
    ) -> Self {
        Sink {
            producer,
            output,
            dead_letter_topic,
            aborts: AtomicU64::new(0),
            gate: RwLock::new(()),
            transactional: AtomicBool::new(false),
        }
    }

    /// A sink over `producer` (the engine's unit tests give a fake): outputs to
    /// `output_topic` when given, dead letters to `dead_letter_topic` when given.
    #[cfg(test)]
    pub(crate) fn over(
        producer: Box<dyn KafkaProducer>,
        output_topic: Option<&str>,
        dead_letter_topic: Option<&str>,
    ) -> Self {
        let output = output_topic.map_or(Output::None, |t| Output::Topic(t.to_string()));
        Sink::with(
            Some(producer),
            output,
            dead_letter_topic.map(str::to_string),
        )
    }

    /// True when outputs have a topic or a table to go to.
    pub(crate) fn has_output(&self) -> bool {
        !matches!(self.output, Output::None)
    }

    /// True when outputs go to a topic (what exactly-once transactions cover).
    pub(crate) fn has_output_topic(&self) -> bool {
        matches!(self.output, Output::Topic(_))
    }

    fn producer(&self) -> &dyn KafkaProducer {
        self.producer
            .as_deref()
            .expect("a sink with an output topic or a dead-letter topic has a producer")
    }

    /// The abort gate, shared, for one send — once transactions started; before,
    /// no abort can happen and nothing is taken.
    fn gate(&self) -> Option<parking_lot::RwLockReadGuard<'_, ()>> {
        self.transactional
            .load(Ordering::Acquire)
            .then(|| self.gate.read())
    }

    /// Transactions aborted so far (see [`Sink::send`]).
    pub(crate) fn aborts(&self) -> u64 {
        self.aborts.load(Ordering::Acquire)
    }

    /// Queues `output` of `input`; `ack` is resolved by the delivery report (or at once
    /// when the producer refuses the record). Blocks while librdkafka's queue is full.
    /// A task dispatched before an abort (`aborts` lower than now) sends nothing: the
    /// ack resolves at once, and the record, whose completion belongs to an old
    /// epoch, is processed again after the rewind.
    /// `index` is the output's position among its input's outputs (the PostgreSQL
    /// row's `src_output`). The output carries `span`'s W3C trace context in place of
    /// any it had (feature `otel`; nothing when there is no span).
    pub(crate) fn send(
        &self,
        input: &Record,
        index: usize,
        output: OutputRecord,
        ack: Ack,
        aborts: u64,
        span: &RecordSpan,
    ) {
        let topic = match &self.output {
            Output::Topic(topic) => topic,
            #[cfg(feature = "postgres")]
            Output::Postgres(writer) => return writer.send(input, index, output, ack),
            Output::None => unreachable!("outputs are sent only with an output topic or table"),
        };
        let _ = index;
        let _gate = self.gate();
        if aborts != self.aborts() {
            ack.resolve(Ok(()));
            return;
        }
        let (mut partition, mut offset) = (itoa::Buffer::new(), itoa::Buffer::new());
        let context = span.context_headers();
        let headers = with_headers(
            &output.headers,
            [
                (
                    HEADER_SRC_PARTITION,
                    partition.format(input.partition).as_bytes(),
                ),
                (HEADER_SRC_OFFSET, offset.format(input.offset).as_bytes()),
            ],
            &context,
        );
        self.produce(
            &Produce {
                topic,
                key: output.key.as_deref(),
                payload: Some(&output.payload[..]),
                headers: &headers,
            },
            ack,
        );
    }

    /// Queues `input` to the dead-letter topic with its key, value and headers, plus
    /// `tidemark-src-topic`, `tidemark-src-partition`, `tidemark-src-offset`,
    /// `tidemark-error` (`error`) and `tidemark-attempts`; `ack` resolves with the
    /// delivery report. `aborts` and `span` as in [`send`](Self::send).
    pub(crate) fn dead_letter(
        &self,
        input: &Record,
        error: &str,
        attempts: u32,
        ack: Ack,
        aborts: u64,
        span: &RecordSpan,
    ) {
        let _gate = self.gate();
        if aborts != self.aborts() {
            ack.resolve(Ok(()));
            return;
        }
        let topic = self
            .dead_letter_topic
            .as_deref()
            .expect("dead letters are sent only with a dead-letter topic");
        let (mut partition, mut offset, mut attempts_text) = (
            itoa::Buffer::new(),
            itoa::Buffer::new(),
            itoa::Buffer::new(),
        );
        let context = span.context_headers();
        let headers = with_headers(
            &input.headers,
            [
                (crate::failures::HEADER_SRC_TOPIC, input.topic.as_bytes()),
                (
                    HEADER_SRC_PARTITION,
                    partition.format(input.partition).as_bytes(),
                ),
                (HEADER_SRC_OFFSET, offset.format(input.offset).as_bytes()),
                (crate::failures::HEADER_ERROR, error.as_bytes()),
                (
                    crate::failures::HEADER_ATTEMPTS,
                    attempts_text.format(attempts).as_bytes(),
                ),
            ],
            &context,
        );
        self.produce(
            &Produce {
                topic,
                key: input.key.as_deref(),
                payload: input.payload.as_deref(),
                headers: &headers,
            },
            ack,
        );
    }

    /// Queues `record`, waiting while librdkafka's queue is full; a record the
    /// producer refuses resolves its ack with the error at once.
    fn produce(&self, record: &Produce<'_>, mut ack: Ack) {
        loop {
            match self.producer().send(record, ack) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), a)) => {
                    ack = a;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, ack)) => {
                    ack.resolve(Err(e));
                    return;
                }
            }
        }
    }

    /// Exactly-once: registers the `transactional.id` with the transaction coordinator
    /// (fencing older instances with the same id) and opens the first transaction.
    pub(crate) fn start_transactions(&self, timeout: Duration) -> KafkaResult<()> {
        // Before any record is dispatched: every send from here on takes the gate.
        self.transactional.store(true, Ordering::Release);
        self.producer().init_transactions(timeout)?;
        self.producer().begin_transaction()
    }

    /// Exactly-once: adds the consumed `offsets` to the open transaction, commits it
    /// (its outputs and the offsets become visible together), and opens the next one.
    /// The caller has drained the records in flight, so every output of a record
    /// below `offsets` is in this or an earlier transaction, and none above.
    ///
    /// The librdkafka calls run on a thread of their own, waited for at most
    /// [`STUCK_AFTER`] times `timeout`: `send_offsets_to_transaction` can block past
    /// its timeout for good when the group coordinator's broker has gone (librdkafka
    /// #5456, #5511; open in 2.12). Then this returns
    /// [`CommitError::TransactionStuck`] and the thread keeps the sink (and its
    /// producer) alive, so nothing waits on it again.
    pub(crate) fn commit_transaction(
        self: &Arc<Self>,
        offsets: &[PartitionOffset],
        group: GroupMetadata,
        timeout: Duration,
    ) -> Result<(), CommitError> {
        fn commit(
            producer: &dyn KafkaProducer,
            offsets: &[PartitionOffset],
            group: &GroupMetadata,
            timeout: Duration,
        ) -> KafkaResult<()> {
            producer.send_offsets_to_transaction(offsets, group, timeout)?;
            producer.commit_transaction(timeout)?;
            producer.begin_transaction()
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (sink, owned) = (Arc::clone(self), offsets.to_vec());
        let group = Arc::new(group);
        let for_thread = Arc::clone(&group);
        let spawned = std::thread::Builder::new()
            .name("tidemark-transaction".into())
            .spawn(move || {
                let _ = tx.send(commit(sink.producer(), &owned, &for_thread, timeout));
            });
        if let Err(e) = spawned {
            // No thread to spare: the calls block this one, unbounded as before.
            tracing::warn!(error = %e, "no thread for the transaction; committing it inline");
            return commit(self.producer(), offsets, &group, timeout).map_err(CommitError::from);
        }
        let limit = timeout * STUCK_AFTER;
        match rx.recv_timeout(limit) {
            Ok(result) => result.map_err(CommitError::from),
            Err(_) => Err(CommitError::TransactionStuck {
                waited_ms: limit.as_millis() as u64,
            }),
        }
    }

    /// Exactly-once: aborts the open transaction (its outputs are never visible to
    /// `read_committed` readers) and opens the next one.
    pub(crate) fn abort_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        let _gate = self.gate.write();
        self.aborts.fetch_add(1, Ordering::AcqRel);
        self.producer().abort_transaction(timeout)?;
        self.producer().begin_transaction()
    }

    /// The producer's fatal error, if it has one (exactly-once: fenced by a newer
    /// instance with the same `transactional.id`); nothing it sends succeeds then.
    pub(crate) fn fatal_error(&self) -> Option<KafkaError> {
        self.producer.as_ref()?.fatal_error()
    }

    /// Waits up to `timeout` for every queued output to be acknowledged.
    pub(crate) fn flush(&self, timeout: Duration) {
        #[cfg(feature = "postgres")]
        if let Output::Postgres(writer) = &self.output {
            writer.flush(timeout);
        }
        if let Some(producer) = &self.producer {
            if let Err(e) = producer.flush(timeout) {
                tracing::warn!(error = %e, "sink flush did not finish");
            }
        }
    }
}

/// Headers of one produced record, borrowed: inline up to 8 (no allocation for a
/// record with a few headers of its own).
type HeaderList<'a> = SmallVec<[(&'a str, Option<&'a [u8]>); 8]>;

/// The headers of a produced record: `own` (the output's, or the dead letter's
/// input's) in order, then `engine`'s, then the span's W3C trace `context`
/// (`RecordSpan::context_headers`), which replaces any `traceparent`/`tracestate`
/// among `own` when there is one.
fn with_headers<'a, const N: usize>(
    own: &'a [crate::record::Header],
    engine: [(&'a str, &'a [u8]); N],
    context: &'a [(&'static str, String)],
) -> HeaderList<'a> {
    let replaced =
        |key: &str| !context.is_empty() && (key == HEADER_TRACEPARENT || key == HEADER_TRACESTATE);
    let mut headers = HeaderList::new();
    headers.extend(
        own.iter()
            .filter(|h| !replaced(&h.key))
            .map(|h| (h.key.as_str(), h.value.as_deref())),
    );
    headers.extend(engine.into_iter().map(|(key, value)| (key, Some(value))));
    headers.extend(
        context
            .iter()
            .map(|(key, value)| (*key, Some(value.as_bytes()))),
    );
    headers
}
