//! What the user's commit callback sees.

use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// One partition's committed offset: the *next offset to read* (last processed + 1),
/// exactly as sent in Kafka's OffsetCommit request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Committed offset (next offset to read).
    pub offset: i64,
}

/// The outcome of one commit, handed to the callback set with
/// [`Pipeline::on_commit`](crate::Pipeline::on_commit): one per commit request, async
/// (the interval policy) or sync (on revoke and shutdown) alike, from librdkafka's
/// `offset_commit_cb`, in the order the coordinator answered.
#[derive(Debug, Clone)]
pub struct CommitEvent {
    /// The offsets that were sent, one per partition.
    pub offsets: Vec<PartitionOffset>,
    /// `Ok` when the group coordinator accepted every offset; otherwise librdkafka's
    /// error. A failed async commit leaves its partitions dirty, so the next commit
    /// retries them.
    pub result: Result<(), KafkaError>,
}

/// The user's commit callback. It runs on the poll thread: keep it short and never
/// block in it.
pub type CommitCallback = Arc<dyn Fn(&CommitEvent) + Send + Sync>;

/// Converts a commit's topic-partition list to [`PartitionOffset`]s, keeping only the
/// entries that carry an absolute offset.
pub(crate) fn offsets_of(tpl: &TopicPartitionList) -> Vec<PartitionOffset> {
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some(PartitionOffset {
                topic: e.topic().to_string(),
                partition: e.partition(),
                offset,
            }),
            _ => None,
        })
        .collect()
}
