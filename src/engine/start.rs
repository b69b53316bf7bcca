//! Where each partition starts: explicit offsets set on a group member's
//! assignments (its committed offset, else the configured start position), and a
//! free consumer's assignment from its offset store.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::context::{PipelineContext, Shared};
use crate::config::{Config, StartPosition};
use crate::error::Error;
use crate::offset_store::OffsetStore;

/// Sets an explicit start offset on every newly assigned partition: its committed
/// offset when the group has one, else the configured [`StartPosition`]; the
/// others keep `Offset::Invalid` (`auto.offset.reset` decides).
///
/// Like the Java consumer (which fetches committed offsets before it fetches
/// records), tidemark does not leave the look-up to librdkafka: a partition
/// assigned again to a member that had paused it in an earlier assignment can
/// otherwise resume from that member's stale position instead of the committed
/// offset (librdkafka issues #1802, #4686), which commits offsets backwards. Seen
/// on Tansu in the group chaos test. A failed look-up leaves the list as it is,
/// with a warning.
pub(crate) fn set_start_offsets(
    consumer: &BaseConsumer<PipelineContext>,
    start_position: Option<StartPosition>,
    tpl: &mut TopicPartitionList,
) {
    let timeout = Duration::from_secs(10);
    let committed = match consumer.committed_offsets(tpl.clone(), timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "committed offsets unknown; librdkafka looks them up");
            return;
        }
    };
    let mut fresh = TopicPartitionList::new();
    for e in committed.elements() {
        match (e.offset(), start_position) {
            (Offset::Offset(o), _) => {
                let _ = tpl.set_partition_offset(e.topic(), e.partition(), Offset::Offset(o));
            }
            (_, Some(start)) => {
                let target = match start {
                    StartPosition::Beginning => Offset::Beginning,
                    StartPosition::End => Offset::End,
                    StartPosition::Offset(o) => Offset::Offset(o),
                    StartPosition::Timestamp(ts) => Offset::Offset(ts),
                };
                let _ = fresh.add_partition_offset(e.topic(), e.partition(), target);
            }
            (_, None) => {}
        }
    }
    if fresh.count() == 0 {
        return;
    }
    if let Some(StartPosition::Timestamp(_)) = start_position {
        match consumer.offsets_for_times(fresh.clone(), timeout) {
            Ok(found) => fresh = found,
            Err(e) => {
                tracing::warn!(error = %e, "start position: offsets for the timestamp unknown; auto.offset.reset decides");
                return;
            }
        }
    }
    for e in fresh.elements() {
        let offset = match e.offset() {
            // No record at or after the timestamp: start at the end.
            Offset::Invalid => Offset::End,
            o => o,
        };
        tracing::info!(
            topic = e.topic(),
            partition = e.partition(),
            ?offset,
            "no committed offset: starting at the configured position"
        );
        let _ = tpl.set_partition_offset(e.topic(), e.partition(), offset);
    }
}

/// A free consumer's start: every partition of the assignment at the offset its
/// store holds, else at the start position, else where `auto.offset.reset` says.
pub(crate) fn assign_from_store(
    consumer: &BaseConsumer<PipelineContext>,
    shared: &Shared,
    config: &Config,
    store: &dyn OffsetStore,
) -> Result<(), Error> {
    let mut tpl = TopicPartitionList::new();
    let mut by_time = TopicPartitionList::new();
    for a in &config.assignment {
        let stored = store
            .load(&a.topic, a.partition)
            .map_err(|source| Error::OffsetStore {
                context: format!("loading the offset of {}/{}", a.topic, a.partition),
                source,
            })?;
        let offset = match (stored, config.start_position) {
            (Some(o), _) => Offset::Offset(o),
            (None, Some(StartPosition::Beginning)) => Offset::Beginning,
            (None, Some(StartPosition::End)) => Offset::End,
            (None, Some(StartPosition::Offset(o))) => Offset::Offset(o),
            (None, Some(StartPosition::Timestamp(ts))) => {
                let _ = by_time.add_partition_offset(&a.topic, a.partition, Offset::Offset(ts));
                continue;
            }
            // No group to ask: auto.offset.reset decides here.
            (None, None) => match config
                .consumer_properties
                .get("auto.offset.reset")
                .map_or("earliest", String::as_str)
            {
                "latest" | "largest" | "end" => Offset::End,
                "error" => {
                    return Err(Error::OffsetReset(KafkaError::MessageConsumption(
                        RDKafkaErrorCode::AutoOffsetReset,
                    )))
                }
                _ => Offset::Beginning,
            },
        };
        tpl.add_partition_offset(&a.topic, a.partition, offset)
            .map_err(Error::kafka("building the assignment"))?;
    }
    if by_time.count() > 0 {
        let timeout = Duration::from_millis(config.startup_timeout_ms);
        let found = consumer
            .offsets_for_times(by_time, timeout)
            .map_err(Error::kafka("looking up offsets by timestamp"))?;
        for e in found.elements() {
            let offset = match e.offset() {
                Offset::Invalid => Offset::End,
                o => o,
            };
            tpl.add_partition_offset(e.topic(), e.partition(), offset)
                .map_err(Error::kafka("building the assignment"))?;
        }
    }
    consumer
        .assign(&tpl)
        .map_err(Error::kafka("assigning the partitions"))?;
    let mut partitions = shared.partitions.lock();
    for e in tpl.elements() {
        let epoch = partitions.assign(e.topic(), e.partition());
        tracing::info!(topic = e.topic(), partition = e.partition(), offset = ?e.offset(), epoch = epoch.0, "assigned (free consumer)");
    }
    Ok(())
}
