//! Where commits go, as one type: the group coordinator (async or sync),
//! librdkafka's auto-commit, a free consumer's offset store, or the exactly-once
//! producer transaction. A target performs the I/O for a list of offsets and
//! returns the result; the driver applies it to the run state.
//!
//! The template every commit follows (collect the dirty partitions' committable
//! offsets and maps → [`CommitTarget::send`] → apply the answer) is
//! `Engine::commit` in `commits`; a target only says how to send and, through
//! [`CommitTarget::covers_every_partition`], what a commit must cover. The targets
//! are a closed enum rather than a trait: the set is fixed by the delivery modes,
//! `send` needs the generic consumer (a trait object could not take it), and the
//! one extension point users have, a free consumer's store, is already a trait
//! ([`OffsetStore`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::commit::{CommitError, CommitMode, CommitPolicy, PartitionOffset};
use crate::config::Config;
use crate::engine::seams::consumer::KafkaConsumer;
use crate::engine::seams::sink::Sink;
use crate::error::Error;
use crate::offset_store::OffsetStore;

/// Bound on each transactional call (commit, abort, send offsets) and seek.
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a pipeline's commits go.
pub(crate) enum CommitTarget {
    /// OffsetCommit to the group coordinator; policy commits in this mode (revoke
    /// and stop always wait for the answer).
    Group(CommitMode),
    /// librdkafka's auto-commit: the committable offsets are stored in librdkafka and
    /// its timer commits them; revoke and stop commit explicitly and synchronously.
    LibrdkafkaAuto,
    /// A free consumer's offset store (synchronous).
    Store(Arc<dyn OffsetStore>),
    /// The sink producer's transaction, with the group's metadata (exactly-once):
    /// every record in flight drains first.
    Transaction(Arc<Sink>),
}

/// What sending a commit gave.
pub(crate) enum Sent {
    /// An async commit is on its way; its answer comes on the consumer's commit queue.
    Pending,
    /// The answer, and how long it took.
    Done(Result<(), CommitError>, Duration),
}

impl CommitTarget {
    /// The target a run of `config` commits to: the free consumer's `store`; the
    /// sink's transactions with exactly-once (opened here: the `transactional.id` is
    /// registered and the first transaction begun); librdkafka's auto-commit with
    /// [`CommitPolicy::Auto`]; else the group in the configured mode.
    ///
    /// # Errors
    /// [`Error::Transaction`] when the transactional producer cannot start within
    /// `startup_timeout` (the coordinator unreachable, the id fenced).
    pub(crate) fn for_run(
        config: &Config,
        store: Option<&Arc<dyn OffsetStore>>,
        sink: Option<&Arc<Sink>>,
    ) -> Result<Self, Error> {
        Ok(match (store, sink) {
            (Some(store), _) => CommitTarget::Store(store.clone()),
            (None, Some(sink))
                if config.delivery.commits_in_transaction() && sink.has_output_topic() =>
            {
                let timeout = config.lifecycle.startup_timeout;
                sink.start_transactions(timeout)
                    .map_err(|e| Error::Transaction(e.into()))?;
                CommitTarget::Transaction(sink.clone())
            }
            _ if matches!(config.commits.policy, CommitPolicy::Auto(_)) => {
                CommitTarget::LibrdkafkaAuto
            }
            _ => CommitTarget::Group(config.commits.mode),
        })
    }

