//! Consumer lag of a group, as `kafka-consumer-groups.sh --describe` reports it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::IsError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::Error;

/// Lag of one partition for one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The group's committed offset (next offset to read), `None` when the group has
    /// committed nothing for this partition.
    pub committed: Option<i64>,
    /// The partition's high watermark: the offset the next produced record gets.
    pub high_watermark: i64,
    /// Low watermark: the earliest offset still in the log.
    pub low_watermark: i64,
}

impl PartitionLag {
    /// Records not yet consumed by the group: high watermark − committed offset, or
    /// high − low watermark when nothing is committed (what `auto.offset.reset=earliest`
    /// would read). Never negative.
    pub fn lag(&self) -> i64 {
        (self.high_watermark - self.committed.unwrap_or(self.low_watermark)).max(0)
    }
}

/// Committed offset, watermarks and lag of `group` for every partition of `topic`.
///
/// Read-only: it uses a consumer with `group.id = group` that never joins the group
/// (no subscribe), so a running member is not disturbed.
///
/// # Errors
/// [`Error::BrokerUnreachable`] when no metadata arrives within `timeout`;
/// [`Error::UnknownTopic`] when `topic` does not exist; [`Error::Kafka`] when the
/// coordinator or a partition leader does not answer within `timeout`.
pub fn consumer_lag(
    brokers: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<PartitionLag>, Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(Error::kafka("creating the lag client"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| Error::BrokerUnreachable {
            brokers: brokers.to_string(),
            timeout_ms: timeout.as_millis() as u64,
            source,
        })?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .filter(|p: &Vec<i32>| !p.is_empty())
        .ok_or_else(|| Error::UnknownTopic(topic.to_string()))?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(Error::kafka("fetching committed offsets"))?;
    let marks = watermarks(brokers, topic, &partitions, timeout)?;
    let mut rows = Vec::with_capacity(partitions.len());
    for (p, (low, high)) in marks {
        let committed = committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        rows.push(PartitionLag {
            topic: topic.to_string(),
            partition: p,
            committed,
            high_watermark: high,
            low_watermark: low,
        });
    }
    rows.sort_by_key(|r| r.partition);
    Ok(rows)
}

/// High watermark per partition of `topic` (offset of the next record to be written).
///
/// # Errors
/// As [`consumer_lag`].
pub fn high_watermarks(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, Error> {
    let rows = consumer_lag(brokers, "tidemark-lag-probe", topic, timeout)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.partition, r.high_watermark))
        .collect())
}

/// `(low, high)` watermarks per partition, confirmed by a fetch.
///
/// The ListOffsets answer is not trusted alone: Tansu 0.6.0's in-memory storage
/// answers ListOffsets(latest) with the base offset + 1 of the most recently written
/// batch, which is below the real end. A Fetch response carries the partition's high
/// watermark too, so the partitions are read from the listed end for a moment and
/// the larger of the two values wins (librdkafka caches the fetched one:
/// `rd_kafka_get_watermark_offsets`).
fn watermarks(
    brokers: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>, Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.auto.commit", "false")
        .set("group.id", "tidemark-watermark-probe") // assign() needs one; it never joins
        .set("fetch.wait.max.ms", "20")
        .set("auto.offset.reset", "latest")
        .create()
        .map_err(Error::kafka("creating the watermark client"))?;
    let mut listed = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(Error::kafka("fetching watermarks"))?;
        listed.insert(*p, (low, high));
        tpl.add_partition_offset(topic, *p, Offset::Offset(high))
            .map_err(Error::kafka("assigning for watermarks"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(Error::kafka("assigning for watermarks"))?;
    let topic_c = std::ffi::CString::new(topic).map_err(|_| Error::UnknownTopic(topic.into()))?;
    let deadline = Instant::now() + timeout;
    let mut fetched: BTreeMap<i32, i64> = BTreeMap::new();
    while fetched.len() < partitions.len() && Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(50));
        for p in partitions {
            let (mut low, mut high) = (-1i64, -1i64);
            // SAFETY: valid client handle and NUL-terminated topic; out-params are
            // plain integers.
            let err = unsafe {
                rdkafka::bindings::rd_kafka_get_watermark_offsets(
                    consumer.client().native_ptr(),
                    topic_c.as_ptr(),
                    *p,
                    &mut low,
                    &mut high,
                )
            };
            if !err.is_error() && high >= 0 {
                fetched.insert(*p, high);
            }
        }
    }
    Ok(listed
        .into_iter()
        .map(|(p, (low, high))| (p, (low, high.max(fetched.get(&p).copied().unwrap_or(-1)))))
        .collect())
}
