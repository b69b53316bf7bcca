//! Test fixtures for tidemark: brokers to run against and tools to check what a
//! pipeline did.
//!
//! - [`EmbeddedCluster`]: librdkafka's in-process mock cluster (no install needed);
//! - [`TansuBroker`]: a real Kafka-compatible broker (Tansu) on a free loopback port;
//! - [`workload`]: topic creation and a JSON workload producer;
//! - [`verify`]: high watermarks, committed offsets, and reading a topic back.

mod embedded;
pub mod memory;
mod tansu;
pub mod verify;
pub mod workload;

pub use embedded::EmbeddedCluster;
pub use tansu::{tansu_binary, TansuBroker};

/// Errors of the fixtures.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A librdkafka call failed.
    #[error("{context}: {source}")]
    Kafka {
        /// What the fixture was doing.
        context: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// The Tansu broker could not be found or started.
    #[error("tansu: {0}")]
    Tansu(String),
    /// A check did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl TestkitError {
    pub(crate) fn kafka(
        context: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> TestkitError {
        let context = context.into();
        move |source| TestkitError::Kafka { context, source }
    }
}

/// A broker a test can use.
pub trait Broker {
    /// `bootstrap.servers` of the broker (comma-separated `host:port`).
    fn bootstrap_servers(&self) -> String;

    /// Creates `topic` with `partitions` partitions unless it exists. The default uses
    /// the Kafka admin API (CreateTopics).
    ///
    /// # Errors
    /// [`TestkitError`] when the broker refuses or does not answer.
    fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), TestkitError> {
        workload::ensure_topic(&self.bootstrap_servers(), topic, partitions).map(|_| ())
    }

    /// Most records per produced batch this broker handles correctly
    /// ([`workload::Workload::batch_records`]); `None`: no limit.
    fn max_batch_records(&self) -> Option<usize> {
        None
    }

    /// A workload for this broker: [`workload::Workload::new`] with its batch limit.
    fn workload(&self, topic: &str, records: u64, partitions: i32) -> workload::Workload {
        let mut w = workload::Workload::new(topic, records, partitions);
        w.batch_records = self.max_batch_records();
        w
    }
}
