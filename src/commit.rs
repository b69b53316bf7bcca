//! Commit types: when commits go out ([`CommitPolicy`]) and how ([`CommitMode`]),
//! what a commit carries ([`PartitionOffset`]), what the user's callback sees of
//! each ([`CommitEvent`], [`CommitError`]), and the handle that asks for one
//! ([`CommitHandle`]).

use std::str::FromStr;
use std::sync::Arc;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::KafkaClientError;
use serde::{Deserialize, Serialize};

use crate::topic_partition::TopicPartition;

/// One partition's committed offset: the *next offset to read* (last processed + 1),
/// exactly as sent in Kafka's OffsetCommit request, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Committed offset (next offset to read).
    pub offset: i64,
    /// The commit's metadata string (OffsetCommit's `committed_metadata`, Java's
    /// `OffsetAndMetadata.metadata()`): tidemark's offset map of the records
    /// completed above `offset` (`tidemark_offsets::offset_map`), or empty. At most
    /// [`CommitConfig::offset_map_max_bytes`](crate::CommitConfig::offset_map_max_bytes) bytes.
    pub metadata: String,
}

impl PartitionOffset {
    /// `topic`/`partition` at `offset`, without metadata.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        PartitionOffset {
            topic: topic.into(),
            partition,
            offset,
            metadata: String::new(),
        }
    }
}

/// The outcome of one commit, handed to the callback set with
/// [`Pipeline::on_commit`](crate::Pipeline::on_commit): one per commit request, async
/// (the interval policy) or sync (on revoke and shutdown) alike, from librdkafka's
/// `offset_commit_cb`, in the order the coordinator answered.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CommitEvent {
    /// The offsets that were sent, one per partition.
    pub offsets: Vec<PartitionOffset>,
    /// `Ok` when the group coordinator (or the offset store, or the transaction)
    /// accepted every offset. A failed commit leaves its partitions dirty, so the next
    /// commit retries them.
    pub result: Result<(), CommitError>,
    /// From sending the commit to its result: the commit latency. `None` for
    /// librdkafka's own auto-commits (`CommitPolicy::Auto`), whose sending tidemark
    /// does not see.
    pub latency: Option<std::time::Duration>,
}

/// Why a commit failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// librdkafka's error for an OffsetCommit (group mode) or for the producer
    /// transaction that carried the offsets (exactly-once mode).
    #[error("commit failed")]
    Kafka(#[source] KafkaClientError),
    /// The free consumer's [`OffsetStore`](crate::OffsetStore) failed to save.
    #[error("offset store")]
    OffsetStore(#[source] Arc<std::io::Error>),
    /// Exactly-once: the transaction's offsets and commit got no answer within
    /// `waited_ms` although librdkafka was given a shorter timeout. librdkafka 2.12's
    /// `send_offsets_to_transaction` can block for good once the group
    /// coordinator's broker has left the cluster's metadata (librdkafka issues #5456
    /// and #5511); the transaction stays open and the producer cannot be used again.
    /// A restart with the same `transactional.id` aborts the open transaction and
    /// resumes from the last committed one.
    #[error("the transaction got no answer within {waited_ms} ms (librdkafka #5456/#5511); restart to abort it")]
    TransactionStuck {
        /// How long tidemark waited, ms.
        waited_ms: u64,
    },
}

impl CommitError {
    /// True when the group coordinator rejected the commit because the group moved
    /// to a new generation (`ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`) or is in the
    /// middle of a rebalance (`REBALANCE_IN_PROGRESS`): the partitions may belong to
    /// another member by now, which resumes from their last committed offsets (the
    /// Kafka protocol's OffsetCommit errors; Java's `CommitFailedException`).
    pub fn is_rebalance(&self) -> bool {
        matches!(
            self,
            CommitError::Kafka(e) if matches!(e.kafka(), KafkaError::ConsumerCommit(
                RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::RebalanceInProgress
            ))
        )
    }
}

impl From<KafkaError> for CommitError {
    fn from(e: KafkaError) -> Self {
        CommitError::Kafka(e.into())
    }
}

/// Asks a running [`Pipeline`](crate::Pipeline) to commit now, outside its
/// [`CommitPolicy`]: one partition (Kafka's `commitSync(Map)` of a single partition)
/// or every partition. Cloneable, usable from any thread. The request is served by
/// the poll thread within one poll round; only a dirty partition (its committable offset moved
/// since the last commit) is committed, with the pipeline's commit mode; the outcome
/// reaches the commit callback. With exactly-once, any request commits the
/// transaction (one transaction covers every partition). Requests to a stopped
/// pipeline are ignored.
#[derive(Debug, Clone)]
pub struct CommitHandle(pub(crate) crossbeam_channel::Sender<CommitRequest>);

/// What a [`CommitHandle`] asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommitRequest {
    /// One partition's committable offset.
    Partition(TopicPartition),
    /// Every dirty partition.
    All,
}

impl CommitHandle {
    /// Requests a commit of `topic`/`partition`'s committable offset. Returns at once.
    pub fn commit_partition(&self, topic: &str, partition: i32) {
        let _ = self.0.send(CommitRequest::Partition(TopicPartition::new(
            topic, partition,
        )));
    }

    /// Requests a commit of every dirty partition. Returns at once.
    pub fn commit_all(&self) {
        let _ = self.0.send(CommitRequest::All);
    }
}

