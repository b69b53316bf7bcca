//! Errors returned by the tidemark engine.

use crate::commit::CommitError;
use crate::processor::ProcessError;

/// Why a pipeline could not start or stopped without being asked to.
///
/// Every cause is chained through [`std::error::Error::source`] (the messages do
/// not repeat it): print the chain, e.g. with `anyhow`'s `{:#}`. New variants may be
/// added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid; nothing was started.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The thread running the pipeline for [`Pipeline::run_async`](crate::Pipeline::run_async)
    /// panicked (a bug in tidemark: user panics are caught per record).
    #[error("the pipeline's thread panicked: {0}")]
    Panicked(String),

    /// No broker answered a metadata request within `startup_timeout`.
    #[error("brokers {brokers} unreachable within {timeout_ms} ms")]
    BrokerUnreachable {
        /// The `bootstrap.servers` that were tried.
        brokers: String,
        /// The bound that expired, ms.
        timeout_ms: u64,
        /// librdkafka's error.
        source: KafkaClientError,
    },

    /// The cluster refused this client: its credentials, its TLS handshake, or an ACL
    /// (docs/SECURITY.md lists the ACLs a member needs). An authorization failure stops
    /// the run at once; an authentication or TLS failure once it has lasted
    /// `LifecycleConfig::refusal_timeout` (librdkafka retries those forever). Offsets
    /// were committed up to, never past, what was processed.
    #[error("the cluster refused this client: {0}")]
    Refused(Refusal),

    /// A subscribed topic does not exist on the cluster (tidemark does not create
    /// input topics).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    /// A librdkafka call failed; `context` says which.
    #[error("{context}")]
    Kafka {
        /// What tidemark was doing.
        context: &'static str,
        /// librdkafka's error.
        source: KafkaClientError,
    },

    /// The PostgreSQL sink could not start: the database did not answer within the
    /// connect timeout (5 s unless the URL sets `connect_timeout`), refused the
    /// login, or its table could not be created or lacks a column
    /// ([`PostgresSink`](crate::PostgresSink)). Nothing was consumed.
    #[error("PostgreSQL sink: {context}")]
    Database {
        /// What tidemark was doing, with the server's host, port and database.
        context: String,
        /// The driver's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The processor failed a record. Offsets were committed up to (never past) the
    /// failed record, so a restart processes it again.
    #[error("processor failed on {topic}/{partition}@{offset}")]
    Processor {
        /// Topic of the failed record.
        topic: String,
        /// Partition of the failed record.
        partition: i32,
        /// Offset of the failed record.
        offset: i64,
        /// The processor's error.
        source: ProcessError,
    },

    /// An output of a record could not be produced to the sink. Offsets were
    /// committed up to (never past) that record.
    #[error("sink produce failed for input {topic}/{partition}@{offset}")]
    Sink {
        /// Topic of the input record.
        topic: String,
        /// Partition of the input record.
        partition: i32,
        /// Offset of the input record.
        offset: i64,
        /// The producer's error (from the delivery report, or from queueing).
        source: KafkaClientError,
    },

    /// A failed record could not be produced to the dead-letter topic. Offsets were
    /// committed up to (never past) that record.
    #[error("dead-letter produce failed for input {topic}/{partition}@{offset}")]
    DeadLetter {
        /// Topic of the input record.
        topic: String,
        /// Partition of the input record.
        partition: i32,
        /// Offset of the input record.
        offset: i64,
        /// The producer's error.
        source: KafkaClientError,
    },

    /// The dead-letter guard tripped: `count` records in a row were dead-lettered
    /// with none completing in between (`DeadLetterConfig::max_consecutive`), which
    /// looks like a broken deploy rather than bad input. The pipeline stopped at the
    /// committable offset; the last record counted is named.
    #[error("{count} records in a row dead-lettered, the last {topic}/{partition}@{offset}: stopping (dead_letter.max_consecutive)")]
    DeadLetterLimit {
        /// Dead letters in a row.
        count: u64,
        /// Topic of the last one.
        topic: String,
        /// Partition of the last one.
        partition: i32,
        /// Offset of the last one.
        offset: i64,
    },

    /// A partition has no valid position to start from and `auto.offset.reset` is
    /// `error` (librdkafka's `ERR__AUTO_OFFSET_RESET`): no committed offset for the
    /// group, or the committed one is out of range. Nothing was processed from it.
    #[error("no valid offset to start from and auto.offset.reset=error")]
    OffsetReset(#[source] KafkaClientError),

    /// A lifecycle hook of the processor (`partitions_assigned`, `partitions_revoked`,
    /// `partitions_lost`, `stopping`) panicked; the run stops as after a failed
    /// record (in-flight records drain; the final commit covers what completed).
    #[error("the processor's {hook} hook panicked: {message}")]
    Hook {
        /// Which hook.
        hook: &'static str,
        /// The panic's message.
        message: String,
    },

    /// The final synchronous commit failed; the offsets of the last successful commit
    /// stand, so a restart re-processes what follows them.
    #[error("final commit failed")]
    FinalCommit(#[source] CommitError),

    /// A commit failed in a way that stops the run: today an exactly-once
    /// transaction with no answer ([`CommitError::TransactionStuck`]). The last
    /// committed transaction stands; a restart with the same `transactional.id`
    /// aborts the open one and resumes from there.
    #[error("commit failed")]
    Commit(#[source] CommitError),

    /// The free consumer's offset store could not be read at start-up; nothing was
    /// processed.
    #[error("offset store: {context}")]
    OffsetStore {
        /// What tidemark was loading.
        context: String,
        /// The store's error.
        source: std::io::Error,
    },

    /// The exactly-once producer transaction failed in a way that cannot be retried
    /// (e.g. the producer was fenced by a newer instance with the same
    /// `transactional.id`). The last committed transaction stands: its outputs and
    /// offsets; a restart resumes from there.
    #[error("transaction failed")]
    Transaction(#[source] KafkaClientError),
}

/// Why the cluster refused a client ([`Error::Refused`]). The details are
/// librdkafka's or the broker's own words; they never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// SASL authentication failed: a wrong username or password, or a mechanism the
    /// listener does not enable (librdkafka `ERR__AUTHENTICATION`; the broker's
    /// `SASL_AUTHENTICATION_FAILED`, `UNSUPPORTED_SASL_MECHANISM`).
    #[error("authentication failed: {detail}")]
    Authentication {
        /// librdkafka's reason (broker address, mechanism, state).
        detail: String,
    },
    /// The TLS handshake failed: the broker's certificate does not verify against
    /// `ssl.ca.location` (or the hostname does not match), or the broker refused the
    /// client's certificate (librdkafka `ERR__SSL`).
    #[error("TLS handshake failed: {detail}")]
    Tls {
        /// librdkafka's reason (e.g. "certificate verify failed").
        detail: String,
    },
    /// An ACL denied `operation` on `resource` (Kafka's `*_AUTHORIZATION_FAILED` codes).
    #[error("not authorized: {operation} on {resource}: {detail}")]
    Authorization {
        /// The resource, as Kafka's ACLs name it: `topic NAME`, `group NAME`,
        /// `transactional id`, `cluster`.
        resource: String,
        /// The operation that was denied (`READ`, `WRITE`, `DESCRIBE`).
        operation: &'static str,
        /// librdkafka's reason.
        detail: String,
    },
}

impl Refusal {
    /// True for an ACL's denial (as opposed to authentication or TLS).
    pub fn is_authorization(&self) -> bool {
        matches!(self, Refusal::Authorization { .. })
    }
}

impl Error {
    pub(crate) fn kafka(context: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
        move |source| Error::Kafka {
            context,
            source: source.into(),
        }
    }
}

/// An error of the Kafka client (librdkafka, through the `rdkafka` crate). tidemark's
/// API names no rdkafka type, so an rdkafka upgrade does not break its users; the
/// rdkafka error itself is this error's [`source`](std::error::Error::source)
/// (downcast it to `rdkafka::error::KafkaError` if you depend on rdkafka), and
/// [`code`](Self::code) names librdkafka's error code.
#[derive(Debug, Clone)]
pub struct KafkaClientError(rdkafka::error::KafkaError);

impl KafkaClientError {
    /// librdkafka's error code when it gave one, typed ([`KafkaErrorCode`]); `None`
    /// for errors without a code (a bad configuration value, say).
    pub fn code(&self) -> Option<KafkaErrorCode> {
        self.0.rdkafka_error_code().map(KafkaErrorCode::from)
    }

    /// The rdkafka error (inside the crate, where rdkafka's types are fine).
    pub(crate) fn kafka(&self) -> &rdkafka::error::KafkaError {
        &self.0
    }
}

impl std::fmt::Display for KafkaClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.rdkafka_error_code() {
            Some(code) => write!(f, "Kafka client error {code:?}"),
            None => f.write_str("Kafka client error"),
        }
    }
}

/// A librdkafka error code, as [`KafkaClientError::code`] gives it: the codes a
/// pipeline's caller branches on by name (Kafka's protocol error codes and
/// librdkafka's local ones, `rdkafka.h`), every other one as [`Other`](Self::Other)
/// with its number and librdkafka's name. New variants may be added.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KafkaErrorCode {
    /// Local `ERR__AUTHENTICATION` (-169): SASL authentication failed.
    Authentication,
    /// Local `ERR__SSL` (-181): the TLS handshake failed.
    Ssl,
    /// Local `ERR__ALL_BROKERS_DOWN` (-187).
    AllBrokersDown,
    /// Local `ERR__TRANSPORT` (-195): a broker connection failed.
    BrokerTransportFailure,
    /// Local `ERR__TIMED_OUT` (-185).
    OperationTimedOut,
    /// Local `ERR__MSG_TIMED_OUT` (-192): a produced message was not acknowledged
    /// within `message.timeout.ms`.
    MessageTimedOut,
    /// Local `ERR__QUEUE_FULL` (-184): the producer's queue is full.
    QueueFull,
    /// Local `ERR__ASSIGNMENT_LOST` (-142).
    AssignmentLost,
    /// Local `ERR__AUTO_OFFSET_RESET` (-140): no valid offset and
    /// `auto.offset.reset=error`.
    AutoOffsetReset,
    /// `UNKNOWN_TOPIC_OR_PARTITION` (3).
    UnknownTopicOrPartition,
    /// `NOT_COORDINATOR` (16).
    NotCoordinator,
    /// `ILLEGAL_GENERATION` (22): a commit from an old group generation.
    IllegalGeneration,
    /// `UNKNOWN_MEMBER_ID` (25).
    UnknownMemberId,
    /// `REBALANCE_IN_PROGRESS` (27).
    RebalanceInProgress,
    /// `TOPIC_AUTHORIZATION_FAILED` (29).
    TopicAuthorizationFailed,
    /// `GROUP_AUTHORIZATION_FAILED` (30).
    GroupAuthorizationFailed,
    /// `CLUSTER_AUTHORIZATION_FAILED` (31).
    ClusterAuthorizationFailed,
    /// `TRANSACTIONAL_ID_AUTHORIZATION_FAILED` (53).
    TransactionalIdAuthorizationFailed,
    /// `SASL_AUTHENTICATION_FAILED` (58).
    SaslAuthenticationFailed,
    /// `INVALID_PRODUCER_EPOCH` (47): fenced by a newer producer (KIP-98).
    InvalidProducerEpoch,
    /// `PRODUCER_FENCED` (90): fenced by a newer producer with the same
    /// `transactional.id` (KIP-588).
    ProducerFenced,
    /// Any other code: librdkafka's number and its `RDKafkaErrorCode` name.
    Other {
        /// The code (negative: librdkafka's local errors; positive: Kafka's).
        code: i32,
        /// librdkafka's name for it (e.g. `"OffsetOutOfRange"`).
        name: String,
    },
}

