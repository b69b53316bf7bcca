//! The lag sampler and the stuck-record threshold: [`ObservabilityConfig`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the metrics watch: the lag sampler and the stuck-record threshold
/// (serde: milliseconds or strings with units, also under their old `_ms` names). Part
/// of [`Config`]; every field has a default (`ObservabilityConfig::default()`).
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
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig {
            lag_refresh: Duration::from_secs(5),
            stuck_threshold: Duration::from_secs(60),
        }
    }
}
