//! Where each partition starts: explicit offsets for a group member's new
//! assignments (its committed offset, else the configured start position), and a
//! free consumer's assignment from its offset store.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Offset;
use tidemark_offsets::{MapError, OffsetMap};

use crate::config::{Config, StartPosition};
use crate::engine::seams::consumer::KafkaConsumer;
use crate::error::Error;
use crate::offset_store::{OffsetAndMetadata, OffsetStore};
use crate::topic_partition::TopicPartition;

/// Where one partition starts.
#[derive(Debug)]
pub(crate) struct Start {
    pub tp: TopicPartition,
    pub offset: Offset,
    /// The offset map committed with `offset` (when maps are on and it decodes).
    pub map: Option<OffsetMap>,
}

impl Start {
    fn at(tp: TopicPartition, offset: Offset) -> Self {
        Start {
            tp,
            offset,
            map: None,
        }
    }

    /// Starting at a committed offset, with the offset map its metadata holds.
    fn committed(tp: TopicPartition, c: &OffsetAndMetadata, maps: bool) -> Self {
        let map = if maps {
            offset_map(&tp.topic, tp.partition, c)
        } else {
            None
        };
        Start {
            map,
            ..Start::at(tp, Offset::Offset(c.offset))
        }
    }
}

/// The offset map in a committed offset's metadata. Empty metadata is no map;
/// metadata another tool wrote, a damaged map, or a map of another offset (a
/// commit by a tool that kept the metadata but moved the offset) is ignored with a
/// warning: the records above the committed offset are then processed again,
/// which at-least-once allows.
pub(crate) fn offset_map(topic: &str, partition: i32, c: &OffsetAndMetadata) -> Option<OffsetMap> {
    if c.metadata.is_empty() {
        return None;
    }
    match OffsetMap::decode(&c.metadata) {
        Ok(map) if map.base() == c.offset => {
            tracing::info!(topic, partition, offset = c.offset, %map, "offset map of the previous owner: skipping what it completed");
            Some(map)
        }
        Ok(map) => {
            tracing::warn!(
                topic,
                partition,
                offset = c.offset,
                map_base = map.base(),
                "offset map belongs to another committed offset: ignored"
            );
            None
        }
        Err(MapError::Foreign) => {
            tracing::warn!(
                topic,
                partition,
                offset = c.offset,
                "commit metadata is not a tidemark offset map: ignored"
            );
            None
        }
        Err(e) => {
            tracing::warn!(topic, partition, offset = c.offset, error = %e, "commit metadata ignored");
            None
        }
    }
}

/// The committed offsets of `partitions` asked by a client created from `config`
/// for this one look-up.
fn committed_by_own_client(
    config: &rdkafka::ClientConfig,
    partitions: &[TopicPartition],
    timeout: Duration,
) -> rdkafka::error::KafkaResult<Vec<(TopicPartition, Option<OffsetAndMetadata>)>> {
    let client: rdkafka::consumer::BaseConsumer = config.create()?;
    client.committed_offsets(partitions, timeout)
}

