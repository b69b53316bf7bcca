//! Pipeline configuration: serde-deserializable, with librdkafka properties passed
//! through.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::commit::{CommitMode, CommitPolicy};
use crate::connection::{Connection, Properties};
use crate::error::Error;
use crate::failures::{DeadLetterConfig, RetryPolicy};
use crate::ordering::ProcessingOrder;
use crate::topic_partition::TopicPartition;

/// librdkafka properties tidemark sets itself, whatever the user passes: offsets are
/// committed only by tidemark's commits of committable offsets, never by librdkafka's background
/// auto-commit of *polled* (not processed) positions. With
/// [`CommitPolicy::Auto`] `enable.auto.commit` is `true` instead, and what the
/// auto-commit sends is only ever what tidemark stored: the committable offset.
pub const FORCED_CONSUMER_PROPERTIES: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
];

/// The delivery guarantee, chosen by when offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Delivery {
    /// Commit after completion, the committable-offset rule (the default): a crash
    /// re-processes, never skips.
    #[default]
    AtLeastOnce,
    /// Commit each polled batch's next offsets synchronously *before* dispatching
    /// it: a crash loses at most the records in flight (within
    /// `max_in_flight_records`) and never processes a record twice. The commit policy
    /// is not used; nothing is committed on revoke or stop.
    AtMostOnce,
    /// Kafka-to-Kafka exactly-once (KIP-98, KIP-447): the sink's outputs and the
    /// consumed offsets are committed in one producer transaction
    /// (`send_offsets_to_transaction` with the consumer's group metadata), on the
    /// commit policy's schedule, after the records in flight drain. Downstream
    /// consumers read with `isolation.level=read_committed`. An aborted transaction
    /// rewinds every partition to its last committed offset and processes again; a
    /// fenced producer stops the pipeline ([`Error::Transaction`]). Needs a
    /// `topic:NAME` sink and a consumer group.
    ExactlyOnce,
}

/// The questions the engine asks a delivery mode, so the mode is decided here and
/// nowhere else tests it as a flag.
impl Delivery {
    /// At-most-once: a polled batch's next offsets are committed before its records
    /// are dispatched, and nothing is committed after processing (no policy commit,
    /// none on revoke or stop).
    pub(crate) fn commits_before_processing(self) -> bool {
        self == Delivery::AtMostOnce
    }

    /// A record may be processed again after a failure or by a later owner, so
    /// retries are worth making and an offset map is worth keeping (every mode but
    /// at-most-once).
    pub(crate) fn may_process_again(self) -> bool {
        !self.commits_before_processing()
    }

    /// Exactly-once: offsets are committed in the sink producer's transaction.
    pub(crate) fn commits_in_transaction(self) -> bool {
        self == Delivery::ExactlyOnce
    }
}

impl std::str::FromStr for Delivery {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "at-least-once" => Ok(Delivery::AtLeastOnce),
            "at-most-once" => Ok(Delivery::AtMostOnce),
            "exactly-once" => Ok(Delivery::ExactlyOnce),
            _ => Err(format!(
                "unknown delivery {s:?}: expected at-least-once, at-most-once or exactly-once"
            )),
        }
    }
}

/// Where a partition starts when the group has no committed offset for it (a fresh
/// group, or a partition it never committed). Partitions with a committed offset
/// always resume from it. Without a start position librdkafka's `auto.offset.reset`
/// decides (tidemark's default: `earliest`).
///
/// Text form (CLI `--start`): `beginning`, `end`, `offset:N`, `timestamp:MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The earliest offset still in the log.
    Beginning,
    /// The high watermark: only records produced from now on.
    End,
    /// This offset (clamped by the broker's reset policy if out of range).
    Offset(i64),
    /// The first record with a timestamp at or after this one, ms since the Unix
    /// epoch (Kafka's ListOffsets by timestamp, KIP-79); the end if there is none.
    Timestamp(i64),
}

impl std::str::FromStr for StartPosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let number = |v: &str| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{s:?}: expected a non-negative integer after the colon"))
        };
        match s.split_once(':') {
            Some(("offset", v)) => Ok(StartPosition::Offset(number(v)?)),
            Some(("timestamp", v)) => Ok(StartPosition::Timestamp(number(v)?)),
            None if s == "beginning" => Ok(StartPosition::Beginning),
            None if s == "end" => Ok(StartPosition::End),
            _ => Err(format!(
                "unknown start position {s:?}: expected beginning, end, offset:N or timestamp:MS"
            )),
        }
    }
}

