//! The records a [`Processor`](crate::Processor) sees and the outputs it returns.

use std::sync::Arc;

/// One Kafka record handed to a [`Processor`](crate::Processor), owned so it can cross
/// to the worker pool. The poll thread copies key and payload out of librdkafka's
/// buffer once; the topic name is shared by every record of the partition.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic the record was read from.
    pub topic: Arc<str>,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset of the record within its partition. Together with `topic` and
    /// `partition`, the record's unique coordinates: an idempotency key for outputs
    /// that leave Kafka.
    pub offset: i64,
    /// Record timestamp in milliseconds since the Unix epoch, if the broker set one.
    pub timestamp_ms: Option<i64>,
    /// Record key, if any.
    pub key: Option<Vec<u8>>,
    /// Record value, if any (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
}

impl Record {
    /// Size of key + payload in bytes, the unit of the in-flight byte budget.
    pub fn size_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// One record a processor asks tidemark to produce to the configured sink topic.
///
/// The engine adds the headers `tidemark-src-partition` and `tidemark-src-offset`
/// (decimal strings) naming the input it came from; the input counts complete only
/// once every one of its outputs is acknowledged by the broker (DESIGN.md invariant 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputRecord {
    /// Key of the output record; `None` lets the producer's partitioner pick.
    pub key: Option<Vec<u8>>,
    /// Value of the output record.
    pub payload: Vec<u8>,
}

/// What processing one record produced: zero or more [`OutputRecord`]s for the sink.
///
/// With no sink configured, outputs are dropped (and a warning is logged once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs(pub Vec<OutputRecord>);

impl Outputs {
    /// No output: the record is complete as soon as processing returns.
    pub fn none() -> Self {
        Outputs(Vec::new())
    }

    /// Exactly one output record.
    pub fn one(key: Option<Vec<u8>>, payload: Vec<u8>) -> Self {
        Outputs(vec![OutputRecord { key, payload }])
    }

    /// True when there is nothing to produce.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
