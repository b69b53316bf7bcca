//! How every client tidemark makes reaches the cluster: the bootstrap servers and the
//! librdkafka properties they all share (security above all), written once.
//!
//! The consumer, the sink's and dead-letter producer, the lag sampler, the
//! committed-offset look-up and the topic helpers are all built from one
//! [`Connection`] (a [`Config`](crate::Config) gives its own through
//! [`Config::connection`](crate::Config::connection)); consumer-only and producer-only
//! properties stay in `Config::consumer_properties` and `Config::producer_properties`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// librdkafka properties (names and values as in librdkafka's CONFIGURATION.md), as a
/// map that never shows a secret: its `Debug` prints `[redacted]` for every
/// [secret property](is_secret_property). Dereferences to the `BTreeMap` it wraps;
/// serializes as that map.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties::default()
    }

    /// Parses a properties file's text, the format of Java's `.properties` files that
    /// Kafka's own tools take with `--command-config` and that librdkafka's examples
    /// read: one `key=value` (or `key: value`) a line, `#` or `!` starting a comment
    /// line, blank lines ignored, surrounding whitespace trimmed (no line
    /// continuations). A value may name environment variables as `${env:NAME}` (the
    /// syntax of Kafka's `EnvVarConfigProvider`, KIP-887), so a password need not be
    /// written in the file. Java's `sasl.jaas.config` for the PLAIN and SCRAM login
    /// modules becomes librdkafka's `sasl.username` and `sasl.password`, and a PEM
    /// `ssl.truststore.location` its `ssl.ca.location`, so the file given to Kafka's
    /// own tools works here too.
    ///
    /// # Errors
    /// [`Error::Config`] naming the line (never its value) when a line has no `=` or
    /// `:`, or names an environment variable that is not set.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut properties = Properties::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let split = line.find(['=', ':']).ok_or_else(|| {
                Error::Config(format!("properties line {}: expected key=value", n + 1))
            })?;
            let key = line[..split].trim();
            let value = expand_env(line[split + 1..].trim()).map_err(|name| {
                Error::Config(format!(
                    "properties line {} ({key}): environment variable {name} is not set",
                    n + 1
                ))
            })?;
            properties.insert_translated(key, value);
        }
        Ok(properties)
    }

    /// Reads and [parses](Properties::parse) the properties file at `path`.
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or does not parse (the message
    /// names the file and the line, never a value).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("reading properties file {}: {e}", path.display()))
        })?;
        Properties::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Inserts `key=value`, turning Java's `sasl.jaas.config` into librdkafka's
    /// `sasl.username`/`sasl.password`.
    fn insert_translated(&mut self, key: &str, value: String) {
        if key == "sasl.jaas.config" {
            for (k, v) in jaas_options(&value) {
                match k {
                    "username" => self.0.insert("sasl.username".into(), v),
                    "password" => self.0.insert("sasl.password".into(), v),
                    _ => None,
                };
            }
            return;
        }
        match key {
            // Java's PEM truststore is librdkafka's CA file; librdkafka has no
            // truststore type (JKS and PKCS12 truststores are not readable by it).
            "ssl.truststore.location" => self.0.insert("ssl.ca.location".into(), value),
            "ssl.truststore.type" if value.eq_ignore_ascii_case("PEM") => None,
            _ => self.0.insert(key.to_string(), value),
        };
    }
}

/// True for librdkafka properties whose values are secrets: passwords, keys,
/// tokens and client secrets (`sasl.password`, `ssl.key.password`, `ssl.key.pem`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`,
/// `sasl.oauthbearer.config`, …; librdkafka marks the same ones sensitive and
/// redacts them in its own configuration dumps). Java's `sasl.jaas.config` too.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "passphrase",
        "key.pem",
        "sasl.oauthbearer.config",
        "jaas",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// `${env:NAME}` in `value` replaced by the variable's value; `Err(NAME)` when unset.
fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${env:") {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 6..start + end];
        out.push_str(&rest[..start]);
        out.push_str(&std::env::var(name).map_err(|_| name.to_string())?);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `name="value"` options of a JAAS entry
/// (`…LoginModule required username="alice" password="…";`).
fn jaas_options(entry: &str) -> Vec<(&str, String)> {
    let mut options = Vec::new();
    let mut rest = entry;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].rsplit(char::is_whitespace).next().unwrap_or("");
        let after = &rest[eq + 2..];
        let Some(close) = after.find('"') else { break };
        options.push((name, after[..close].to_string()));
        rest = &after[close + 1..];
    }
    options
}

