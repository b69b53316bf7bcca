//! The output side: a producer whose delivery reports complete input records.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::engine::worker::Ack;
use crate::error::Error;
use crate::record::{OutputRecord, Record};

/// Header naming the input record's partition on every sink output (decimal string).
pub const HEADER_SRC_PARTITION: &str = "tidemark-src-partition";
/// Header naming the input record's offset on every sink output (decimal string).
pub const HEADER_SRC_OFFSET: &str = "tidemark-src-offset";

pub(crate) struct SinkContext;

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        ack.resolve(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

/// Produces outputs to one topic; its own thread serves delivery reports, so workers
/// sending to it never depend on the poll thread.
pub(crate) struct Sink {
    producer: ThreadedProducer<SinkContext>,
    topic: String,
}

impl Sink {
    pub(crate) fn new(config: &crate::Config, topic: &str) -> Result<Self, Error> {
        let producer = config
            .producer_client_config()
            .create_with_context(SinkContext)
            .map_err(Error::kafka("creating the sink producer"))?;
        Ok(Sink {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Queues `output` of `input`; `ack` is resolved by the delivery report (or at once
    /// when the producer refuses the record). Blocks while librdkafka's queue is full.
    pub(crate) fn send(&self, input: &Record, output: OutputRecord, ack: Ack) {
        let partition = input.partition.to_string();
        let offset = input.offset.to_string();
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: HEADER_SRC_PARTITION,
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: HEADER_SRC_OFFSET,
                value: Some(offset.as_bytes()),
            });
        let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(ack))
            .payload(&output.payload)
            .headers(headers);
        if let Some(key) = &output.key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, back)) => {
                    back.delivery_opaque.resolve(Err(e.to_string()));
                    return;
                }
            }
        }
    }

    /// Waits up to `timeout` for every queued output to be acknowledged.
    pub(crate) fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "sink flush did not finish");
        }
    }
}
