//! Pipeline configuration: serde-deserializable, grouped by concern (one file and
//! one `validate` per group), with librdkafka properties passed through.

mod client;
mod commits;
mod delivery;
pub(crate) mod duration;
mod failures;
mod flow;
mod lifecycle;
mod membership;
mod observability;
mod sink;
#[cfg(test)]
mod tests;

pub use commits::CommitConfig;
pub use delivery::{Delivery, StartPosition};
pub use failures::FailureConfig;
pub use flow::FlowConfig;
pub use lifecycle::LifecycleConfig;
pub use membership::Membership;
pub use observability::{ObservabilityConfig, ProducerContext};
pub use sink::{PostgresSink, SinkConfig};

use serde::{Deserialize, Serialize};

use crate::connection::Properties;
use crate::error::Error;
use crate::ordering::ProcessingOrder;
use crate::topic_partition::TopicPartition;

/// The error of a bad configuration field: `Error::Config("field: why")`.
fn invalid(field: &str, why: &str) -> Error {
    Error::Config(format!("{field}: {why}"))
}

/// librdkafka properties tidemark sets itself, whatever the user passes: offsets are
/// committed only by tidemark's commits of committable offsets, never by librdkafka's background
/// auto-commit of *polled* (not processed) positions. With
/// [`CommitPolicy::Auto`](crate::CommitPolicy::Auto) `enable.auto.commit` is `true` instead, and what the
/// auto-commit sends is only ever what tidemark stored: the committable offset.
pub const FORCED_CONSUMER_PROPERTIES: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
];

/// Configuration of one tidemark pipeline (one consumer-group member, or one free
/// consumer), grouped by concern: who consumes ([`Membership`]), the guarantee and
/// where outputs go, execution, then [`FlowConfig`], [`CommitConfig`],
/// [`FailureConfig`], [`LifecycleConfig`], [`ObservabilityConfig`] and the
/// librdkafka pass-through properties.
///
/// Deserializable from any serde format; every field but `brokers` and
/// `membership` has a default, and a group may name only the fields it changes
/// (`{"flow": {"max_in_flight_records": 5000}}`). Unknown fields are refused.
/// Durations are [`Duration`](std::time::Duration)s; their serde forms take
/// milliseconds or strings with units (`"250ms"`, `"10s"`), and write milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// librdkafka `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// A consumer-group member (group id and topics) or a free consumer (its
    /// partitions).
    pub membership: Membership,
    #[serde(default)]
    /// The delivery guarantee. Default: at-least-once.
    pub delivery: Delivery,
    #[serde(default)]
    /// Where outputs go. Default: dropped.
    pub sink: SinkConfig,
    #[serde(default)]
    /// Where partitions without a committed offset start. Default: none
    /// (`auto.offset.reset` decides).
    pub start_position: Option<StartPosition>,
    #[serde(default = "default_workers")]
    /// Size of the worker pool: OS threads running `Processor::process_batch` (for
    /// an async processor, the worker threads of the pipeline's own tokio runtime).
    /// Default: the number of CPUs. Blocking work may use hundreds (BENCHMARKS.md,
    /// "Workers on sleeping work").
    pub workers: usize,
    #[serde(default = "default_concurrency")]
    /// Records an async processor ([`Pipeline::new_async`](crate::Pipeline::new_async))
    /// processes at once: futures running, whatever the runtime's threads. Default
    /// 1,024: with 1 ms of IO a record that is ~1 M records/s, more than a 2-core
    /// consumer fetches (BENCHMARKS.md), at a few hundred bytes per waiting future;
    /// it stays below the default in-flight bound (20,000 records), so back-pressure
    /// still pauses fetching before memory grows. No effect on a blocking processor.
    pub concurrency: usize,
    #[serde(default)]
    /// Which records may be processed at the same time. Default: one at a time per
    /// key ([`ProcessingOrder::Key`]).
    pub ordering: ProcessingOrder,
    /// Back-pressure bounds and poll rounds.
    #[serde(default)]
    pub flow: FlowConfig,
    /// The commit policy, mode, offset-map budget and transactional id.
    #[serde(default)]
    pub commits: CommitConfig,
    /// Retries and the dead-letter topic.
    #[serde(default)]
    pub failures: FailureConfig,
    /// Start-up, idle stop and drain timeouts.
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// Lag sampling and the stuck-record threshold.
    #[serde(default)]
    pub observability: ObservabilityConfig,
    #[serde(default)]
    /// librdkafka properties of **every** client the pipeline makes — its consumer,
    /// the sink's and dead-letter producer, the lag sampler, the committed-offset
    /// look-up, the topic helpers: connection and security (`security.protocol`,
    /// `sasl.*`, `ssl.*`) written once ([`Config::connection`]; docs/SECURITY.md).
    /// Consumer and producer properties below override them. Secret values never
    /// appear in `Debug` ([`Properties`]).
    pub client_properties: Properties,
    #[serde(default)]
    /// Extra librdkafka consumer properties, passed through unchanged except for
    /// [`FORCED_CONSUMER_PROPERTIES`]. See librdkafka's CONFIGURATION.md.
    pub consumer_properties: Properties,
    #[serde(default)]
    /// Extra librdkafka producer properties for the sink, passed through unchanged.
    pub producer_properties: Properties,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
