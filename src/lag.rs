//! Consumer lag of a group, as `kafka-consumer-groups.sh --describe` reports it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::connection::Connection;

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
    connection: impl Into<Connection>,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<PartitionLag>, Error> {
    let connection = connection.into();
    let consumer = client(&connection, group)?;
    let partitions = partitions_of(&connection, topic, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = committed_offsets(&consumer, tpl, timeout)?;
    let mut rows = Vec::with_capacity(partitions.len());
    for p in partitions {
        // ListOffsets (earliest and latest) to the partition's leader.
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

/// High watermark per partition of `topic` (offset of the next record to be written),
/// from ListOffsets to each partition's leader; no consumer group is involved.
///
/// # Errors
/// [`Error::BrokerUnreachable`] when no metadata arrives within `timeout`;
/// [`Error::UnknownTopic`] when `topic` does not exist; [`Error::Kafka`] when a
/// partition leader does not answer within `timeout`.
pub fn high_watermarks(
    connection: impl Into<Connection>,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, Error> {
    let connection = connection.into();
    let consumer = client(&connection, "tidemark-watermarks")?;
    let mut ends = BTreeMap::new();
    for p in partitions_of(&connection, topic, timeout)? {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(Error::kafka("fetching watermarks"))?;
        ends.insert(p, high);
    }
    Ok(ends)
}

/// A consumer with `group.id = group` that never joins it (no subscribe).
fn client(connection: &Connection, group: &str) -> Result<BaseConsumer, Error> {
    connection
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(Error::kafka("creating the lag client"))
}

/// The partition ids of `topic` (Kafka numbers them `0..count`).
fn partitions_of(
    connection: &Connection,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, Error> {
    match crate::topics::topic_partitions(connection, topic, timeout)? {
        Some(n) => Ok((0..n).collect()),
        None => Err(Error::UnknownTopic(topic.to_string())),
    }
}

/// The group's committed offsets (OffsetFetch), retried within `timeout` while the
/// coordinator is not ready: a broker creates `__consumer_offsets` on the first
/// FindCoordinator and answers NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE /
/// COORDINATOR_LOAD_IN_PROGRESS until it is (Kafka protocol: retriable errors).
fn committed_offsets(
    consumer: &BaseConsumer,
    tpl: TopicPartitionList,
    timeout: Duration,
) -> Result<TopicPartitionList, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.committed_offsets(tpl.clone(), left) {
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::NotCoordinator
                            | RDKafkaErrorCode::CoordinatorNotAvailable
                            | RDKafkaErrorCode::CoordinatorLoadInProgress
                    )
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result.map_err(Error::kafka("fetching committed offsets")),
        }
    }
}
