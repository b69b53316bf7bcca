//! Pure offset bookkeeping for tidemark: no Kafka client, no I/O, no threads.
//!
//! The one rule this crate implements is the committable-offset rule of tidemark's design
//! (docs/DESIGN.md, invariants 1, 2 and 5):
//!
//! * the **committable offset** of a partition is its lowest *delivered* offset that is
//!   not yet complete, or — when every delivered offset is complete — the highest
//!   delivered offset + 1;
//! * it is therefore already the "next offset to read" that Kafka's OffsetCommit expects
//!   (KIP-211 / the consumer docs: the committed offset is the position of the next
//!   record, i.e. last processed + 1), so callers commit it unchanged;
//! * offsets that were never delivered (log compaction, transaction markers) never block
//!   it, because only delivered offsets are tracked;
//! * every completion carries the [`Epoch`] of the assignment it belongs to, and a
//!   completion from another epoch is ignored.
//!
//! See [`PartitionTracker`]. The [`offset_map`] module encodes the offsets completed
//! above the committable one for the commit's metadata, so a partition's next owner
//! can skip them.

pub mod offset_map;
mod tracker;

pub use offset_map::{Encoded, MapError, OffsetMap};
pub use tracker::{Completion, DeliverError, Epoch, PartitionTracker};