/// The start offset of every newly assigned partition that has one: its committed
/// offset (with the offset map committed with it, when `maps`) when the group has
/// one, else the configured [`StartPosition`] (by timestamp through ListOffsets,
/// KIP-79). The others are left out (`auto.offset.reset` decides).
///
/// Like the Java consumer (which fetches committed offsets before it fetches
/// records), tidemark does not leave the look-up to librdkafka: a partition
/// assigned again to a member that had paused it in an earlier assignment can
/// otherwise resume from that member's stale position instead of the committed
/// offset (librdkafka issues #1802, #4686), which commits offsets backwards. A failed
/// look-up returns `None`, with a warning (librdkafka then looks them up itself).
///
/// The member's own look-up (OffsetFetch through its group coordinator, from inside
/// the assign callback) sometimes times out on Apache Kafka while members come and
/// go (seen in group chaos: three attempts in a row, 3 s each, all timed out).
/// Then, from `own_lookup` (the member's client configuration), a short-lived
/// client of its own asks the same group's committed offsets (an OffsetFetch needs
/// no membership): without them the offset maps are lost (their records are
/// processed again) and librdkafka picks the start itself. 5 s per attempt, so
/// both stay well inside `max.poll.interval.ms`.
pub(crate) fn start_offsets(
    consumer: &impl KafkaConsumer,
    own_lookup: &rdkafka::ClientConfig,
    start_position: Option<StartPosition>,
    assigned: &[TopicPartition],
    maps: bool,
) -> Option<Vec<Start>> {
    let timeout = Duration::from_secs(5);
    let committed = match consumer.committed_offsets(assigned, timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "the member's committed offsets look-up failed; asking with a client of its own");
            match committed_by_own_client(own_lookup, assigned, timeout) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "committed offsets unknown; librdkafka looks them up");
                    return None;
                }
            }
        }
    };
    let mut starts = Vec::new();
    let mut by_time = Vec::new();
    for (tp, offset) in committed {
        match (offset, start_position) {
            (Some(c), _) => starts.push(Start::committed(tp, &c, maps)),
            (None, Some(StartPosition::Timestamp(ts))) => by_time.push((tp, ts)),
            (None, Some(start)) => {
                let offset = match start {
                    StartPosition::Beginning => Offset::Beginning,
                    StartPosition::End => Offset::End,
                    StartPosition::Offset(o) => Offset::Offset(o),
                    StartPosition::Timestamp(_) => unreachable!("handled above"),
                };
                tracing::info!(%tp, ?offset, "no committed offset: starting at the configured position");
                starts.push(Start::at(tp, offset));
            }
            (None, None) => {}
        }
    }
    if !by_time.is_empty() {
        match consumer.offsets_for_times(&by_time, timeout) {
            // No record at or after the timestamp: start at the end.
            Ok(found) => starts.extend(found.into_iter().map(|(tp, o)| {
                tracing::info!(%tp, offset = ?o, "no committed offset: starting at the timestamp");
                Start::at(tp, o.map_or(Offset::End, Offset::Offset))
            })),
            Err(e) => {
                tracing::warn!(error = %e, "start position: offsets for the timestamp unknown; auto.offset.reset decides")
            }
        }
    }
    Some(starts)
}

