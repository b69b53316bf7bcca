//! Where outputs go: [`SinkConfig`] and the PostgreSQL table ([`PostgresSink`]).

use super::{invalid, Delivery};
use crate::error::Error;
use serde::{Deserialize, Serialize};

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

impl SinkConfig {
    /// A topic sink names a topic other than the inputs; a table is checked by
    /// [`PostgresSink`]; exactly-once needs a topic sink (its outputs and offsets
    /// commit in one producer transaction).
    pub(super) fn validate(&self, delivery: Delivery, inputs: &[String]) -> Result<(), Error> {
        if delivery == Delivery::ExactlyOnce && !matches!(self, SinkConfig::Topic { .. }) {
            return Err(invalid(
                "delivery",
                "exactly-once is for Kafka-to-Kafka pipelines: it needs a topic:NAME sink",
            ));
        }
        match self {
            SinkConfig::Topic { topic } if topic.trim().is_empty() => {
                Err(invalid("sink.topic", "must not be empty"))
            }
            SinkConfig::Topic { topic } if inputs.contains(topic) => {
                Err(invalid("sink.topic", "must differ from the input topics"))
            }
            SinkConfig::Postgres(table) => table
                .validate()
                .map_err(|(field, message)| invalid(field, &message)),
            _ => Ok(()),
        }
    }
}
