//! Consumer lag of a group, as `kafka-consumer-groups.sh --describe` reports it.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
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
    let mut rows = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(Error::kafka("fetching watermarks"))?;
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
