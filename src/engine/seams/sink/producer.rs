//! The producer seam: every call the sink makes to a Kafka producer, so the
//! engine's unit tests can script one (`seams::fake::FakeProducer`) the way they
//! script the consumer. rdkafka's `ThreadedProducer` implements it.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
#[cfg(test)]
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

use crate::commit::PartitionOffset;
use crate::engine::completion::progress::Ack;
use crate::engine::seams::consumer::to_list;
use crate::error::Error;

/// One record to produce, borrowed for the call.
pub(crate) struct Produce<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: OwnedHeaders,
}

/// A record the producer did not take, given back with its ack and the reason.
pub(crate) type Refused<'a> = (KafkaError, Produce<'a>, Box<Ack>);

/// The consumer's group metadata sent with a transaction's offsets (KIP-447):
/// librdkafka's, or a test's stand-in.
pub(crate) enum GroupMetadata {
    /// librdkafka's (`rd_kafka_consumer_group_metadata`).
    Kafka(ConsumerGroupMetadata),
    /// The fake consumer's (unit tests).
    #[cfg(test)]
    Fake,
}

/// The producer calls of the sink. Methods that take a timeout block up to it; the
/// others return at once.
pub(crate) trait KafkaProducer: Send + Sync {
    /// Queues `record`; `ack` resolves with its delivery report. A record the
    /// producer cannot take comes back with its ack and the reason (`QueueFull`:
    /// try again once the queue drains).
    #[allow(clippy::result_large_err)] // the record comes back by value: no allocation per send
    fn send<'a>(&self, record: Produce<'a>, ack: Box<Ack>) -> Result<(), Refused<'a>>;

    /// Registers the `transactional.id` (fencing older instances with it).
    fn init_transactions(&self, timeout: Duration) -> KafkaResult<()>;

    /// Opens a transaction.
    fn begin_transaction(&self) -> KafkaResult<()>;

    /// Adds the consumed `offsets` (next offsets to read) of `group` to the open
    /// transaction.
    fn send_offsets_to_transaction(
        &self,
        offsets: &[PartitionOffset],
        group: &GroupMetadata,
        timeout: Duration,
    ) -> KafkaResult<()>;

    /// Commits the open transaction: its records and offsets become visible together.
    fn commit_transaction(&self, timeout: Duration) -> KafkaResult<()>;

    /// Aborts the open transaction: its records are never visible to
    /// `read_committed` readers.
    fn abort_transaction(&self, timeout: Duration) -> KafkaResult<()>;

    /// The producer's fatal error (fenced by a newer instance), if any.
    fn fatal_error(&self) -> Option<KafkaError>;

    /// Waits up to `timeout` for every queued record's delivery report.
    fn flush(&self, timeout: Duration) -> KafkaResult<()>;
}

/// Resolves each record's ack with its delivery report, on the producer's thread.
struct SinkContext;

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        ack.resolve(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// librdkafka's producer with `config`.
///
/// # Errors
/// [`Error::Kafka`] when librdkafka refuses the configuration.
pub(crate) fn create(config: &ClientConfig) -> Result<Box<dyn KafkaProducer>, Error> {
    let producer: ThreadedProducer<SinkContext> = config
        .create_with_context(SinkContext)
        .map_err(Error::kafka("creating the sink producer"))?;
    Ok(Box::new(producer))
}

impl KafkaProducer for ThreadedProducer<SinkContext> {
    fn send<'a>(&self, record: Produce<'a>, ack: Box<Ack>) -> Result<(), Refused<'a>> {
        let mut base = BaseRecord::<[u8], [u8], Box<Ack>>::with_opaque_to(record.topic, ack)
            .headers(record.headers);
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(payload) = record.payload {
            base = base.payload(payload);
        }
        ThreadedProducer::send(self, base).map_err(|(e, back)| {
            let record = Produce {
                topic: record.topic,
                key: back.key,
                payload: back.payload,
                headers: back.headers.unwrap_or_default(),
            };
            (e, record, back.delivery_opaque)
        })
    }

    fn init_transactions(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::init_transactions(self, timeout)
    }

    fn begin_transaction(&self) -> KafkaResult<()> {
        Producer::begin_transaction(self)
    }

    fn send_offsets_to_transaction(
        &self,
        offsets: &[PartitionOffset],
        group: &GroupMetadata,
        timeout: Duration,
    ) -> KafkaResult<()> {
        match group {
            GroupMetadata::Kafka(group) => {
                Producer::send_offsets_to_transaction(self, &to_list(offsets), group, timeout)
            }
            #[cfg(test)]
            GroupMetadata::Fake => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidArgument,
            )),
        }
    }

    fn commit_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::commit_transaction(self, timeout)
    }

    fn abort_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::abort_transaction(self, timeout)
    }

    fn fatal_error(&self) -> Option<KafkaError> {
        self.client()
            .fatal_error()
            .map(|(code, _)| KafkaError::MessageProduction(code))
    }

    fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::flush(self, timeout)
    }
}
