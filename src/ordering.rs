//! Which records may be processed at the same time.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The ordering guarantee of processing (`Config::ordering`, CLI `--ordering`).
///
/// Whatever the order, commits follow the committable-offset rule: a partition's
/// committed offset never passes a record that is not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingOrder {
    /// Records with the same key, within one topic-partition, are processed one at a
    /// time in offset order (Kafka's per-key order: a producer's partitioner sends
    /// every record of a key to the same partition); records of different keys run
    /// in parallel. Records **without a key** run in parallel with everything:
    /// Kafka gives them no order (the default partitioner spreads them over
    /// partitions), so there is nothing to keep. A record of a key waiting for a
    /// retry holds back that key only. The default.
    #[default]
    Key,
    /// One record at a time per partition, in offset order: the classic consumer.
    /// Partitions run in parallel.
    Partition,
    /// Any record in parallel with any other, same key or not.
    Unordered,
}

impl FromStr for ProcessingOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "key" => Ok(ProcessingOrder::Key),
            "partition" => Ok(ProcessingOrder::Partition),
            "unordered" => Ok(ProcessingOrder::Unordered),
            _ => Err(format!(
                "unknown ordering {s:?}: expected key, partition or unordered"
            )),
        }
    }
}