/// Where processed records' outputs go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SinkConfig {
    /// Outputs are dropped (a processor with side effects of its own). The default.
    #[default]
    None,
    /// Outputs are produced to this topic with the headers `tidemark-src-partition`
    /// and `tidemark-src-offset`; an input is complete only when its outputs are acked.
    Topic {
        /// Name of the output topic.
        topic: String,
    },
    /// Outputs are written as rows of a PostgreSQL table (needs the cargo feature
    /// `postgres`; without it `run` fails with [`crate::Error::Config`]).
    /// An input is complete only when the transactions holding its rows have
    /// committed; a row the table refuses (a constraint, SQLSTATE class 22 or 23)
    /// fails its input permanently (the dead-letter topic, else the run stops).
    Postgres(PostgresSink),
}

/// A PostgreSQL table that receives a pipeline's outputs ([`SinkConfig::Postgres`]),
/// one row per output, keyed by its input's coordinates so that a record processed
/// again (at-least-once) writes nothing twice:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS <table> (
///     src_topic     text    NOT NULL, -- the input record's topic
///     src_partition integer NOT NULL, -- its partition
///     src_offset    bigint  NOT NULL, -- its offset
///     src_output    integer NOT NULL, -- the output's index among the input's outputs (0, 1, ...)
///     key           bytea,            -- the output's key
///     value         bytea,            -- the output's payload
///     headers       jsonb,            -- the output's headers: [{"key": .., "value": ..}], NULL when none
///     PRIMARY KEY (src_topic, src_partition, src_offset, src_output));
/// ```
///
/// The table is created when missing (an existing one must have these columns);
/// rows are written with one multi-row `INSERT … ON CONFLICT DO NOTHING` per batch
/// (`UNNEST` of one array per column), each its own transaction, over
/// `connections` connections. A header value that is not UTF-8 is written as a
/// `\x`-prefixed hex string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresSink {
    /// libpq connection string: a URL (`postgresql://user:secret@host:5432/db`) or
    /// `key=value` pairs. Without `connect_timeout`, tidemark uses 5 s.
    pub url: String,
    /// The table: `name` or `schema.name`, letters, digits and `_` (quoted as
    /// written, so case-sensitive).
    pub table: String,
    /// Most rows in one `INSERT`. Default 1,000 (BENCHMARKS.md, "Kafka to PostgreSQL").
    #[serde(default = "default_postgres_batch_rows")]
    pub batch_rows: usize,
    /// Connections writing at once. Default 4.
    #[serde(default = "default_postgres_connections")]
    pub connections: usize,
}

/// The URL's password never shows: `postgresql://user:[redacted]@host/db`, or
/// `password=[redacted]` in a key=value string.
impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("url", &redact_url(&self.url))
            .field("table", &self.table)
            .field("batch_rows", &self.batch_rows)
            .field("connections", &self.connections)
            .finish()
    }
}

/// A libpq connection string with its password replaced by `[redacted]`.
fn redact_url(url: &str) -> String {
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let scheme = &url[..url.len() - rest.len()];
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}{user}:[redacted]@{host}");
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=[redacted]"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl PostgresSink {
    /// The table `table` of the database at `url`, with the default batch size and
    /// connections.
    pub fn new(url: impl Into<String>, table: impl Into<String>) -> Self {
        PostgresSink {
            url: url.into(),
            table: table.into(),
            batch_rows: default_postgres_batch_rows(),
            connections: default_postgres_connections(),
        }
    }

    /// Checks the table name and the bounds.
    ///
    /// # Errors
    /// A message naming the field when the table is not `name` or `schema.name`
    /// of letters, digits and `_` (not starting with a digit), or a bound is 0.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let part_ok = |p: &str| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let parts: Vec<&str> = self.table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) {
            return Err((
                "sink.table",
                format!(
                    "{:?} is not a table name: `name` or `schema.name` of letters, digits and _",
                    self.table
                ),
            ));
        }
        if self.batch_rows == 0 {
            return Err(("sink.batch_rows", "must be at least 1".into()));
        }
        if self.connections == 0 {
            return Err(("sink.connections", "must be at least 1".into()));
        }
        Ok(())
    }
}

fn default_postgres_batch_rows() -> usize {
    1000
}
fn default_postgres_connections() -> usize {
    4
}

