//! The lag sampler and the stuck-record threshold: [`ObservabilityConfig`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the metrics watch: the lag sampler and the stuck-record threshold
/// (serde: milliseconds or strings with units, also under their old `_ms` names). Part
/// of [`Config`](crate::Config); every field has a default (`ObservabilityConfig::default()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ObservabilityConfig {
    /// How often the high watermarks behind the lag gauges are refreshed (one ListOffsets per assigned partition, from a separate client, so lag
    /// stays true while a partition is paused). Default 5 s; zero turns it off (no
    /// high watermark or lag in [`Metrics`](crate::Metrics)).
    #[serde(with = "super::duration::ms", alias = "lag_refresh_ms")]
    pub lag_refresh: Duration,
    /// A record in flight longer than this is *stuck*: logged once with its
    /// coordinates and counted (`Metrics::stuck_records`,
    /// `tidemark_stuck_records_total`). Default 60 s.
    #[serde(with = "super::duration::ms", alias = "stuck_threshold_ms")]
    pub stuck_threshold: Duration,
    /// Feature `otel`: how a record's `process` span relates to the producer's span
    /// named by the record's W3C `traceparent` header. Default
    /// [`ProducerContext::Parent`]. Ignored without the feature.
    pub producer_context: ProducerContext,
}

/// How a record's `process` span relates to the span that produced the record
/// (feature `otel`; OpenTelemetry's messaging semantic conventions, "Context
/// propagation": a span of one record may take the producer's context as its
/// parent, and otherwise links to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProducerContext {
    /// The producer's span is the `process` span's parent: one trace runs from the
    /// producer through tidemark into the outputs' consumers.
    #[default]
    Parent,
    /// The `process` span starts a trace of its own with a link to the producer's
    /// span (for work that should not lengthen the producer's trace).
    Link,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig {
            lag_refresh: Duration::from_secs(5),
            stuck_threshold: Duration::from_secs(60),
            producer_context: ProducerContext::Parent,
        }
    }
}