impl std::ops::Deref for Properties {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<BTreeMap<String, String>> for Properties {
    fn from(map: BTreeMap<String, String>) -> Self {
        Properties(map)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Properties(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown: &dyn std::fmt::Debug = if is_secret_property(k) {
                    &"[redacted]"
                } else {
                    v
                };
                (k, shown)
            }))
            .finish()
    }
}

/// How to reach a Kafka cluster: `bootstrap.servers` and the librdkafka properties
/// every client shares (`security.protocol`, `sasl.*`, `ssl.*`, `client.id`, …).
///
/// Every helper that talks to the cluster ([`high_watermarks`](crate::high_watermarks),
/// [`consumer_lag`](crate::consumer_lag), [`ensure_topic`](crate::ensure_topic),
/// [`topic_partitions`](crate::topic_partitions)) takes one — or just a
/// `bootstrap.servers` string, which converts into a connection with no other
/// property.
///
/// ```
/// let connection = tidemark::Connection::new("broker:9093")
///     .with("security.protocol", "SASL_SSL")
///     .with("sasl.mechanisms", "SCRAM-SHA-512")
///     .with("sasl.username", "alice")
///     .with("sasl.password", "alice-secret");
/// assert!(!format!("{connection:?}").contains("alice-secret"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connection {
    /// librdkafka `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// The librdkafka properties every client gets (never `bootstrap.servers`).
    pub properties: Properties,
}

impl Connection {
    /// A connection to `brokers` with no other property (PLAINTEXT).
    pub fn new(brokers: impl Into<String>) -> Self {
        Connection {
            brokers: brokers.into(),
            properties: Properties::new(),
        }
    }

    /// This connection with the librdkafka property `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// This connection with every property of `properties` (a `bootstrap.servers`
    /// among them replaces the brokers).
    pub fn with_properties(mut self, properties: Properties) -> Self {
        for (k, v) in properties.0 {
            if k == "bootstrap.servers" {
                self.brokers = v;
            } else {
                self.properties.insert(k, v);
            }
        }
        self
    }

    /// A librdkafka configuration with `bootstrap.servers` and the shared properties.
    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut cc = rdkafka::ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            cc.set(k, v);
        }
        cc
    }
}

impl From<&str> for Connection {
    fn from(brokers: &str) -> Self {
        Connection::new(brokers)
    }
}

impl From<String> for Connection {
    fn from(brokers: String) -> Self {
        Connection::new(brokers)
    }
}

impl From<&String> for Connection {
    fn from(brokers: &String) -> Self {
        Connection::new(brokers.as_str())
    }
}

impl From<&Connection> for Connection {
    fn from(connection: &Connection) -> Self {
        connection.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_properties_file_with_comments_env_and_jaas() {
        std::env::set_var("TIDEMARK_TEST_SECRET", "s3cret");
        let p = Properties::parse(
            "# a comment\n! another\n\nsecurity.protocol = SASL_SSL\nsasl.mechanism: SCRAM-SHA-512\n\
             ssl.key.password=${env:TIDEMARK_TEST_SECRET}\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"a=b\";\n",
        )
        .unwrap();
        assert_eq!(p.get("security.protocol").unwrap(), "SASL_SSL");
        assert_eq!(p.get("sasl.mechanism").unwrap(), "SCRAM-SHA-512");
        assert_eq!(p.get("ssl.key.password").unwrap(), "s3cret");
        assert_eq!(p.get("sasl.username").unwrap(), "alice");
        assert_eq!(p.get("sasl.password").unwrap(), "a=b");
        assert!(!p.contains_key("sasl.jaas.config"));
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("a=b"),
            "{shown}"
        );
        assert!(shown.contains("SASL_SSL"));
    }

    #[test]
    fn a_missing_variable_or_a_bad_line_is_named_without_its_value() {
        let e =
            Properties::parse("a=1\nsasl.password=${env:TIDEMARK_NOT_SET_ANYWHERE}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: properties line 2 (sasl.password): environment variable TIDEMARK_NOT_SET_ANYWHERE is not set"
        );
        let e = Properties::parse("just-a-secret-word").unwrap_err();
        assert!(!e.to_string().contains("just-a-secret-word"), "{e}");
    }

    #[test]
    fn secret_properties() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_property(k), "{k}");
        }
        for k in [
            "sasl.username",
            "ssl.ca.location",
            "security.protocol",
            "ssl.certificate.pem",
        ] {
            assert!(!is_secret_property(k), "{k}");
        }
    }
}
