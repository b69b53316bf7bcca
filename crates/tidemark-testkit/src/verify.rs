//! Independent checks of what a pipeline did, through a separate Kafka client.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use tidemark::Connection;

use crate::workload::topic_partitions;
use crate::TestkitError;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A librdkafka configuration for `connection`: its brokers and every shared
/// property (security).
pub fn client_config(connection: &Connection) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &connection.brokers);
    for (k, v) in connection.properties.iter() {
        cc.set(k, v);
    }
    cc
}

fn client(connection: &Connection, group: Option<&str>) -> Result<BaseConsumer, TestkitError> {
    let mut cc = client_config(connection);
    cc.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    if let Some(g) = group {
        cc.set("group.id", g);
    }
    cc.create().map_err(TestkitError::kafka("verifier client"))
}

fn partitions_of(connection: &Connection, topic: &str) -> Result<i32, TestkitError> {
    topic_partitions(connection, topic, TIMEOUT)?
        .ok_or_else(|| TestkitError::Timeout(format!("topic {topic} does not exist")))
}

/// Committed offset of `group` per partition of `topic` (`None`: nothing committed).
///
/// # Errors
/// [`TestkitError::Kafka`] when the coordinator does not answer within 10 s.
pub fn committed_offsets(
    brokers: impl Into<Connection>,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, Option<i64>>, TestkitError> {
    Ok(committed_with_metadata(brokers, group, topic)?
        .into_iter()
        .map(|(p, c)| (p, c.map(|(o, _)| o)))
        .collect())
}

/// Committed offset of `group` per partition of `topic` with the commit's metadata
/// (`None`: nothing committed), as OffsetFetch returns them.
///
/// # Errors
/// [`TestkitError::Kafka`] when the coordinator does not answer within 10 s.
pub fn committed_with_metadata(
    brokers: impl Into<Connection>,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, Option<(i64, String)>>, TestkitError> {
    let connection = brokers.into();
    let c = client(&connection, Some(group))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions_of(&connection, topic)? {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, TIMEOUT)
        .map_err(TestkitError::kafka(format!("committed offsets of {group}")))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let off = match e.offset() {
                Offset::Offset(o) => Some((o, e.metadata().to_string())),
                _ => None,
            };
            (e.partition(), off)
        })
        .collect())
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its headers as (key, UTF-8 value) pairs.
    pub headers: Vec<(String, String)>,
    /// Its value.
    pub payload: Vec<u8>,
}

impl ReadRecord {
    /// The input coordinates a sink output or a dead letter carries in its
    /// `tidemark-src-partition` and `tidemark-src-offset` headers; `None` when either
    /// is missing or not a number.
    pub fn source(&self) -> Option<(i32, i64)> {
        let partition = self.header(tidemark::HEADER_SRC_PARTITION)?.parse().ok()?;
        let offset = self.header(tidemark::HEADER_SRC_OFFSET)?.parse().ok()?;
        Some((partition, offset))
    }

