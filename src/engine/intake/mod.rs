//! Intake: how records and partitions come in. The consumer's records are staged
//! per partition and delivered to its offset tracker ([`partitions`]); assignments
//! start where the group's committed offsets (and offset maps) say ([`start`]);
//! librdkafka's callbacks ([`callbacks`]) hand rebalances to the engine, which
//! drains, runs the lifecycle hooks and commits on revoke, or sets state aside on a
//! lost assignment ([`rebalance`]). The poll loop itself is `driver`.

pub(in crate::engine) mod callbacks;
pub(in crate::engine) mod partitions;
pub(in crate::engine) mod rebalance;
pub(in crate::engine) mod start;
