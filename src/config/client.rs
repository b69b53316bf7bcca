//! The librdkafka properties of the pipeline's clients, built from a [`Config`].

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use super::{Config, FORCED_CONSUMER_PROPERTIES};
use crate::commit::CommitPolicy;
use crate::connection::{Connection, Properties};

impl Config {
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
