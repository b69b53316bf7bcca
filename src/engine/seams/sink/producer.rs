//! The producer seam: every call the sink makes to a Kafka producer, so the
//! engine's unit tests can script one (`seams::fake::FakeProducer`) the way they
//! script the consumer. [`LibrdkafkaProducer`] implements it over rdkafka's
//! `ThreadedProducer`.

use std::ffi::{c_void, CString};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{IsError, RDKafkaErrorCode};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::IntoOpaque;
use rdkafka::{ClientConfig, ClientContext};

use crate::commit::PartitionOffset;
use crate::engine::completion::progress::Ack;
use crate::engine::seams::consumer::to_list;
use crate::error::Error;

/// One record to produce, borrowed for the call (librdkafka copies what it keeps).
pub(crate) struct Produce<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Headers in order: name, value (`None`: a null value).
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// A record the producer did not take: the reason, and its ack given back.
pub(crate) type Refused = (KafkaError, Ack);

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
    fn send(&self, record: &Produce<'_>, ack: Ack) -> Result<(), Refused>;

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
    type DeliveryOpaque = Ack;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Ack) {
        ack.resolve(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// librdkafka's producer, with a topic handle per topic it produces to.
///
/// Why not rdkafka's `send`: it makes a `CString` of the topic name and has
/// librdkafka look the topic up by name for every record (`RD_KAFKA_VTYPE_TOPIC`),
/// ~0.16 µs a record on the sink path (BENCHMARKS.md, "The sink path"); here the
/// handles are made once (`rd_kafka_topic_new`) and each record names its handle
/// (`RD_KAFKA_VTYPE_RKT`). Delivery reports are rdkafka's, on the
/// `ThreadedProducer`'s thread.
pub(crate) struct LibrdkafkaProducer {
    /// Declared first: dropped (each handle destroyed) before the producer, as
    /// librdkafka requires of topic handles.
    topics: Vec<TopicHandle>,
    producer: ThreadedProducer<SinkContext>,
}

/// A topic handle of the producer (`rd_kafka_topic_t`), destroyed when dropped.
struct TopicHandle {
    name: String,
    rkt: *mut rdsys::rd_kafka_topic_t,
}

// SAFETY: librdkafka's topic handles are thread-safe (its documentation: every
// public call may be made from any thread); the handle is only read.
unsafe impl Send for TopicHandle {}
// SAFETY: as for `Send`.
unsafe impl Sync for TopicHandle {}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: made by `rd_kafka_topic_new`, destroyed once, before its client.
        unsafe { rdsys::rd_kafka_topic_destroy(self.rkt) }
    }
}

/// librdkafka's producer with `config`, with handles for `topics` (the output topic
/// and the dead-letter topic; any other is looked up by name per record).
///
/// # Errors
/// [`Error::Kafka`] when librdkafka refuses the configuration or a topic name.
pub(crate) fn create(
    config: &ClientConfig,
    topics: &[&str],
) -> Result<Box<dyn KafkaProducer>, Error> {
    let producer: ThreadedProducer<SinkContext> = config
        .create_with_context(SinkContext)
        .map_err(Error::kafka("creating the sink producer"))?;
    let mut handles = Vec::with_capacity(topics.len());
    for &name in topics {
        let c_name = CString::new(name).map_err(|e| {
            Error::Config(format!("sink: topic name {name:?} holds a NUL byte: {e}"))
        })?;
        // SAFETY: a live client and a NUL-terminated name; a null conf takes the
        // client's default topic configuration.
        let rkt = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                c_name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        if rkt.is_null() {
            return Err(Error::Config(format!(
                "sink: librdkafka refused the topic name {name:?}"
            )));
        }
        handles.push(TopicHandle {
            name: name.to_string(),
            rkt,
        });
    }
    Ok(Box::new(LibrdkafkaProducer {
        topics: handles,
        producer,
    }))
}