impl From<rdkafka::error::RDKafkaErrorCode> for KafkaErrorCode {
    fn from(c: rdkafka::error::RDKafkaErrorCode) -> Self {
        use rdkafka::error::RDKafkaErrorCode as C;
        match c {
            C::Authentication => KafkaErrorCode::Authentication,
            C::SSL => KafkaErrorCode::Ssl,
            C::AllBrokersDown => KafkaErrorCode::AllBrokersDown,
            C::BrokerTransportFailure => KafkaErrorCode::BrokerTransportFailure,
            C::OperationTimedOut => KafkaErrorCode::OperationTimedOut,
            C::MessageTimedOut => KafkaErrorCode::MessageTimedOut,
            C::QueueFull => KafkaErrorCode::QueueFull,
            C::AssignmentLost => KafkaErrorCode::AssignmentLost,
            C::AutoOffsetReset => KafkaErrorCode::AutoOffsetReset,
            C::UnknownTopicOrPartition => KafkaErrorCode::UnknownTopicOrPartition,
            C::NotCoordinator => KafkaErrorCode::NotCoordinator,
            C::IllegalGeneration => KafkaErrorCode::IllegalGeneration,
            C::UnknownMemberId => KafkaErrorCode::UnknownMemberId,
            C::RebalanceInProgress => KafkaErrorCode::RebalanceInProgress,
            C::TopicAuthorizationFailed => KafkaErrorCode::TopicAuthorizationFailed,
            C::GroupAuthorizationFailed => KafkaErrorCode::GroupAuthorizationFailed,
            C::ClusterAuthorizationFailed => KafkaErrorCode::ClusterAuthorizationFailed,
            C::TransactionalIdAuthorizationFailed => {
                KafkaErrorCode::TransactionalIdAuthorizationFailed
            }
            C::SaslAuthenticationFailed => KafkaErrorCode::SaslAuthenticationFailed,
            C::InvalidProducerEpoch => KafkaErrorCode::InvalidProducerEpoch,
            C::ProducerFenced => KafkaErrorCode::ProducerFenced,
            other => KafkaErrorCode::Other {
                code: other as i32,
                name: format!("{other:?}"),
            },
        }
    }
}

