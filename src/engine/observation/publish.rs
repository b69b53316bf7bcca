//! The driver's publishing of what it knows: per-partition gauges (committed,
//! committable, high watermark, lag, in flight, oldest in-flight age, offset-map
//! bytes), stuck-record detection, and the `metrics` facade. Runs on the poll thread
//! once per [`PUBLISH_INTERVAL`] and at the end of the run; counters are written as
//! events happen (`Counters`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::engine::state::RunState;
use crate::metrics::names::*;
use crate::metrics::{Counters, PartitionMetrics, Shared};
use crate::topic_partition::TopicPartition;

/// How often the per-partition gauges and the facade are refreshed.
pub(crate) const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// High watermarks sampled off the poll thread: `(partition, offset)`.
pub(crate) type HighWatermarks = Vec<(TopicPartition, i64)>;

pub(crate) struct Publisher {
    shared: Arc<Shared>,
    next: Instant,
    stuck_after: Duration,
    map_budget: usize,
    sampled: Option<Receiver<HighWatermarks>>,
    high_watermarks: HashMap<TopicPartition, i64>,
    /// The in-flight record last reported stuck, by partition: reported once while
    /// it stays the oldest in flight past the threshold.
    stuck_reported: HashMap<TopicPartition, i64>,
}

impl Publisher {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stuck_after: Duration,
        map_budget: usize,
        sampled: Option<Receiver<HighWatermarks>>,
    ) -> Self {
        Publisher {
            shared,
            next: Instant::now(),
            stuck_after,
            map_budget,
            sampled,
            high_watermarks: HashMap::new(),
            stuck_reported: HashMap::new(),
        }
    }

    pub(crate) fn set_sampled(&mut self, sampled: Receiver<HighWatermarks>) {
        self.sampled = Some(sampled);
    }

    /// Publishes when the interval has passed (cheap otherwise).
    pub(crate) fn maybe_publish(&mut self, st: &RunState, now: Instant) {
        if now >= self.next {
            self.publish(st, now);
        }
    }

    /// Refreshes every per-partition gauge, detects stuck records, and writes the
    /// facade. Reads the run state only.
    pub(crate) fn publish(&mut self, st: &RunState, now: Instant) {
        self.next = now + PUBLISH_INTERVAL;
        if let Some(rx) = &self.sampled {
            for batch in rx.try_iter() {
                self.high_watermarks.extend(batch);
            }
        }
        let counters = &self.shared.counters;
        let mut partitions = Vec::new();
        let mut stuck_now = 0u64;
        let mut paused = 0u64;
        let mut reported = HashMap::new();
        for s in st.partitions.iter() {
            let key = TopicPartition::new(s.topic.clone(), s.partition);
            let committed = st.commits.accepted.get(&key).copied();
            let high_watermark = self.high_watermarks.get(&key).copied();
            let age = s.oldest_in_flight_age(now);
            if let Some((offset, age)) = age {
                if age >= self.stuck_after {
                    stuck_now += 1;
                    if self.stuck_reported.get(&key) != Some(&offset) {
                        Counters::add(&counters.stuck_records, 1);
                        tracing::warn!(
                            topic = %s.topic, partition = s.partition, offset,
                            age_ms = age.as_millis() as u64,
                            "record in flight longer than stuck_threshold: it holds the partition's committed offset"
                        );
                    }
                    reported.insert(key.clone(), offset);
                }
            }
            paused += u64::from(s.paused);
            partitions.push(PartitionMetrics {
                topic: s.topic.to_string(),
                partition: s.partition,
                committed_offset: committed,
                committable_offset: s.tracker.committable(),
                high_watermark,
                lag: high_watermark.zip(committed).map(|(hw, c)| (hw - c).max(0)),
                in_flight_records: s.pending() as u64,
                oldest_in_flight_age_ms: age.map(|(_, a)| a.as_millis() as u64),
                offset_map_bytes: s.map_bytes as u64,
                paused: s.paused,
            });
        }
        self.stuck_reported = reported;
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        self.write_facade(&partitions, st, stuck_now, paused);
        *self.shared.partitions.lock() = partitions;
    }

    fn write_facade(
        &self,
        partitions: &[PartitionMetrics],
        st: &RunState,
        stuck: u64,
        paused: u64,
    ) {
        for p in partitions {
            let labels = [
                ("topic", p.topic.clone()),
                ("partition", p.partition.to_string()),
            ];
            let set = |name: &'static str, value: Option<i64>| {
                if let Some(v) = value {
                    metrics::gauge!(name, &labels).set(v as f64);
                }
            };
            set(COMMITTED_OFFSET, p.committed_offset);
            set(COMMITTABLE_OFFSET, p.committable_offset);
            set(HIGH_WATERMARK, p.high_watermark);
            set(CONSUMER_LAG, p.lag);
            set(PARTITION_IN_FLIGHT, Some(p.in_flight_records as i64));
            set(OFFSET_MAP_BYTES, Some(p.offset_map_bytes as i64));
            set(PARTITION_PAUSED, Some(i64::from(p.paused)));
            metrics::gauge!(OLDEST_IN_FLIGHT_AGE, &labels)
                .set(p.oldest_in_flight_age_ms.unwrap_or(0) as f64 / 1000.0);
        }
        let c = &self.shared.counters;
        let get = Counters::get;
        metrics::gauge!(OFFSET_MAP_BUDGET).set(self.map_budget as f64);
        metrics::gauge!(IN_FLIGHT_RECORDS).set(get(&c.in_flight_records) as f64);
        metrics::gauge!(IN_FLIGHT_BYTES).set(get(&c.in_flight_bytes) as f64);
        metrics::gauge!(UNCOMMITTED_RECORDS).set(get(&c.uncommitted_records) as f64);
        metrics::gauge!(COMPLETED_ABOVE_COMMITTABLE)
            .set(get(&c.completed_above_committable) as f64);
        metrics::gauge!(PAUSED_PARTITIONS).set(paused as f64);
        metrics::gauge!(RETRIES_WAITING).set(st.scheduler.retries_waiting() as f64);
        metrics::gauge!(STUCK_PARTITIONS).set(stuck as f64);
        metrics::counter!(RECORDS_POLLED).absolute(get(&c.polled));
        metrics::counter!(RECORDS_DISPATCHED).absolute(get(&c.dispatched));
        metrics::counter!(RECORDS_COMPLETED).absolute(get(&c.completed));
        metrics::counter!(RECORDS_FAILED).absolute(get(&c.failed));
        metrics::counter!(RECORDS_DEAD_LETTERED).absolute(get(&c.dead_lettered));
        metrics::counter!(RECORDS_SKIPPED).absolute(get(&c.skipped_by_offset_map));
        metrics::counter!(COMMITS, "result" => "ok").absolute(get(&c.commits));
        metrics::counter!(COMMITS, "result" => "failed").absolute(get(&c.commits_failed));
        metrics::counter!(REBALANCE_PARTITIONS, "event" => "assigned").absolute(get(&c.assigned));
        metrics::counter!(REBALANCE_PARTITIONS, "event" => "revoked").absolute(get(&c.revoked));
        metrics::counter!(REBALANCE_PARTITIONS, "event" => "lost").absolute(get(&c.lost));
        metrics::counter!(STUCK_RECORDS).absolute(get(&c.stuck_records));
        metrics::counter!(TRANSACTIONS_ABORTED).absolute(get(&c.aborts));
        metrics::counter!(MAX_POLL_EXCEEDED).absolute(get(&c.max_poll_exceeded));
        // Prometheus counters are floats: seconds with µs precision.
        metrics::counter!(PROCESSING_TIME).absolute(get(&c.processing_us) / 1_000_000);
    }
}
