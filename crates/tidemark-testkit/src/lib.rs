//! Test fixtures for tidemark: brokers to run against and tools to check what a
//! pipeline did.
//!
//! - [`EmbeddedCluster`]: librdkafka's in-process mock cluster (no install needed);
//! - [`KafkaBroker`]: Apache Kafka 4.x (single node, KRaft) on free loopback ports,
//!   shared by a test run or owned by one test;
//! - [`KafkaCluster`]: an N-node Apache Kafka cluster with node-level kill and start;
//! - [`workload`]: topic creation and a JSON workload producer;
//! - [`verify`]: high watermarks, committed offsets, and reading a topic back;
//! - [`processors`]: processors the tests share;
//! - [`jaeger`]: a tracing backend (Jaeger v2) for the tracing tests.

pub mod builtin;
mod cluster;
mod embedded;
pub mod jaeger;
mod kafka;
pub mod memory;
mod postgres;
pub mod processors;
pub mod secured;
pub mod toxiproxy;
pub mod verify;
pub mod workload;

pub use cluster::KafkaCluster;
pub use embedded::EmbeddedCluster;
pub use kafka::{kafka_script, unique_name, KafkaBroker, SHARED_BROKERS_ENV};
pub use postgres::{postgres_script, PostgresClient, PostgresServer, SHARED_POSTGRES_ENV};
pub use secured::{SecuredKafka, SHARED_SECURED_ENV};

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
    /// The Apache Kafka broker could not be started.
    #[error("kafka broker: {0}")]
    Broker(String),
    /// A tidemark library call (topic look-up or creation) failed.
    #[error(transparent)]
    Tidemark(#[from] tidemark::Error),
    /// The PostgreSQL server could not be started, reached or queried.
    #[error("postgresql: {0}")]
    Database(String),
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
        workload::ensure_topic(self.bootstrap_servers(), topic, partitions).map(|_| ())
    }

    /// A workload for this broker: [`workload::Workload::new`].
    fn workload(&self, topic: &str, records: u64, partitions: i32) -> workload::Workload {
        workload::Workload::new(topic, records, partitions)
    }
}

/// Installs a `tracing` subscriber writing to the test's captured output, filtered
/// by `RUST_LOG` (nothing when unset); a second call is a no-op.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `check` every 50 ms until it is true.
///
/// # Panics
/// When `limit` passes first, naming `what` was awaited (the test fails: a bound on a
/// wait, not a timed assertion — `limit` is far above what the wait needs).
pub fn wait_until(what: &str, limit: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