/// Who the pipeline's consumer is: a consumer-group member or a free consumer. One
/// of the two, never a mix (a group id with explicit partitions, a subscription
/// without a group) — the type cannot express those.
///
/// Serialized externally tagged: `{"group": {"group_id": "g", "topics": ["t"]}}` or
/// `{"free": {"partitions": [{"topic": "t", "partition": 0}]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Membership {
    /// A member of consumer group `group_id` (librdkafka `group.id`) subscribed to
    /// `topics`: the group's assignor spreads the partitions over its members,
    /// rebalances move them, commits go to the group coordinator.
    Group {
        /// The consumer group.
        group_id: String,
        /// The subscribed topics (at least one).
        topics: Vec<String>,
    },
    /// A free consumer of `partitions`: assigned directly, no group membership,
    /// rebalances or group commits; start offsets are loaded from, and committable
    /// offsets saved to, the [`OffsetStore`](crate::OffsetStore) given to
    /// [`Pipeline::with_offset_store`](crate::Pipeline::with_offset_store).
    Free {
        /// The partitions read (at least one).
        partitions: Vec<TopicPartition>,
    },
}

/// Back-pressure and poll rounds: how much tidemark takes from the consumer and
/// holds (docs/DESIGN.md, invariant 8). Part of [`Config`]; every field has a
/// default (`FlowConfig::default()`), so a serde form may name only what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FlowConfig {
    /// Most records taken from the consumer per poll round before dispatching.
    /// Default 2000.
    pub max_batch_records: usize,
    /// Longest a poll waits for the first record of a round, ms. Default 100.
    pub poll_timeout_ms: u64,
    /// Back-pressure bound on records polled and not yet complete, over all
    /// partitions: staged, running, waiting in a lane or for a retry. At the bound
    /// tidemark pauses its partitions while it keeps polling (docs/DESIGN.md,
    /// invariant 8) and resumes below half of it, so it bounds the memory of held
    /// records and the records a crash finds unfinished. Completed records do not
    /// count (they hold no memory; [`max_uncommitted_records`](Self::max_uncommitted_records)
    /// bounds them). Default 20000.
    pub max_in_flight_records: usize,
    /// Commit-lag bound on records polled and not yet covered by a confirmed commit,
    /// over all partitions: in flight, or completed above a partition's committed
    /// offset. Past half of it a commit goes out whatever the policy (one at a time);
    /// at the bound tidemark pauses the partitions holding at least their share of
    /// it (the bound divided by the assigned partitions) until they are back under
    /// half their share, so a record stuck at one partition's committable offset
    /// (or a failing coordinator) stops that partition, not the others.
    /// Without an offset map this is the most a crash makes the next owner process
    /// again. Default 100000; must be at least `max_in_flight_records`.
    pub max_uncommitted_records: usize,
    /// Back-pressure bound on the key + payload bytes of the records polled and not
    /// yet processed, bytes, over all partitions (records waiting for a retry
    /// count). At the bound every partition pauses; fetching resumes once records
    /// and bytes are both at or below half their bounds. Default 64 MiB.
    pub max_in_flight_bytes: usize,
    /// Optional per-partition bound on records polled and not yet complete, so one
    /// busy partition cannot take the whole budget. Default: none.
    pub max_in_flight_records_per_partition: Option<usize>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_batch_records: 2000,
            poll_timeout_ms: 100,
            max_in_flight_records: 20_000,
            max_uncommitted_records: 100_000,
            max_in_flight_bytes: 64 << 20,
            max_in_flight_records_per_partition: None,
        }
    }
}

/// When and how committable offsets are committed. Part of [`Config`]; every field
/// has a default (`CommitConfig::default()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CommitConfig {
    /// When to commit the dirty partitions' committable offsets. Default: every 1000 ms. A
    /// synchronous commit always happens on revoke and on graceful shutdown.
    pub policy: CommitPolicy,
    /// Whether policy-driven commits are asynchronous (default) or synchronous.
    pub mode: CommitMode,
    /// Byte budget of the **offset map** each commit carries in its metadata: the
    /// records completed above the committed offset, so that the partition's next
    /// owner skips them instead of processing them again (docs/DESIGN.md, "The offset
    /// map"). When the map does not fit, its longest prefix that fits is kept (the
    /// rest is processed again by a new owner); the map never stops tidemark from
    /// taking new records. Default 4096, the broker's default
    /// `offset.metadata.max.bytes`: lower it if the brokers' is lower (a commit
    /// with larger metadata fails with OFFSET_METADATA_TOO_LARGE). 0 turns the map
    /// off (commits carry no metadata, and maps found on assignment are ignored).
    pub offset_map_max_bytes: usize,
    /// `transactional.id` of the sink producer with [`Delivery::ExactlyOnce`].
    /// Default: `tidemark-<group>-<random>`, unique per instance (fencing of zombies
    /// comes from the group metadata sent with the offsets, KIP-447).
    pub transactional_id: Option<String>,
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            policy: CommitPolicy::default(),
            mode: CommitMode::default(),
            offset_map_max_bytes: tidemark_offsets::offset_map::KAFKA_METADATA_MAX_BYTES,
            transactional_id: None,
        }
    }
}