impl std::error::Error for KafkaClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<rdkafka::error::KafkaError> for KafkaClientError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        KafkaClientError(e)
    }
}

/// `e` and its sources, joined with ": " (what `anyhow`'s `{:#}` prints): for logs,
/// where an error's own message leaves its cause to `source()`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_typed_and_the_rest_keep_their_number_and_name() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let e = KafkaClientError::from(KafkaError::MessageConsumption(
            RDKafkaErrorCode::GroupAuthorizationFailed,
        ));
        assert_eq!(e.code(), Some(KafkaErrorCode::GroupAuthorizationFailed));
        let e = KafkaClientError::from(KafkaError::Global(RDKafkaErrorCode::OffsetOutOfRange));
        assert_eq!(
            e.code(),
            Some(KafkaErrorCode::Other {
                code: 1,
                name: "OffsetOutOfRange".into()
            })
        );
        assert_eq!(e.to_string(), "Kafka client error OffsetOutOfRange");
    }

    #[test]
    fn a_commit_error_logs_librdkafkas_reason_through_its_chain() {
        let e = crate::CommitError::from(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::RebalanceInProgress,
        ));
        let text = chain(&e);
        assert!(
            text.starts_with("commit failed: Kafka client error RebalanceInProgress: "),
            "{text}"
        );
        assert!(text.contains("rebalance in progress"), "{text}");
    }
}