    /// A short name for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CommitTarget::Group(CommitMode::Async) => "async",
            CommitTarget::Group(CommitMode::Sync) => "sync",
            CommitTarget::LibrdkafkaAuto => "librdkafka-auto",
            CommitTarget::Store(_) => "store",
            CommitTarget::Transaction(_) => "transaction",
        }
    }

    /// A commit covers every assigned partition and waits for every record in
    /// flight (the transaction holds outputs of all of them), not only the dirty or
    /// revoked ones.
    pub(crate) fn covers_every_partition(&self) -> bool {
        matches!(self, CommitTarget::Transaction(_))
    }

    /// Commits are answered later (async group commits): a per-record commit may
    /// then be held back until the answer to the previous one.
    pub(crate) fn answers_later(&self) -> bool {
        matches!(self, CommitTarget::Group(CommitMode::Async))
    }

    /// The exactly-once sink, when this is a transaction target.
    pub(crate) fn transaction(&self) -> Option<&Arc<Sink>> {
        match self {
            CommitTarget::Transaction(sink) => Some(sink),
            _ => None,
        }
    }

    /// Commits `offsets` (next offsets to read). `wait`: answer now even where the
    /// target would commit asynchronously (revoke, stop). With a transaction, the
    /// caller has drained every record in flight.
    pub(crate) fn send(
        &self,
        consumer: &impl KafkaConsumer,
        offsets: &[PartitionOffset],
        wait: bool,
    ) -> Sent {
        let _span = tracing::debug_span!("commit", kind = self.kind(), partitions = offsets.len())
            .entered();
        let sent = Instant::now();
        let result = match self {
            CommitTarget::Group(CommitMode::Async) if !wait => {
                return match consumer.commit_async(Some(offsets)) {
                    Ok(()) => Sent::Pending,
                    Err(e) => Sent::Done(Err(e.into()), sent.elapsed()),
                };
            }
            CommitTarget::Group(_) | CommitTarget::LibrdkafkaAuto => {
                consumer.commit_sync(offsets).map_err(CommitError::from)
            }
            CommitTarget::Store(store) => store
                .save(offsets)
                .map_err(|e| CommitError::OffsetStore(Arc::new(e))),
            CommitTarget::Transaction(sink) => match consumer.group_metadata() {
                Some(group) => sink.commit_transaction(offsets, group, TRANSACTION_TIMEOUT),
                // Only a consumer that has not joined the group yet has none.
                None => Err(CommitError::from(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::State,
                ))),
            },
        };
        Sent::Done(result, sent.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::seams::fake::{Call, FakeConsumer};
    use crate::offset_store::OffsetAndMetadata;
    use crate::topic_partition::TopicPartition;

    fn offsets() -> Vec<PartitionOffset> {
        vec![PartitionOffset::new("t", 0, 5)]
    }

    fn done(sent: Sent) -> Result<(), CommitError> {
        match sent {
            Sent::Done(result, _) => result,
            Sent::Pending => panic!("expected an answer now"),
        }
    }

    #[test]
    fn an_async_group_commit_is_pending_unless_the_caller_waits() {
        let fake = FakeConsumer::default();
        let target = CommitTarget::Group(CommitMode::Async);
        assert!(matches!(
            target.send(&fake, &offsets(), false),
            Sent::Pending
        ));
        assert_eq!(fake.calls(), [Call::CommitAsync(Some(offsets()))]);
        assert_eq!(fake.committed("t", 0), None, "the answer comes later");

        done(target.send(&fake, &offsets(), true)).unwrap();
        assert_eq!(fake.calls()[1], Call::CommitSync(offsets()));
        assert_eq!(fake.committed("t", 0), Some(5));
    }

    #[test]
    fn a_refused_commit_is_a_kafka_commit_error_whatever_the_target() {
        let fake = FakeConsumer::default();
        fake.fail_commits(3);
        let sent = CommitTarget::Group(CommitMode::Async).send(&fake, &offsets(), false);
        assert!(matches!(done(sent), Err(CommitError::Kafka(_))));
        for target in [
            CommitTarget::Group(CommitMode::Sync),
            CommitTarget::LibrdkafkaAuto,
        ] {
            let result = done(target.send(&fake, &offsets(), false));
            assert!(
                matches!(result, Err(CommitError::Kafka(_))),
                "{}",
                target.kind()
            );
        }
        assert_eq!(fake.committed("t", 0), None);
    }

    /// A store that fails its first save and records the rest.
    #[derive(Default)]
    struct Flaky(Mutex<(bool, Vec<PartitionOffset>)>);

    impl OffsetStore for Flaky {
        fn load(&self, _: &TopicPartition) -> std::io::Result<Option<OffsetAndMetadata>> {
            Ok(None)
        }
        fn save(&self, offsets: &[PartitionOffset]) -> std::io::Result<()> {
            let mut s = self.0.lock().unwrap();
            if !s.0 {
                s.0 = true;
                return Err(std::io::Error::other("disk full"));
            }
            s.1.extend_from_slice(offsets);
            Ok(())
        }
    }

    #[test]
    fn a_store_target_saves_synchronously_and_reports_its_errors() {
        let fake = FakeConsumer::default();
        let store = Arc::new(Flaky::default());
        let target = CommitTarget::Store(store.clone());
        assert!(!target.covers_every_partition());
        let first = done(target.send(&fake, &offsets(), false));
        assert!(matches!(first, Err(CommitError::OffsetStore(_))));
        done(target.send(&fake, &offsets(), false)).unwrap();
        assert_eq!(store.0.lock().unwrap().1, offsets());
        assert!(
            fake.calls().is_empty(),
            "a free consumer commits nothing to Kafka"
        );
    }
}
