//! Topic look-up (Metadata) and creation (the admin API's CreateTopics), for the CLI
//! (`tidemark run` creates a missing sink topic) and the tests, over any
//! [`Connection`].

use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::error::Error;
use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Number of partitions of `topic`, or `None` when it does not exist (Metadata
/// request, without auto-creating it).
///
/// # Errors
/// [`Error::BrokerUnreachable`] when no metadata arrives within `timeout`;
/// [`Error::Kafka`] when the client cannot be created.
pub fn topic_partitions(
    connection: impl Into<Connection>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, Error> {
    let connection = connection.into();
    let consumer: BaseConsumer = connection
        .client_config()
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(Error::kafka("creating the metadata client"))?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| Error::BrokerUnreachable {
            brokers: connection.brokers.clone(),
            timeout_ms: timeout.as_millis() as u64,
            source: source.into(),
        })?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Creates `topic` with `partitions` partitions and replication factor
/// `replication` (-1: the broker's `default.replication.factor`, KIP-464, Kafka 2.4+)
/// unless it exists (CreateTopics; TOPIC_ALREADY_EXISTS counts as
/// success), then waits up to 30 s until it shows in metadata. Returns its
/// partition count, which is the existing topic's when it was there already.
///
/// # Errors
/// [`Error::BrokerUnreachable`] when the brokers do not answer within 10 s;
/// [`Error::Kafka`] when the broker refuses the topic (e.g. a replication factor
/// above the number of brokers) or it does not appear in time.
pub fn ensure_topic(
    connection: impl Into<Connection>,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<i32, Error> {
    let connection = connection.into();
    let timeout = Duration::from_secs(10);
    if let Some(n) = topic_partitions(&connection, topic, timeout)? {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> = connection
        .client_config()
        .create()
        .map_err(Error::kafka("creating the admin client"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let results =
        block_on(admin.create_topics([&new], &opts)).map_err(Error::kafka("creating a topic"))?;
    for r in results {
        if let Err((_, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(Error::Kafka {
                    context: "creating a topic",
                    source: KafkaError::AdminOp(code).into(),
                });
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = topic_partitions(&connection, topic, timeout)? {
            return Ok(n);
        }
        if Instant::now() > deadline {
            return Err(Error::Kafka {
                context: "waiting for a created topic in metadata",
                source: KafkaError::AdminOp(RDKafkaErrorCode::UnknownTopicOrPartition).into(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