/// What happens to a record whose processing fails. Part of [`Config`]; every field
/// has a default (`FailureConfig::default()`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FailureConfig {
    /// Retries of retriable failures. Default: 3 attempts, 100 ms doubling up to 10 s.
    pub retry: RetryPolicy,
    /// Where records that cannot be processed go. Default: none (such a record
    /// stops the pipeline at its committable offset).
    pub dead_letter: Option<DeadLetterConfig>,
}

/// How a run starts and stops: start-up, the idle stop and the drain on revoke and
/// stop, ms. Part of [`Config`]; every field has a default
/// (`LifecycleConfig::default()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LifecycleConfig {
    /// How long start-up may take to reach the brokers and find every topic, ms.
    /// Default 10000; past it, `run` returns [`Error::BrokerUnreachable`].
    pub startup_timeout_ms: u64,
    /// Stop gracefully (final sync commit) once caught up, ms: the member has joined
    /// and received its first assignment (an empty one counts; a group join is not
    /// idleness), every assigned partition has reached its end (librdkafka's
    /// partition EOF, `enable.partition.eof`, which the pipeline's consumer turns on: the
    /// fetch position reached the high watermark, or the last stable offset under
    /// `read_committed`), no assigned partition is paused, nothing is staged, in
    /// flight, waiting in a lane or waiting for a retry, and no record has arrived
    /// for this long (counted from the latest assignment at the earliest). A member
    /// whose assignment was lost (session timeout, network cut) is not idle until it
    /// has rejoined and received an assignment again. A member
    /// with an empty assignment (more members than partitions) stops this long after
    /// its join. `None` (the default) runs until shut down.
    pub exit_when_idle_ms: Option<u64>,
    /// Longest a revoke or a graceful shutdown waits for in-flight records before
    /// committing, ms. Default 10000: well under the rebalance timeout
    /// (`max.poll.interval.ms`, 300000 by default), which it must stay below. Records
    /// still in flight then are not committed (the next owner processes them again).
    pub drain_timeout_ms: u64,
    /// How long the cluster may go on refusing this client's authentication (SASL) or
    /// TLS handshake, with no record or assignment in between, before `run` stops
    /// with [`Error::Refused`], ms. Default 10000. (librdkafka retries both forever;
    /// an ACL's denial stops the run at once; a broker that is down or cut off is no
    /// refusal and is waited out.) See docs/SECURITY.md.
    pub refusal_timeout_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            startup_timeout_ms: 10_000,
            exit_when_idle_ms: None,
            drain_timeout_ms: 10_000,
            refusal_timeout_ms: 10_000,
        }
    }
}

/// What the metrics watch: the lag sampler and the stuck-record threshold, ms. Part
/// of [`Config`]; every field has a default (`ObservabilityConfig::default()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ObservabilityConfig {
    /// How often the high watermarks behind the lag gauges are refreshed, ms
    /// (one ListOffsets per assigned partition, from a separate client, so lag
    /// stays true while a partition is paused). Default 5000; 0 turns it off (no
    /// high watermark or lag in [`Metrics`](crate::Metrics)).
    pub lag_refresh_ms: u64,
    /// A record in flight longer than this is *stuck*: logged once with its
    /// coordinates and counted (`Metrics::stuck_records`,
    /// `tidemark_stuck_records_total`), ms. Default 60000.
    pub stuck_threshold_ms: u64,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig {
            lag_refresh_ms: 5_000,
            stuck_threshold_ms: 60_000,
        }
    }
}