    /// Value of header `key`, if present.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads every record of `topic` from the beginning up to `ends` (the high watermark
/// per partition, e.g. from `tidemark::high_watermarks`), with
/// `isolation.level=isolation`.
///
/// # Errors
/// [`TestkitError::Kafka`] on client errors; [`TestkitError::Timeout`] when the end
/// is not reached within `limit`.
pub fn read_topic(
    brokers: impl Into<Connection>,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    isolation: &str,
    limit: Duration,
) -> Result<Vec<ReadRecord>, TestkitError> {
    let c: BaseConsumer = client_config(&brokers.into())
        .set("group.id", "tidemark-verifier")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .map_err(TestkitError::kafka("reader"))?;
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(TestkitError::kafka("assign"))?;
    }
    c.assign(&tpl).map_err(TestkitError::kafka("assign"))?;
    let mut out = Vec::new();
    let mut next: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let deadline = Instant::now() + limit;
    // Read until every partition's position reached its end (transaction markers
    // and aborted records are skipped, so compare positions, not counts).
    while next.iter().any(|(p, n)| *n < ends[p]) {
        if Instant::now() > deadline {
            return Err(TestkitError::Timeout(format!(
                "reading {topic}: at {next:?}, ends {ends:?}"
            )));
        }
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    headers,
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(e)) => return Err(TestkitError::kafka("reading")(e)),
            None => {
                if let Ok(pos) = c.position() {
                    for e in pos.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            let n = next.entry(e.partition()).or_default();
                            *n = (*n).max(o);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What a sink topic holds against the inputs it was produced from, as an
/// independent `read_committed` reader sees it through the `tidemark-src-partition`
/// / `tidemark-src-offset` headers of each output.
#[derive(Debug, Clone)]
pub struct SinkReport {
    /// Input `(partition, offset)`s with no output.
    pub missing: Vec<(i32, i64)>,
    /// Outputs beyond the first for the same input.
    pub duplicates: u64,
    /// Outputs per input `(partition, offset)`.
    pub outputs: HashMap<(i32, i64), u64>,
}

impl SinkReport {
    /// Panics naming a few lost inputs, if any.
    pub fn assert_nothing_lost(&self) {
        assert!(
            self.missing.is_empty(),
            "{} inputs lost, e.g. {:?}",
            self.missing.len(),
            &self.missing[..self.missing.len().min(10)]
        );
    }
}

/// Reads `output` to its end with `read_committed` and matches it against every
/// input offset below `ends` (per input partition; offsets `0..end`).
///
/// # Errors
/// As [`read_topic`]; [`TestkitError::Timeout`] when an output lacks the headers.
pub fn sink_report(
    brokers: impl Into<Connection>,
    output: &str,
    ends: &BTreeMap<i32, i64>,
) -> Result<SinkReport, TestkitError> {
    let connection = brokers.into();
    let out_ends = high_watermarks(&connection, output)?;
    let out = read_topic(
        &connection,
        output,
        &out_ends,
        "read_committed",
        Duration::from_secs(120),
    )?;
    let mut outputs: HashMap<(i32, i64), u64> = HashMap::new();
    for r in &out {
        let coordinate = |h: &str| r.header(h).and_then(|v| v.parse::<i64>().ok());
        let (Some(p), Some(o)) = (
            coordinate(tidemark::HEADER_SRC_PARTITION),
            coordinate(tidemark::HEADER_SRC_OFFSET),
        ) else {
            return Err(TestkitError::Timeout(format!(
                "output {}@{} has no source headers",
                r.partition, r.offset
            )));
        };
        *outputs.entry((p as i32, o)).or_default() += 1;
    }
    let missing = ends
        .iter()
        .flat_map(|(p, e)| (0..*e).map(move |o| (*p, o)))
        .filter(|k| !outputs.contains_key(k))
        .collect();
    let duplicates = outputs.values().map(|n| n - 1).sum();
    Ok(SinkReport {
        missing,
        duplicates,
        outputs,
    })
}

/// Every record of `topic` up to its high watermarks now, as an independent client
/// reads it (`read_uncommitted`, within 30 s).
///
/// # Errors
/// As [`high_watermarks`] and [`read_topic`].
pub fn read_all(
    brokers: impl Into<Connection>,
    topic: &str,
) -> Result<Vec<ReadRecord>, TestkitError> {
    let connection = brokers.into();
    let ends = high_watermarks(connection.clone(), topic)?;
    read_topic(
        connection,
        topic,
        &ends,
        "read_uncommitted",
        Duration::from_secs(30),
    )
}

/// High watermark per partition of `topic` (ListOffsets latest).
///
/// # Errors
/// [`TestkitError::Kafka`] when the topic's leader does not answer within 10 s.
pub fn high_watermarks(
    brokers: impl Into<Connection>,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, TestkitError> {
    let connection = brokers.into();
    let c = client(&connection, None)?;
    let mut ends = BTreeMap::new();
    for p in 0..partitions_of(&connection, topic)? {
        let (_, high) = c
            .fetch_watermarks(topic, p, TIMEOUT)
            .map_err(TestkitError::kafka(format!("watermarks of {topic}/{p}")))?;
        ends.insert(p, high);
    }
    Ok(ends)
}