/// The user's commit callback. It runs on the poll thread: keep it short and never
/// block in it.
pub type CommitCallback = Arc<dyn Fn(&CommitEvent) + Send + Sync>;

/// When tidemark commits the committable offsets of the dirty partitions (at-least-once
/// mode). Whatever the policy, revoked partitions are committed synchronously
/// before they move, and all partitions on a graceful stop.
///
/// Text form (CLI `--commit`): `every-ms:N`, `every-records:N`, `every-batch`,
/// `every-record`, `at-end`, `auto:N` (librdkafka's auto-commit every N ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CommitPolicy {
    /// Every N milliseconds (default: 1000), like librdkafka's
    /// `auto.commit.interval.ms` but of completed work, not of polled positions.
    EveryMs(u64),
    /// Whenever at least N records completed since the last commit.
    EveryRecords(u64),
    /// Whenever a dispatched batch (the records of one partition from one poll
    /// round) completes.
    EveryBatch,
    /// After every completed record: one commit per record, the slow baseline of
    /// the classic `commitSync()`-per-record loop. With [`CommitMode::Async`] the
    /// records completed while a commit is unanswered share the next one.
    EveryRecord,
    /// Only on revoke and on a graceful stop (a crash re-processes everything since
    /// the last such commit, within `max_uncommitted_records`).
    AtEnd,
    /// librdkafka's own auto-commit (`enable.auto.commit=true`,
    /// `auto.commit.interval.ms` = N): tidemark stores each partition's committable offset with
    /// `rd_kafka_offsets_store` (`enable.auto.offset.store=false`, so librdkafka never
    /// stores a merely *polled* position) and librdkafka's background timer commits
    /// what is stored. The guarantee is the same as `EveryMs(N)`; what differs is who
    /// sends the commit, and that its results reach the callback as librdkafka reports
    /// them.
    Auto(u64),
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy::EveryMs(1000)
    }
}

impl FromStr for CommitPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let number = |v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{s:?}: expected a positive integer after the colon"))
        };
        match s.split_once(':') {
            Some(("every-ms", v)) => Ok(CommitPolicy::EveryMs(number(v)?)),
            Some(("every-records", v)) => Ok(CommitPolicy::EveryRecords(number(v)?)),
            Some(("auto", v)) => Ok(CommitPolicy::Auto(number(v)?)),
            None if s == "every-batch" => Ok(CommitPolicy::EveryBatch),
            None if s == "every-record" => Ok(CommitPolicy::EveryRecord),
            None if s == "at-end" => Ok(CommitPolicy::AtEnd),
            _ => Err(format!(
                "unknown commit policy {s:?}: expected every-ms:N, every-records:N, every-batch, every-record, at-end or auto:N"
            )),
        }
    }
}

/// How policy-driven commits are sent. Commits on revoke and on shutdown are always
/// synchronous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitMode {
    /// `commitAsync`: the poll loop goes on; the result reaches the callback later;
    /// a failure leaves the partitions dirty for the next commit. One at a time: a
    /// commit due while the previous one is unanswered goes out at its answer
    /// (librdkafka retries an OffsetCommit that timed out or met a coordinator
    /// change, so an older commit could otherwise land after a newer one and move
    /// the committed offset back).
    #[default]
    Async,
    /// `commitSync`: the poll loop waits for the coordinator's answer.
    Sync,
}

impl FromStr for CommitMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "async" => Ok(CommitMode::Async),
            "sync" => Ok(CommitMode::Sync),
            _ => Err(format!("unknown commit mode {s:?}: expected async or sync")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_moved_group_generation_is_a_rebalance_rejection() {
        let commit = |code| CommitError::from(KafkaError::ConsumerCommit(code));
        assert!(commit(RDKafkaErrorCode::IllegalGeneration).is_rebalance());
        assert!(commit(RDKafkaErrorCode::RebalanceInProgress).is_rebalance());
        assert!(commit(RDKafkaErrorCode::UnknownMemberId).is_rebalance());
        assert!(!commit(RDKafkaErrorCode::CoordinatorNotAvailable).is_rebalance());
        assert!(!commit(RDKafkaErrorCode::GroupAuthorizationFailed).is_rebalance());
        let store = std::io::Error::other("disk full");
        assert!(!CommitError::OffsetStore(Arc::new(store)).is_rebalance());
    }

    #[test]
    fn parses_policies() {
        assert_eq!("every-ms:250".parse(), Ok(CommitPolicy::EveryMs(250)));
        assert_eq!(
            "every-records:10".parse(),
            Ok(CommitPolicy::EveryRecords(10))
        );
        assert_eq!("every-batch".parse(), Ok(CommitPolicy::EveryBatch));
        assert_eq!("every-record".parse(), Ok(CommitPolicy::EveryRecord));
        assert_eq!("at-end".parse(), Ok(CommitPolicy::AtEnd));
        assert_eq!("auto:500".parse(), Ok(CommitPolicy::Auto(500)));
        assert!("every-ms:0".parse::<CommitPolicy>().is_err());
        assert!("every-ms".parse::<CommitPolicy>().is_err());
        assert!("hourly".parse::<CommitPolicy>().is_err());
        assert_eq!("sync".parse(), Ok(CommitMode::Sync));
        assert!("maybe".parse::<CommitMode>().is_err());
    }
}