/// A free consumer's start: every partition of the assignment at the offset its
/// store holds (with its offset map, when `maps`), else at the start position,
/// else where `auto.offset.reset` says.
///
/// # Errors
/// [`Error::OffsetStore`] when the store cannot be read; [`Error::OffsetReset`] for
/// a partition with nothing stored under `auto.offset.reset=error`;
/// [`Error::Kafka`] when the look-up by timestamp fails.
pub(crate) fn free_assignment(
    consumer: &impl KafkaConsumer,
    config: &Config,
    store: &dyn OffsetStore,
    maps: bool,
) -> Result<Vec<Start>, Error> {
    let mut starts = Vec::new();
    let mut by_time = Vec::new();
    for a in config.assigned_partitions() {
        let stored = store.load(a).map_err(|source| Error::OffsetStore {
            context: format!("loading the offset of {a}"),
            source,
        })?;
        let offset = match (stored, config.start_position) {
            (Some(c), _) => {
                starts.push(Start::committed(a.clone(), &c, maps));
                continue;
            }
            (None, Some(StartPosition::Beginning)) => Offset::Beginning,
            (None, Some(StartPosition::End)) => Offset::End,
            (None, Some(StartPosition::Offset(o))) => Offset::Offset(o),
            (None, Some(StartPosition::Timestamp(ts))) => {
                by_time.push((a.clone(), ts));
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
                    return Err(Error::OffsetReset(
                        KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset).into(),
                    ))
                }
                _ => Offset::Beginning,
            },
        };
        starts.push(Start::at(a.clone(), offset));
    }
    if !by_time.is_empty() {
        let timeout = config.lifecycle.startup_timeout;
        let found = consumer
            .offsets_for_times(&by_time, timeout)
            .map_err(Error::kafka("looking up offsets by timestamp"))?;
        starts.extend(
            found
                .into_iter()
                .map(|(tp, o)| Start::at(tp, o.map_or(Offset::End, Offset::Offset))),
        );
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::commit::PartitionOffset;
    use crate::engine::seams::fake::FakeConsumer;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    /// A lookup configuration the tests never need (the member's own look-up
    /// answers).
    fn unused_client() -> rdkafka::ClientConfig {
        rdkafka::ClientConfig::new()
    }

    /// A group that committed `offset` with `metadata` on partition `p`.
    fn committed(fake: &FakeConsumer, p: i32, offset: i64, metadata: String) {
        let mut po = PartitionOffset::new("t", p, offset);
        po.metadata = metadata;
        fake.commit_sync(&[po]).unwrap();
    }

    fn offsets(starts: &[Start]) -> Vec<(i32, Offset, bool)> {
        let mut v: Vec<_> = starts
            .iter()
            .map(|s| (s.tp.partition, s.offset, s.map.is_some()))
            .collect();
        v.sort_by_key(|(p, _, _)| *p);
        v
    }

    #[test]
    fn a_committed_offset_wins_and_brings_its_map_the_others_take_the_start_position() {
        let fake = FakeConsumer::default();
        let map = OffsetMap::encode(10, std::iter::once(12..15), 4096).metadata;
        committed(&fake, 0, 10, map.clone());
        committed(&fake, 1, 7, "written by another tool".into());
        let assigned = [tp(0), tp(1), tp(2)];
        let starts = start_offsets(
            &fake,
            &unused_client(),
            Some(StartPosition::End),
            &assigned,
            true,
        )
        .unwrap();
        assert_eq!(
            offsets(&starts),
            [
                (0, Offset::Offset(10), true),
                (1, Offset::Offset(7), false),
                (2, Offset::End, false),
            ]
        );
        let inherited = starts.iter().find_map(|s| s.map.as_ref()).unwrap();
        assert_eq!(inherited.completed(), std::slice::from_ref(&(12..15)));

        // Maps off: the committed offset alone. No start position: librdkafka's
        // auto.offset.reset decides, so the partition is left out.
        let starts = start_offsets(&fake, &unused_client(), None, &assigned, false).unwrap();
        assert_eq!(
            offsets(&starts),
            [
                (0, Offset::Offset(10), false),
                (1, Offset::Offset(7), false)
            ]
        );
    }

    #[test]
    fn a_map_of_another_offset_is_ignored() {
        let fake = FakeConsumer::default();
        committed(
            &fake,
            0,
            20,
            OffsetMap::encode(10, std::iter::once(12..15), 4096).metadata,
        );
        let starts = start_offsets(&fake, &unused_client(), None, &[tp(0)], true).unwrap();
        assert_eq!(offsets(&starts), [(0, Offset::Offset(20), false)]);
    }

    #[test]
    fn a_timestamp_with_no_record_that_recent_starts_at_the_end() {
        let fake = FakeConsumer::default();
        let starts = start_offsets(
            &fake,
            &unused_client(),
            Some(StartPosition::Timestamp(1_700_000_000_000)),
            &[tp(0)],
            true,
        )
        .unwrap();
        assert_eq!(offsets(&starts), [(0, Offset::End, false)]);
    }

    /// An offset store holding what it was given.
    #[derive(Default)]
    struct Stored(Mutex<Vec<(TopicPartition, OffsetAndMetadata)>>);

    impl OffsetStore for Stored {
        fn load(&self, partition: &TopicPartition) -> std::io::Result<Option<OffsetAndMetadata>> {
            let saved = self.0.lock().unwrap();
            Ok(saved
                .iter()
                .find(|(tp, _)| tp == partition)
                .map(|(_, o)| o.clone()))
        }
        fn save(&self, _: &[PartitionOffset]) -> std::io::Result<()> {
            unreachable!("start never saves")
        }
    }

    #[test]
    fn a_free_consumer_starts_from_its_store_else_from_auto_offset_reset() {
        let fake = FakeConsumer::default();
        let store = Stored::default();
        store.0.lock().unwrap().push((
            tp(1),
            OffsetAndMetadata {
                offset: 42,
                metadata: String::new(),
            },
        ));
        let mut config = Config::free("b:1", vec![tp(0), tp(1)]);
        let starts = free_assignment(&fake, &config, &store, true).unwrap();
        assert_eq!(
            offsets(&starts),
            [
                (0, Offset::Beginning, false),
                (1, Offset::Offset(42), false)
            ],
            "earliest is tidemark's default"
        );

        config
            .consumer_properties
            .insert("auto.offset.reset".into(), "latest".into());
        let starts = free_assignment(&fake, &config, &store, true).unwrap();
        assert_eq!(offsets(&starts)[0], (0, Offset::End, false));

        config
            .consumer_properties
            .insert("auto.offset.reset".into(), "error".into());
        let err = free_assignment(&fake, &config, &store, true).unwrap_err();
        assert!(matches!(err, Error::OffsetReset(_)), "{err}");
    }
}
