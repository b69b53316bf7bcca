//! Who the pipeline's consumer is: [`Membership`].

use serde::{Deserialize, Serialize};

use super::{invalid, Delivery};
use crate::error::Error;
use crate::topic_partition::TopicPartition;

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

impl Membership {
    /// A group names a non-empty group id and topics; a free consumer lists its
    /// partitions and cannot be exactly-once (its commits need the group's metadata).
    pub(super) fn validate(&self, delivery: Delivery) -> Result<(), Error> {
        match self {
            Membership::Group { group_id, .. } if group_id.trim().is_empty() => {
                Err(invalid("membership.group.group_id", "must not be empty"))
            }
            Membership::Group { topics, .. } => {
                if topics.is_empty() || topics.iter().any(|t| t.trim().is_empty()) {
                    return Err(invalid(
                        "membership.group.topics",
                        "must list at least one non-empty topic name",
                    ));
                }
                Ok(())
            }
            Membership::Free { partitions } => {
                if partitions.is_empty() {
                    return Err(invalid(
                        "membership.free.partitions",
                        "a free consumer must list its partitions",
                    ));
                }
                if delivery == Delivery::ExactlyOnce {
                    return Err(invalid(
                        "delivery",
                        "exactly-once commits offsets with the group's metadata: it needs a group_id",
                    ));
                }
                Ok(())
            }
        }
    }
}
