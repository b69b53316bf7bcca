//! Durations in the configuration's serde forms: a number of milliseconds, or a
//! string with units in the `humantime` crate's format (`"250ms"`, `"10s"`,
//! `"1m 30s"`). Written back as milliseconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Ms(u64),
    Text(String),
}

impl Raw {
    fn duration<E: serde::de::Error>(self) -> Result<Duration, E> {
        match self {
            Raw::Ms(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(text) => humantime::parse_duration(text.trim()).map_err(|e| {
                E::custom(format!(
                    "{text:?}: expected milliseconds or a duration like \"250ms\" or \"10s\" ({e})"
                ))
            }),
        }
    }
}

fn millis(d: &Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `#[serde(with = "duration::ms")]` for a `Duration`.
pub(crate) mod ms {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(millis(d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Raw::deserialize(d)?.duration()
    }
}

/// `#[serde(with = "duration::option_ms")]` for an `Option<Duration>` (`null`: none).
pub(crate) mod option_ms {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&millis(d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<Raw>::deserialize(d)?
            .map(Raw::duration)
            .transpose()
    }
}