/// The record's headers as librdkafka's (`rd_kafka_headers_t`); the caller owns
/// them until `rd_kafka_producev` takes them.
fn native_headers(headers: &[(&str, Option<&[u8]>)]) -> *mut rdsys::rd_kafka_headers_t {
    // SAFETY: names and values are passed with their lengths (librdkafka copies
    // them); a null value with size 0 is a null header value.
    unsafe {
        let native = rdsys::rd_kafka_headers_new(headers.len());
        for (name, value) in headers {
            let (ptr, len) = value.map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len()));
            rdsys::rd_kafka_header_add(
                native,
                name.as_ptr().cast(),
                name.len() as isize,
                ptr.cast(),
                len as isize,
            );
        }
        native
    }
}

impl KafkaProducer for LibrdkafkaProducer {
    fn send(&self, record: &Produce<'_>, ack: Ack) -> Result<(), Refused> {
        use rdsys::rd_kafka_vtype_t::*;
        fn bytes(b: Option<&[u8]>) -> (*mut c_void, usize) {
            b.map_or((std::ptr::null_mut(), 0), |b| {
                (b.as_ptr() as *mut c_void, b.len())
            })
        }
        let Some(topic) = self.topics.iter().find(|t| t.name == record.topic) else {
            return Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic),
                ack,
            ));
        };
        let (payload, payload_len) = bytes(record.payload);
        let (key, key_len) = bytes(record.key);
        let headers = native_headers(record.headers);
        let opaque = ack.into_ptr();
        // SAFETY: the handle is alive (dropped only with `self`); key and payload
        // are copied (`RD_KAFKA_MSG_F_COPY`); the headers pass to librdkafka on
        // success and stay ours on failure (its documented contract, and rdkafka's
        // `BaseProducer::send`); `opaque` comes back through the delivery report or,
        // on failure, below.
        let result = unsafe {
            rdsys::rd_kafka_producev(
                self.producer.client().native_ptr(),
                RD_KAFKA_VTYPE_RKT,
                topic.rkt,
                RD_KAFKA_VTYPE_PARTITION,
                -1i32, // RD_KAFKA_PARTITION_UA: the partitioner picks
                RD_KAFKA_VTYPE_MSGFLAGS,
                rdsys::RD_KAFKA_MSG_F_COPY,
                RD_KAFKA_VTYPE_VALUE,
                payload,
                payload_len,
                RD_KAFKA_VTYPE_KEY,
                key,
                key_len,
                RD_KAFKA_VTYPE_OPAQUE,
                opaque,
                RD_KAFKA_VTYPE_HEADERS,
                headers,
                RD_KAFKA_VTYPE_END,
            )
        };
        if result.is_error() {
            // SAFETY: librdkafka did not take the headers nor the opaque.
            let ack = unsafe {
                rdsys::rd_kafka_headers_destroy(headers);
                Ack::from_ptr(opaque)
            };
            return Err((KafkaError::MessageProduction(result.into()), ack));
        }
        Ok(())
    }

    fn init_transactions(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::init_transactions(&self.producer, timeout)
    }

    fn begin_transaction(&self) -> KafkaResult<()> {
        Producer::begin_transaction(&self.producer)
    }

    fn send_offsets_to_transaction(
        &self,
        offsets: &[PartitionOffset],
        group: &GroupMetadata,
        timeout: Duration,
    ) -> KafkaResult<()> {
        match group {
            GroupMetadata::Kafka(group) => Producer::send_offsets_to_transaction(
                &self.producer,
                &to_list(offsets),
                group,
                timeout,
            ),
            #[cfg(test)]
            GroupMetadata::Fake => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidArgument,
            )),
        }
    }

    fn commit_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::commit_transaction(&self.producer, timeout)
    }

    fn abort_transaction(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::abort_transaction(&self.producer, timeout)
    }

    fn fatal_error(&self) -> Option<KafkaError> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, _)| KafkaError::MessageProduction(code))
    }

    fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::flush(&self.producer, timeout)
    }
}