/// Configuration of one tidemark pipeline (one consumer-group member, or one free
/// consumer), grouped by concern: who consumes ([`Membership`]), the guarantee and
/// where outputs go, execution, then [`FlowConfig`], [`CommitConfig`],
/// [`FailureConfig`], [`LifecycleConfig`], [`ObservabilityConfig`] and the
/// librdkafka pass-through properties.
///
/// Deserializable from any serde format; every field but `brokers` and
/// `membership` has a default, and a group may name only the fields it changes
/// (`{"flow": {"max_in_flight_records": 5000}}`). Unknown fields are refused.
/// Durations are in milliseconds.
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

    /// Checks the values that librdkafka would not.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("{field}: {why}")));
        if self.brokers.trim().is_empty() {
            return bad("brokers", "must name at least one host:port");
        }
        match &self.membership {
            Membership::Group { group_id, .. } if group_id.trim().is_empty() => {
                return bad("membership.group.group_id", "must not be empty")
            }
            Membership::Group { topics, .. } => {
                if topics.is_empty() || topics.iter().any(|t| t.trim().is_empty()) {
                    return bad(
                        "membership.group.topics",
                        "must list at least one non-empty topic name",
                    );
                }
            }
            Membership::Free { partitions } => {
                if partitions.is_empty() {
                    return bad(
                        "membership.free.partitions",
                        "a free consumer must list its partitions",
                    );
                }
                if self.delivery == Delivery::ExactlyOnce {
                    return bad(
                        "delivery",
                        "exactly-once commits offsets with the group's metadata: it needs a group_id",
                    );
                }
            }
        }
        if self.delivery == Delivery::ExactlyOnce {
            if !matches!(self.sink, SinkConfig::Topic { .. }) {
                return bad(
                    "delivery",
                    "exactly-once is for Kafka-to-Kafka pipelines: it needs a topic:NAME sink",
                );
            }
            if matches!(
                self.commits.policy,
                CommitPolicy::EveryRecord | CommitPolicy::Auto(_)
            ) {
                return bad(
                    "commits.policy",
                    "exactly-once commits offsets in producer transactions: use every-ms, every-records, every-batch or at-end",
                );
            }
        }
        if matches!(self.commits.policy, CommitPolicy::Auto(_)) && self.is_free() {
            return bad(
                "commits.policy",
                "librdkafka's auto-commit commits to a group; a free consumer saves to its offset store",
            );
        }
        if self.workers == 0 {
            return bad("workers", "must be at least 1");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if matches!(
            self.commits.policy,
            CommitPolicy::EveryMs(0) | CommitPolicy::EveryRecords(0) | CommitPolicy::Auto(0)
        ) {
            return bad(
                "commits.policy",
                "the interval or record count must be at least 1",
            );
        }
        if self.flow.max_batch_records == 0 {
            return bad("flow.max_batch_records", "must be at least 1");
        }
        if self.flow.max_in_flight_records == 0 || self.flow.max_in_flight_bytes == 0 {
            return bad(
                "flow.max_in_flight_records/flow.max_in_flight_bytes",
                "must be at least 1",
            );
        }
        if self.flow.max_uncommitted_records < self.flow.max_in_flight_records {
            return bad(
                "flow.max_uncommitted_records",
                "must be at least max_in_flight_records (records in flight are uncommitted too)",
            );
        }
        if self.flow.max_in_flight_records_per_partition == Some(0) {
            return bad(
                "flow.max_in_flight_records_per_partition",
                "must be at least 1",
            );
        }
        let max_poll_ms = self.max_poll_interval_ms()?;
        if self.lifecycle.drain_timeout_ms >= max_poll_ms {
            return bad(
                "lifecycle.drain_timeout_ms",
                "must be below max.poll.interval.ms (the rebalance timeout), or a revoke \
                 that drains would get this member kicked out of the group",
            );
        }
        if self.failures.retry.max_attempts == 0 {
            return bad(
                "failures.retry.max_attempts",
                "must be at least 1 (1: no retries)",
            );
        }
        if self.failures.retry.initial_backoff_ms > self.failures.retry.max_backoff_ms
            || self.failures.retry.multiplier.is_nan()
            || self.failures.retry.multiplier < 1.0
        {
            return bad(
                "failures.retry",
                "initial_backoff_ms must not exceed max_backoff_ms, and multiplier must be at least 1",
            );
        }
        if let Some(dl) = &self.failures.dead_letter {
            if dl.topic.trim().is_empty() || self.input_topics().contains(&dl.topic) {
                return bad(
                    "failures.dead_letter.topic",
                    "must be set and differ from the input topics",
                );
            }
            if dl.max_consecutive == 0 {
                return bad("failures.dead_letter.max_consecutive", "must be at least 1");
            }
        }
        if self.uses_consumer_group_protocol() {
            for key in CLASSIC_ONLY_PROPERTIES {
                if self.consumer_properties.contains_key(key) {
                    return bad(
                        key,
                        "not allowed with group.protocol=consumer (KIP-848): the assignor is \
                         group.remote.assignor, session and heartbeat are the broker's \
                         group.consumer.* settings",
                    );
                }
            }
        }
        match &self.sink {
            SinkConfig::Topic { topic } => {
                if topic.trim().is_empty() {
                    return bad("sink.topic", "must not be empty");
                }
                if self.input_topics().contains(topic) {
                    return bad("sink.topic", "must differ from the input topics");
                }
            }
            SinkConfig::Postgres(table) => {
                if let Err((field, message)) = table.validate() {
                    return bad(field, &message);
                }
            }
            SinkConfig::None => {}
        }
        Ok(())
    }

    /// True when `consumer_properties` selects KIP-848's consumer group protocol
    /// (`group.protocol=consumer`; librdkafka's default is `classic`).
    pub fn uses_consumer_group_protocol(&self) -> bool {
        self.consumer_properties
            .get("group.protocol")
            .is_some_and(|v| v.eq_ignore_ascii_case("consumer"))
    }

    /// How every client of the pipeline reaches the cluster: `brokers` and
    /// `client_properties`.
    pub fn connection(&self) -> Connection {
        Connection::new(self.brokers.as_str()).with_properties(self.client_properties.clone())
    }

    /// The librdkafka consumer configuration the pipeline's consumer uses.
    pub(crate) fn consumer_client_config(&self) -> ClientConfig {
        client_config(self.consumer_client_properties())
    }

    /// The librdkafka producer configuration of the sink.
    pub(crate) fn producer_client_config(&self) -> ClientConfig {
        client_config(self.producer_client_properties())
    }

    /// The librdkafka consumer properties (librdkafka's CONFIGURATION.md names and
    /// values) the pipeline's consumer is created with: tidemark's defaults (with
    /// exactly-once: `isolation.level=read_committed`), then the user's
    /// `consumer_properties`, then [`FORCED_CONSUMER_PROPERTIES`] (a user value that
    /// differs is overridden with a warning; with [`CommitPolicy::Auto`]:
    /// `enable.auto.commit=true` and `auto.commit.interval.ms`). A free consumer
    /// gets a random `group.id` it never joins.
    pub fn consumer_client_properties(&self) -> BTreeMap<String, String> {
        let mut cc = Building::default();
        cc.set("bootstrap.servers", &self.brokers)
            .set("auto.offset.reset", "earliest");
        cc.extend(&self.client_properties);
        match self.group_id() {
            Some(group) => {
                cc.set("group.id", group);
                // KIP-848's protocol has the broker assign; librdkafka refuses the
                // client-side assignor setting under it.
                if !self.uses_consumer_group_protocol() {
                    cc.set("partition.assignment.strategy", "cooperative-sticky");
                }
            }
            // librdkafka's consumer API needs a group.id even for assign(); a free
            // consumer never joins it, never commits to it, and never asks it for
            // offsets (every partition is assigned with an explicit start).
            None => {
                cc.set(
                    "group.id",
                    format!("tidemark-free-{:016x}", rand::random::<u64>()),
                );
            }
        }
        if self.delivery.commits_in_transaction() {
            cc.set("isolation.level", "read_committed");
        }
        // librdkafka (≥ 2.4) postpones a partition's next fetch by this much when its
        // prefetch queue is over its thresholds, which is the normal state while
        // tidemark holds back for back-pressure: with the default (1000 ms) every
        // resume stalls for up to a second. Measured in BENCHMARKS.md.
        cc.set("fetch.queue.backoff.ms", "10");
        // A pause cannot cancel a Fetch already sent, and librdkafka keeps one Fetch
        // in flight per broker: when back-pressure resumes while a long-poll Fetch
        // for partitions at their end waits on the broker, the resumed partitions
        // wait for it, up to fetch.wait.max.ms (librdkafka's default 500 ms, its
        // default was 100 before). With 500 ms a CPU-bound pipeline idled for most of
        // each such wait (BENCHMARKS.md, "Headline at the default Config"); 100 ms
        // costs a consumer with nothing to read 10 empty Fetches per second per broker.
        cc.set("fetch.wait.max.ms", "100");
        // Prefetch sized from the byte budget, so paused partitions cannot make
        // librdkafka hold much more than tidemark does (librdkafka defaults: 64 MiB
        // queued, 50 MiB per fetch).
        let budget_kb = (self.flow.max_in_flight_bytes / 1024).max(1);
        cc.set(
            "queued.max.messages.kbytes",
            (budget_kb / 2).clamp(1024, 65_536).to_string(),
        )
        .set(
            "fetch.max.bytes",
            ((budget_kb / 2).clamp(1024, 51_200) * 1024).to_string(),
        );
        for (k, v) in &self.consumer_properties {
            cc.set(k, v);
        }
        let mut forced: Vec<(&str, String)> = FORCED_CONSUMER_PROPERTIES
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        if let CommitPolicy::Auto(ms) = self.commits.policy {
            forced[0].1 = "true".into();
            forced.push(("auto.commit.interval.ms", ms.to_string()));
        }
        for (k, v) in &forced {
            if let Some(user) = self.consumer_properties.get(*k) {
                if user != v {
                    tracing::warn!(
                        property = k,
                        user_value = %user,
                        forced = v,
                        "tidemark commits offsets itself (committable-offset rule); overriding"
                    );
                }
            }
            cc.set(*k, v);
        }
        cc.0
    }

    /// The librdkafka producer properties of the sink (output and dead-letter
    /// topics): `acks=all` (an output is acknowledged only once fully replicated),
    /// idempotence and `linger.ms=5` unless overridden, then the user's
    /// `producer_properties`; with exactly-once, `transactional.id` (which implies
    /// idempotence; random per start unless `transactional_id` is set).
    pub fn producer_client_properties(&self) -> BTreeMap<String, String> {
        let mut cc = Building::default();
        cc.extend(&self.client_properties);
        // Idempotence keeps each output partition in send order through retries, which
        // per-key processing order relies on (and acks=all, KIP-98).
        cc.set("bootstrap.servers", &self.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        for (k, v) in &self.producer_properties {
            cc.set(k, v);
        }
        if self.delivery.commits_in_transaction() {
            let id = self.commits.transactional_id.clone().unwrap_or_else(|| {
                format!(
                    "tidemark-{}-{:016x}",
                    self.group_id().unwrap_or("free"),
                    rand::random::<u64>()
                )
            });
            cc.set("transactional.id", id);
        }
        cc.0
    }
}

