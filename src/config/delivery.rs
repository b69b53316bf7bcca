//! The delivery guarantee ([`Delivery`]) and where partitions without a committed
//! offset start ([`StartPosition`]).

use serde::{Deserialize, Serialize};

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
    /// fenced producer stops the pipeline ([`Error::Transaction`](crate::Error::Transaction)). Needs a
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