/// Consumer properties of the classic group protocol that librdkafka refuses under
/// `group.protocol=consumer` (KIP-848; librdkafka CONFIGURATION.md).
const CLASSIC_ONLY_PROPERTIES: [&str; 3] = [
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
];

fn default_concurrency() -> usize {
    1024
}
impl Config {
    /// A configuration with every default, for the given brokers, group and topics.
    pub fn new(
        brokers: impl Into<String>,
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Config {
            brokers: brokers.into(),
            membership: Membership::Group {
                group_id: group_id.into(),
                topics: topics.into_iter().map(Into::into).collect(),
            },
            delivery: Delivery::default(),
            sink: SinkConfig::None,
            start_position: None,
            workers: default_workers(),
            concurrency: default_concurrency(),
            ordering: ProcessingOrder::default(),
            flow: FlowConfig::default(),
            commits: CommitConfig::default(),
            failures: FailureConfig::default(),
            lifecycle: LifecycleConfig::default(),
            observability: ObservabilityConfig::default(),
            client_properties: Properties::new(),
            consumer_properties: Properties::new(),
            producer_properties: Properties::new(),
        }
    }

    /// A free consumer (no group) of `partitions`, with every other default.
    pub fn free(brokers: impl Into<String>, partitions: Vec<TopicPartition>) -> Self {
        let mut config = Config::new(brokers, "", Vec::<String>::new());
        config.membership = Membership::Free { partitions };
        config
    }

    /// True for a free consumer ([`Membership::Free`]).
    pub fn is_free(&self) -> bool {
        matches!(self.membership, Membership::Free { .. })
    }

    /// The consumer group of a group member; `None` for a free consumer.
    pub fn group_id(&self) -> Option<&str> {
        match &self.membership {
            Membership::Group { group_id, .. } => Some(group_id),
            Membership::Free { .. } => None,
        }
    }

    /// A free consumer's partitions; empty for a group member.
    pub fn assigned_partitions(&self) -> &[TopicPartition] {
        match &self.membership {
            Membership::Free { partitions } => partitions,
            Membership::Group { .. } => &[],
        }
    }

    /// The topics read: the subscription, or the free consumer's assigned topics
    /// (sorted, each once).
    pub fn input_topics(&self) -> Vec<String> {
        match &self.membership {
            Membership::Group { topics, .. } => topics.clone(),
            Membership::Free { partitions } => {
                let mut topics: Vec<String> =
                    partitions.iter().map(|a| a.topic.to_string()).collect();
                topics.sort();
                topics.dedup();
                topics
            }
        }
    }

    /// `max.poll.interval.ms` of the consumer (librdkafka's default 300000 when not
    /// set), ms.
    ///
    /// # Errors
    /// [`Error::Config`] when the property is not a number.
    pub fn max_poll_interval_ms(&self) -> Result<u64, Error> {
        self.consumer_properties
            .get("max.poll.interval.ms")
            .map_or(Ok(300_000), |v| v.parse::<u64>())
            .map_err(|_| Error::Config("max.poll.interval.ms: not a number".into()))
    }

    /// Checks the values that librdkafka would not, group by group (each group's
    /// `validate` checks its own fields, given what it needs of the others).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field (`group.field: why`).
    pub fn validate(&self) -> Result<(), Error> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("brokers", "must name at least one host:port"));
        }
        if self.workers == 0 {
            return Err(invalid("workers", "must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if self.uses_consumer_group_protocol() {
            if let Some(key) = CLASSIC_ONLY_PROPERTIES
                .iter()
                .find(|key| self.consumer_properties.contains_key(**key))
            {
                return Err(invalid(
                    key,
                    "not allowed with group.protocol=consumer (KIP-848): the assignor is \
                     group.remote.assignor, session and heartbeat are the broker's \
                     group.consumer.* settings",
                ));
            }
        }
        let inputs = self.input_topics();
        self.membership.validate(self.delivery)?;
        self.sink.validate(self.delivery, &inputs)?;
        self.flow.validate()?;
        self.commits.validate(self.delivery, self.is_free())?;
        self.failures.validate(&inputs)?;
        self.lifecycle.validate(self.max_poll_interval_ms()?)
    }

    /// True when `consumer_properties` selects KIP-848's consumer group protocol
    /// (`group.protocol=consumer`; librdkafka's default is `classic`).
    pub fn uses_consumer_group_protocol(&self) -> bool {
        self.consumer_properties
            .get("group.protocol")
            .is_some_and(|v| v.eq_ignore_ascii_case("consumer"))
    }
}
