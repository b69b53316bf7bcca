//! The records a [`Processor`](crate::Processor) sees and the outputs it returns.

use std::sync::Arc;

pub use bytes::Bytes;

/// One Kafka record handed to a [`Processor`](crate::Processor), owned so it can cross
/// to the worker pool.
///
/// The poll thread copies key and payload out of librdkafka's buffer once, back to
/// back into a chunk of memory per partition (32 KiB, or one record's size when
/// larger): `key` and `payload` are [`Bytes`] slices of that chunk, with no
/// allocation per record, and cloning one is a reference-count increment. A chunk
/// is freed when the last record (or clone) in it is dropped, so a record kept past
/// its completion keeps its neighbours' bytes alive too: copy what you keep
/// (`Bytes::copy_from_slice`). The topic name is shared by every record of the
/// partition.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    pub key: Option<Bytes>,
    /// Record value, if any (`None` for a tombstone).
    pub payload: Option<Bytes>,
    /// The record's Kafka headers (KIP-82), owned, in the order they were produced;
    /// a name may occur more than once. Empty (no allocation) when there are none.
    pub headers: Vec<Header>,
}

/// One Kafka record header (KIP-82): a name and an optional value. Names need not be
/// unique within a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Header name (UTF-8).
    pub key: String,
    /// Header value; `None` is a header with a null value.
    pub value: Option<Vec<u8>>,
}

impl Header {
    /// A header `key` with `value`.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

impl Record {
    /// A record of `topic`/`partition` at `offset` with no timestamp, key, payload or
    /// headers (set the public fields for the rest): for tests and for processors
    /// driven outside a pipeline. Records a pipeline hands over come from the
    /// consumer.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32, offset: i64) -> Self {
        Record {
            topic: topic.into(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            payload: None,
            headers: Vec::new(),
        }
    }

    /// This record with `key`.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// This record with `payload`.
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Value of the first header named `key`: `None` when there is none,
    /// `Some(None)` for a header with a null value.
    pub fn header(&self, key: &str) -> Option<Option<&[u8]>> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_deref())
    }

    /// Gives key and payload buffers of their own (copies), releasing the shared
    /// arena chunk they were sliced from.
    pub(crate) fn unshare(&mut self) {
        for bytes in [&mut self.key, &mut self.payload].into_iter().flatten() {
            *bytes = Bytes::copy_from_slice(bytes);
        }
    }

    /// Size of key + payload in bytes, the unit of the in-flight byte budget.
    pub fn size_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.payload.as_ref().map_or(0, Bytes::len)
    }
}

/// One record a processor asks tidemark to produce to the configured sink topic.
///
/// The sink produces `headers` in order, then adds `tidemark-src-partition` and
/// `tidemark-src-offset` (decimal strings) naming the input it came from; the input
/// counts complete only once every one of its outputs is acknowledged by the broker
/// (docs/DESIGN.md, invariant 3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputRecord {
    /// Key of the output record; `None` lets the producer's partitioner pick. An
    /// input's `key` passes through without a copy (`record.key.clone()`).
    pub key: Option<Bytes>,
    /// Value of the output record (a `Vec<u8>` converts without a copy).
    pub payload: Bytes,
    /// Headers of the output record, produced in this order before tidemark's own.
    pub headers: Vec<Header>,
}

impl OutputRecord {
    /// An output with `key` and `payload` and no headers of its own.
    pub fn new(key: Option<Bytes>, payload: impl Into<Bytes>) -> Self {
        OutputRecord {
            key,
            payload: payload.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header (names may repeat).
    pub fn with_header(mut self, header: Header) -> Self {
        self.headers.push(header);
        self
    }
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
    pub fn one(key: Option<Bytes>, payload: impl Into<Bytes>) -> Self {
        Outputs(vec![OutputRecord::new(key, payload)])
    }

    /// True when there is nothing to produce.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshare_releases_the_arena_chunk() {
        let chunk = Bytes::from(b"keypayload".to_vec());
        let mut record = Record {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: Some(chunk.slice(..3)),
            payload: Some(chunk.slice(3..)),
            headers: Vec::new(),
        };
        record.unshare();
        assert_eq!(record.key.as_deref(), Some(&b"key"[..]));
        assert_eq!(record.payload.as_deref(), Some(&b"payload"[..]));
        assert!(chunk.is_unique(), "the record still holds the chunk");
    }
}
