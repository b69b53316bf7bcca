//! The one name of a partition: [`TopicPartition`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A partition of a topic (Kafka's `TopicPartition`): the key of everything
/// tidemark keeps per partition. Cloning is cheap (the topic name is shared).
///
/// Text form (`Display`, `FromStr`, CLI `--assign`): `TOPIC:PARTITION`, e.g.
/// `orders:3`. Serialized as `{"topic": "orders", "partition": 3}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number (0-based).
    pub partition: i32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    /// True for partition `partition` of `topic`.
    pub fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && &*self.topic == topic
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.topic, self.partition)
    }
}

impl std::str::FromStr for TopicPartition {
    type Err = String;

    /// Parses `TOPIC:PARTITION` (the last `:` separates them).
    ///
    /// # Errors
    /// A message quoting the input when there is no `:`, the topic is empty, or the
    /// partition is not a number ≥ 0.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected TOPIC:PARTITION, e.g. orders:3");
        let (topic, partition) = s.rsplit_once(':').ok_or_else(bad)?;
        let partition = partition
            .parse::<i32>()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(bad)?;
        if topic.is_empty() {
            return Err(bad());
        }
        Ok(TopicPartition::new(topic, partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_bad_forms_are_refused() {
        let tp: TopicPartition = "a:b:3".parse().unwrap();
        assert_eq!(tp, TopicPartition::new("a:b", 3));
        assert_eq!(tp.to_string(), "a:b:3");
        for bad in ["t", "t:-1", ":1", "t:x"] {
            assert!(bad.parse::<TopicPartition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_form_is_topic_and_partition() {
        let tp = TopicPartition::new("orders", 3);
        let json = serde_json::to_string(&tp).unwrap();
        assert_eq!(json, r#"{"topic":"orders","partition":3}"#);
        assert_eq!(serde_json::from_str::<TopicPartition>(&json).unwrap(), tp);
    }
}
