//! Topics and test input: creating a topic when it is missing, producing a JSON
//! workload with delivery confirmed.

use std::time::Duration;

use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode as Code;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::TestkitError;

/// Number of partitions of `topic`, or `None` when it does not exist.
///
/// # Errors
/// [`TestkitError::Kafka`] when no metadata arrives within `timeout`.
pub fn topic_partitions(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, TestkitError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(TestkitError::kafka("metadata client"))?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(TestkitError::kafka(format!("metadata of {topic}")))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Creates `topic` with `partitions` partitions (replication 1) unless it exists;
/// returns its partition count. Waits until the topic shows in metadata.
///
/// # Errors
/// [`TestkitError::Kafka`] when the broker is unreachable or refuses;
/// [`TestkitError::Timeout`] when the topic does not appear within 30 s.
pub fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<i32, TestkitError> {
    let timeout = Duration::from_secs(10);
    if let Some(n) = topic_partitions(brokers, topic, timeout)? {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(TestkitError::kafka("admin client"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results = block_on(admin.create_topics([&new], &opts))
        .map_err(TestkitError::kafka(format!("creating {topic}")))?;
    for r in results {
        if let Err((name, code)) = r {
            if code != Code::TopicAlreadyExists {
                return Err(TestkitError::Kafka {
                    context: format!("creating {name}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = topic_partitions(brokers, topic, timeout)? {
            return Ok(n);
        }
        if std::time::Instant::now() > deadline {
            return Err(TestkitError::Timeout(format!(
                "topic {topic} not in metadata"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
    /// Most records per produced batch (librdkafka `batch.num.messages`); `None` for
    /// 10000. Tansu 0.6.0 needs 1: its fetch from an offset inside a batch skips the
    /// rest of that batch (see [`TansuBroker`](crate::TansuBroker)).
    pub batch_records: Option<usize>,
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
            batch_records: None,
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
    brokers: &str,
    workload: &Workload,
    mut progress: impl FnMut(u64),
) -> Result<(), TestkitError> {
    let partitions = ensure_topic(brokers, &workload.topic, workload.partitions)?;
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "10")
        .set(
            "batch.num.messages",
            workload.batch_records.unwrap_or(10_000).to_string(),
        )
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Acks::default())
        .map_err(TestkitError::kafka("creating the producer"))?;
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
        match &key {
            Some(k) => record = record.key(k.as_bytes()),
            None => record = record.partition((id % partitions as u64) as i32),
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
