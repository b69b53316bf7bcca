//! librdkafka's mock cluster, in-process.

use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

use crate::{Broker, TestkitError};

/// An in-process Kafka cluster: librdkafka's mock cluster
/// (`test.mock.num.brokers`), with consumer groups, offset commits and transactions.
///
/// The group initial rebalance delay is set to 0 ms (librdkafka's
/// `rd_kafka_mock_group_initial_rebalance_delay_ms`; default 3000 ms), so a group
/// forms at once. It lives as long as this value.
pub struct EmbeddedCluster {
    /// The client that owns the mock cluster; dropping it stops the cluster.
    owner: BaseProducer,
    bootstrap: String,
}

impl EmbeddedCluster {
    /// Starts a one-broker mock cluster holding `topic` (`partitions` partitions)
    /// with `records` workload records already produced; returns it and its
    /// bootstrap servers. The common set-up of the engine's tests.
    ///
    /// # Errors
    /// As [`start`](Self::start), [`Broker::create_topic`] and
    /// [`workload::produce`](crate::workload::produce).
    pub fn with_workload(
        topic: &str,
        partitions: i32,
        records: u64,
    ) -> Result<(Self, String), TestkitError> {
        let cluster = Self::start(1)?;
        let brokers = cluster.bootstrap_servers();
        cluster.create_topic(topic, partitions)?;
        crate::workload::produce(
            &brokers,
            &crate::workload::Workload::new(topic, records, partitions),
            |_| {},
        )?;
        Ok((cluster, brokers))
    }

    /// Starts a mock cluster of `brokers` brokers.
    ///
    /// # Errors
    /// [`TestkitError::Kafka`] when librdkafka cannot create it.
    pub fn start(brokers: u32) -> Result<Self, TestkitError> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .create()
            .map_err(TestkitError::kafka("starting the mock cluster"))?;
        // SAFETY: the handle belongs to `owner`, which outlives every use here.
        let bootstrap = unsafe {
            let mcluster = rdsys::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
            if mcluster.is_null() {
                return Err(TestkitError::Kafka {
                    context: "starting the mock cluster".into(),
                    source: rdkafka::error::KafkaError::ClientCreation(
                        "no mock cluster on the client".into(),
                    ),
                });
            }
            rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, 0);
            std::ffi::CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(mcluster))
                .to_string_lossy()
                .into_owned()
        };
        Ok(EmbeddedCluster { owner, bootstrap })
    }

    /// Runs `f` with the rdkafka handle of the mock cluster (error injection, broker
    /// down/up).
    pub fn with_mock<R>(
        &self,
        f: impl FnOnce(
            &rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
        ) -> R,
    ) -> R {
        f(&self
            .owner
            .client()
            .mock_cluster()
            .expect("the owner client has a mock cluster"))
    }
}

impl Broker for EmbeddedCluster {
    fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    /// The mock cluster has no CreateTopics API: topics are created through its own
    /// `rd_kafka_mock_topic_create` (replication factor 1).
    fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), TestkitError> {
        self.with_mock(|m| m.create_topic(topic, partitions, 1))
            .map_err(TestkitError::kafka(format!("creating topic {topic}")))
    }
}