/// librdkafka properties being built (the setter chains like `ClientConfig`'s).
#[derive(Default)]
struct Building(BTreeMap<String, String>);

impl Building {
    fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Every property of `shared` but `bootstrap.servers` (that is `Config::brokers`).
    fn extend(&mut self, shared: &Properties) {
        for (k, v) in shared.iter().filter(|(k, _)| *k != "bootstrap.servers") {
            self.set(k, v);
        }
    }
}

fn client_config(properties: BTreeMap<String, String>) -> ClientConfig {
    let mut cc = ClientConfig::new();
    for (k, v) in properties {
        cc.set(k, v);
    }
    cc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret_and_every_client_gets_the_shared_properties() {
        let mut c = Config::new("b:9093", "g", ["t"]);
        c.client_properties
            .insert("sasl.password".into(), "hunter2-client".into());
        c.client_properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        c.consumer_properties
            .insert("ssl.key.password".into(), "hunter2-consumer".into());
        c.producer_properties.insert(
            "sasl.oauthbearer.client.secret".into(),
            "hunter2-producer".into(),
        );
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("SASL_SSL"));
        for properties in [
            c.consumer_client_properties(),
            c.producer_client_properties(),
        ] {
            assert_eq!(properties["sasl.password"], "hunter2-client");
            assert_eq!(properties["security.protocol"], "SASL_SSL");
            assert_eq!(properties["bootstrap.servers"], "b:9093");
        }
        assert_eq!(c.connection().properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn a_postgres_password_never_shows() {
        let mut c = Config::new("b:9092", "g", ["t"]);
        c.sink = SinkConfig::Postgres(PostgresSink::new(
            "postgresql://app:pg-s3cret@db:5432/x",
            "t",
        ));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pg-s3cret") && shown.contains("app:[redacted]@db:5432/x"),
            "{shown}"
        );
        let kv = PostgresSink::new("host=db user=app password=pg-s3cret", "t");
        assert!(!format!("{kv:?}").contains("pg-s3cret"));
    }

    #[test]
    fn deserializes_with_defaults() {
        let c: Config = serde_json::from_str(
            r#"{"brokers":"b:9092","membership":{"group":{"group_id":"g","topics":["t"]}},
                "sink":{"type":"topic","topic":"out"},
                "consumer_properties":{"enable.auto.commit":"true","fetch.max.bytes":"1000"}}"#,
        )
        .unwrap();
        assert_eq!(c.commits.policy, CommitPolicy::EveryMs(1000));
        assert_eq!(c.commits.mode, CommitMode::Async);
        assert_eq!(
            c.sink,
            SinkConfig::Topic {
                topic: "out".into()
            }
        );
        let cc = c.consumer_client_config();
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cc.get("fetch.max.bytes"), Some("1000"));
        c.validate().unwrap();
        assert_eq!(c.flow, FlowConfig::default());
    }

    #[test]
    fn a_group_names_only_what_it_changes_and_refuses_unknown_fields() {
        let c: Config = serde_json::from_str(
            r#"{"brokers":"b","membership":{"group":{"group_id":"g","topics":["t"]}},
                "flow":{"max_in_flight_records":5000},"commits":{"policy":{"every_ms":50}}}"#,
        )
        .unwrap();
        assert_eq!(c.flow.max_in_flight_records, 5000);
        assert_eq!(
            c.flow.max_in_flight_bytes,
            FlowConfig::default().max_in_flight_bytes
        );
        assert_eq!(c.commits.policy, CommitPolicy::EveryMs(50));
        assert_eq!(c.commits.mode, CommitMode::Async);
        let err = serde_json::from_str::<Config>(
            r#"{"brokers":"b","membership":{"group":{"group_id":"g","topics":["t"]}},
                "flow":{"max_in_flight_record":5000}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_in_flight_record"), "{err}");
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = Config::new("b:1", "g", ["t"]);
        c.workers = 0;
        assert!(matches!(c.validate(), Err(Error::Config(m)) if m.starts_with("workers")));
        let mut c = Config::new("b:1", "g", ["t"]);
        c.sink = SinkConfig::Topic { topic: "t".into() };
        assert!(c.validate().is_err());
        let mut c = Config::new("b:1", "g", ["t"]);
        c.consumer_properties
            .insert("max.poll.interval.ms".into(), "5000".into());
        assert!(
            matches!(c.validate(), Err(Error::Config(m)) if m.starts_with("lifecycle.drain_timeout_ms"))
        );
        c.lifecycle.drain_timeout_ms = 4000;
        c.validate().unwrap();
        let mut c = Config::new("b:1", "g", ["t"]);
        c.delivery = Delivery::ExactlyOnce;
        assert!(matches!(c.validate(), Err(Error::Config(m)) if m.contains("sink")));
        c.sink = SinkConfig::Topic { topic: "o".into() };
        c.validate().unwrap();
        assert_eq!(
            c.consumer_client_config().get("isolation.level"),
            Some("read_committed")
        );
        assert!(c.producer_client_config().get("transactional.id").is_some());
        let free = Config::free("b:1", vec!["t:0".parse().unwrap(), "t:2".parse().unwrap()]);
        free.validate().unwrap();
        assert_eq!(free.input_topics(), vec!["t".to_string()]);
        assert!(free
            .consumer_client_config()
            .get("group.id")
            .is_some_and(|g| g.starts_with("tidemark-free-")));
        assert!(Config::free("b:1", vec![]).validate().is_err());
        assert!("t".parse::<TopicPartition>().is_err());
        assert!("t:-1".parse::<TopicPartition>().is_err());
        let mut auto = Config::new("b:1", "g", ["t"]);
        auto.commits.policy = CommitPolicy::Auto(250);
        let cc = auto.consumer_client_config();
        assert_eq!(cc.get("enable.auto.commit"), Some("true"));
        assert_eq!(cc.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(cc.get("auto.commit.interval.ms"), Some("250"));
        assert_eq!("offset:5".parse(), Ok(StartPosition::Offset(5)));
        assert_eq!("timestamp:7".parse(), Ok(StartPosition::Timestamp(7)));
        assert_eq!("end".parse(), Ok(StartPosition::End));
        assert!("offset:-1".parse::<StartPosition>().is_err());
        assert!(serde_json::from_str::<Config>(
            r#"{"brokers":"b","membership":{"group":{"group_id":"g","topics":["t"]}},"wrokers":3}"#
        )
        .is_err());
    }
}
