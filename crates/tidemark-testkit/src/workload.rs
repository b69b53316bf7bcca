//! Topics and test input: creating a topic when it is missing, producing a JSON
//! workload with delivery confirmed.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde::{Deserialize, Serialize};

use crate::TestkitError;

/// Number of partitions of `topic`, or `None` when it does not exist
/// ([`tidemark::topic_partitions`]).
///
/// # Errors
/// [`TestkitError::Tidemark`] when no metadata arrives within `timeout`.
pub fn topic_partitions(
    brokers: impl Into<tidemark::Connection>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, TestkitError> {
    Ok(tidemark::topic_partitions(brokers, topic, timeout)?)
}

/// Creates `topic` with `partitions` partitions (the broker's
/// `default.replication.factor`: 1 on a single node, 3 on [`crate::KafkaCluster`])
/// unless it exists;
/// returns its partition count ([`tidemark::ensure_topic`]).
///
/// # Errors
/// [`TestkitError::Tidemark`] when the broker is unreachable, refuses, or the topic
/// does not appear in time.
pub fn ensure_topic(
    brokers: impl Into<tidemark::Connection>,
    topic: &str,
    partitions: i32,
) -> Result<i32, TestkitError> {
    Ok(tidemark::ensure_topic(brokers, topic, partitions, -1)?)
}

/// The JSON value of every workload record: `{"id":7,"key":"k3","data":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// Sequence number of the record in the workload, from 0.
    pub id: u64,
    /// The record's key (also the Kafka key), `k{id % keys}`; absent without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Filler that brings the payload to the requested size.
    pub data: String,
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Topic to produce to (created with `partitions` partitions when missing).
    pub topic: String,
    /// Number of records.
    pub records: u64,
    /// Partitions of the topic when it is created.
    pub partitions: i32,
    /// Approximate payload size in bytes (the JSON envelope included).
    pub payload_bytes: usize,
    /// Distinct keys; 0 means no key, records spread round-robin over partitions.
    pub keys: u64,
    /// First record id (to append a second workload after a first one).
    pub first_id: u64,
    /// Record `id` goes to partition `id % partitions` even when it has a key (with
    /// `keys` a multiple of `partitions`, each key stays in one partition): offsets
    /// are then known in advance, `id / partitions` on a topic produced from id 0.
    /// Otherwise keyed records go where the producer's partitioner puts them.
    pub partition_by_id: bool,
}

impl Workload {
    /// `records` records of about 100 bytes, 8 keys, over `partitions` partitions.
    pub fn new(topic: impl Into<String>, records: u64, partitions: i32) -> Self {
        Workload {
            topic: topic.into(),
            records,
            partitions,
            payload_bytes: 100,
            keys: 0,
            first_id: 0,
            partition_by_id: false,
        }
    }
}

/// Produces `workload` to `brokers` and waits until every record is acknowledged
/// (`acks=all`); calls `progress` with the number acknowledged so far now and then.
///
/// # Errors
/// [`TestkitError::Kafka`] on the first record the broker refused, or when the
/// producer cannot be created; [`TestkitError::Timeout`] when the records are not all
/// acknowledged within 120 s.
pub fn produce(
    brokers: impl Into<tidemark::Connection>,
    workload: &Workload,
    progress: impl FnMut(u64),
) -> Result<(), TestkitError> {
    WorkloadProducer::new(brokers, &workload.topic, workload.partitions)?
        .produce(workload, progress)
}

/// A producer of workloads to one topic, kept across calls (to produce a workload in
/// rounds, `first_id` advancing).
pub struct WorkloadProducer {
    producer: BaseProducer<Acks>,
    /// Partitions of the topic.
    partitions: i32,
}

impl WorkloadProducer {
    /// A producer to `topic` (created with `partitions` partitions when missing).
    ///
    /// # Errors
    /// [`TestkitError::Kafka`] when the topic cannot be created or the producer
    /// cannot be created.
    pub fn new(
        brokers: impl Into<tidemark::Connection>,
        topic: &str,
        partitions: i32,
    ) -> Result<Self, TestkitError> {
        let connection = brokers.into();
        let partitions = ensure_topic(&connection, topic, partitions)?;
        let producer: BaseProducer<Acks> = crate::verify::client_config(&connection)
            .set("acks", "all")
            .set("linger.ms", "10")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .create_with_context(Acks::default())
            .map_err(TestkitError::kafka("creating the producer"))?;
        Ok(WorkloadProducer {
            producer,
            partitions,
        })
    }

    /// Produces `workload` (its topic must be this producer's) and waits until every
    /// record is acknowledged (`acks=all`); calls `progress` with the number
    /// acknowledged by this producer so far now and then.
    ///
    /// # Errors
    /// [`TestkitError::Kafka`] on the first record the broker refused;
    /// [`TestkitError::Timeout`] when the records are not all acknowledged within
    /// 120 s.
    pub fn produce(
        &self,
        workload: &Workload,
        mut progress: impl FnMut(u64),
    ) -> Result<(), TestkitError> {
        let (producer, partitions) = (&self.producer, self.partitions);
        let filler_len = workload.payload_bytes.saturating_sub(40);
        let filler: String = "x".repeat(filler_len);
        for id in workload.first_id..workload.first_id + workload.records {
            let key = (workload.keys > 0).then(|| format!("k{}", id % workload.keys));
            let payload = serde_json::to_vec(&WorkloadRecord {
                id,
                key: key.clone(),
                data: filler.clone(),
            })
            .expect("a workload record serializes");
            let mut record = BaseRecord::to(&workload.topic).payload(&payload);
            if let Some(k) = &key {
                record = record.key(k.as_bytes());
            }
            if key.is_none() || workload.partition_by_id {
                record = record.partition((id % partitions as u64) as i32);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(TestkitError::kafka("producing")(e)),
                }
            }
            producer.poll(Duration::ZERO);
            if id % 10_000 == 0 {
                progress(producer.context().acked());
            }
            producer.context().check()?;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while producer.in_flight_count() > 0 {
            producer.poll(Duration::from_millis(50));
            producer.context().check()?;
            progress(producer.context().acked());
            if std::time::Instant::now() > deadline {
                return Err(TestkitError::Timeout("workload not acknowledged".into()));
            }
        }
        producer.context().check()?;
        progress(producer.context().acked());
        Ok(())
    }
}

/// Counts delivery reports; remembers the first failure.
#[derive(Default)]
struct Acks {
    acked: std::sync::atomic::AtomicU64,
    failed: std::sync::Mutex<Option<KafkaError>>,
}

impl Acks {
    fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn check(&self) -> Result<(), TestkitError> {
        match self.failed.lock().unwrap().clone() {
            Some(e) => Err(TestkitError::kafka("delivery")(e)),
            None => Ok(()),
        }
    }
}

impl rdkafka::ClientContext for Acks {}

impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.lock().unwrap().get_or_insert(e.clone());
            }
        }
    }
}
