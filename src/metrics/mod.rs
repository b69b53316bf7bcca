//! What a running pipeline reports: a typed snapshot ([`MetricsHandle::snapshot`]),
//! its health ([`MetricsHandle::health`]), and the same figures through the
//! [`metrics`](https://docs.rs/metrics) crate facade (install any recorder, e.g.
//! `metrics-exporter-prometheus`; without one the facade costs nothing).
//!
//! The driver (the poll thread) is the only writer: counters as events happen,
//! per-partition gauges and the facade once per publish interval (1 s) and at the
//! end of the run. Names follow Prometheus conventions: `tidemark_` prefix, base
//! units in the name (`_seconds`, `_bytes`, `_records`), `_total` for counters,
//! `topic` and `partition` labels (see [`names`]).

pub mod names;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One assigned partition, as of the last publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionMetrics {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The last offset the group coordinator (or store, or transaction) accepted
    /// from this member: the next offset to read. `None` before the first commit.
    pub committed_offset: Option<i64>,
    /// The offset a commit now would send (lowest incomplete, or highest delivered
    /// + 1). `None` before the first delivery.
    pub committable_offset: Option<i64>,
    /// The partition's high watermark (the offset after its last record), from a
    /// ListOffsets every `lag_refresh`, so it stays fresh while the partition is
    /// paused. `None` before the first answer.
    pub high_watermark: Option<i64>,
    /// Consumer lag: `high_watermark − committed_offset` (Kafka's definition, as
    /// `kafka-consumer-groups.sh --describe` shows it), records. `None` while
    /// either is unknown.
    pub lag: Option<i64>,
    /// Records delivered whose outcome is not known yet (running, waiting in a
    /// lane, or for a retry).
    pub in_flight_records: u64,
    /// How long the oldest in-flight record (the one holding the committable
    /// offset) has been delivered, ms. `None` when nothing is in flight.
    pub oldest_in_flight_age_ms: Option<u64>,
    /// Bytes of the offset map in the last commit's metadata.
    pub offset_map_bytes: u64,
    /// Paused by back-pressure.
    pub paused: bool,
}

/// A pipeline's figures at one moment. Counts are totals since the pipeline was
/// built; gauges are current.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Records returned by the consumer's poll.
    pub polled: u64,
    /// Records handed to the worker pool.
    pub dispatched: u64,
    /// Records complete (processed and, with a sink, acknowledged).
    pub completed: u64,
    /// Record attempts that failed (each retry counts).
    pub failed: u64,
    /// Records produced to the dead-letter topic (and acknowledged).
    pub dead_lettered: u64,
    /// Records the previous owner's offset map marked complete: completed without
    /// processing.
    pub skipped_by_offset_map: u64,
    /// Commits accepted.
    pub commits: u64,
    /// Commits refused or failed.
    pub commits_failed: u64,
    /// Gauge: records polled and not yet complete (the quantity
    /// `max_in_flight_records` bounds).
    pub in_flight_records: u64,
    /// Gauge: records polled and not yet covered by a confirmed commit (the quantity
    /// `max_uncommitted_records` bounds).
    pub uncommitted_records: u64,
    /// Gauge: key + payload bytes polled and not yet processed (the quantity
    /// `max_in_flight_bytes` bounds).
    pub in_flight_bytes: u64,
    /// Highest `in_flight_records` seen.
    pub peak_in_flight_records: u64,
    /// Highest `in_flight_bytes` seen.
    pub peak_in_flight_bytes: u64,
    /// Highest `uncommitted_records` seen.
    pub peak_uncommitted_records: u64,
    /// Gauge: completed records above their partition's committable offset: done,
    /// but no commit can cover them until the records below them complete (the
    /// offset map carries them meanwhile).
    pub completed_above_committable: u64,
    /// Times back-pressure reached an in-flight bound (`max_in_flight_records`,
    /// `max_in_flight_bytes`) and stopped taking records: they stay prefetched in
    /// librdkafka, which stops fetching at its own bounds; no partition is paused
    /// for it (a partition's own bounds pause it).
    pub pauses: u64,
    /// Times records were taken again, below half of those bounds.
    pub resumes: u64,
    /// Partitions assigned (each assignment starts a new epoch).
    pub assigned: u64,
    /// Partitions revoked (drained and committed).
    pub revoked: u64,
    /// Partitions lost (dropped without commit).
    pub lost: u64,
    /// librdkafka reported `max.poll.interval.ms` exceeded (MAXPOLL): should stay 0.
    pub max_poll_exceeded: u64,
    /// Exactly-once: transactions aborted.
    pub aborts: u64,
    /// Records found in flight longer than `stuck_threshold` (each counted once).
    pub stuck_records: u64,
    /// Worker time spent in the processor, ms (pool utilisation = its rate over
    /// `workers` × wall time).
    pub processing_ms: u64,
    /// Per assigned partition, as of the last publish (at most 1 s old).
    pub partitions: Vec<PartitionMetrics>,
}

/// Liveness and readiness, as a Kubernetes probe asks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The poll loop is running and turned within `max.poll.interval.ms` (the
    /// interval after which the group coordinator evicts a member; KIP-62).
    pub live: bool,
    /// Live, and partitions are assigned (a group member between assignments, or
    /// before its first, is not ready).
    pub ready: bool,
}

/// Reads a pipeline's [`Metrics`] and [`Health`] from any thread, during and after
/// the run. Cloneable; from [`Pipeline::metrics`](crate::Pipeline::metrics).
#[derive(Debug, Clone, Default)]
pub struct MetricsHandle(pub(crate) Arc<Shared>);

/// What the driver writes and the handle reads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub counters: Counters,
    pub partitions: Mutex<Vec<PartitionMetrics>>,
    /// `run` is executing its poll loop.
    pub running: AtomicBool,
    /// When the poll loop last turned, µs since `origin`.
    last_turn_us: AtomicU64,
    origin: OnceInstant,
    /// `max.poll.interval.ms` of the run, ms.
    pub max_poll_interval_ms: AtomicU64,
}

/// An `Instant` fixed at first use.
#[derive(Debug, Default)]
struct OnceInstant(std::sync::OnceLock<Instant>);

impl OnceInstant {
    fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

impl Shared {
    /// The poll loop turned now.
    pub(crate) fn turned(&self, now: Instant) {
        let us = now.saturating_duration_since(self.origin.get()).as_micros() as u64;
        self.last_turn_us.store(us, Ordering::Relaxed);
    }
}

impl MetricsHandle {
    /// The figures now: counters are exact, per-partition gauges are as of the
    /// driver's last publish (at most 1 s old while running; final after `run`).
    pub fn snapshot(&self) -> Metrics {
        let c = &self.0.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Metrics {
            polled: get(&c.polled),
            dispatched: get(&c.dispatched),
            completed: get(&c.completed),
            failed: get(&c.failed),
            dead_lettered: get(&c.dead_lettered),
            skipped_by_offset_map: get(&c.skipped_by_offset_map),
            commits: get(&c.commits),
            commits_failed: get(&c.commits_failed),
            in_flight_records: get(&c.in_flight_records),
            in_flight_bytes: get(&c.in_flight_bytes),
            peak_in_flight_records: get(&c.peak_in_flight_records),
            peak_in_flight_bytes: get(&c.peak_in_flight_bytes),
            uncommitted_records: get(&c.uncommitted_records),
            peak_uncommitted_records: get(&c.peak_uncommitted_records),
            completed_above_committable: get(&c.completed_above_committable),
            pauses: get(&c.pauses),
            resumes: get(&c.resumes),
            assigned: get(&c.assigned),
            revoked: get(&c.revoked),
            lost: get(&c.lost),
            max_poll_exceeded: get(&c.max_poll_exceeded),
            aborts: get(&c.aborts),
            stuck_records: get(&c.stuck_records),
            processing_ms: get(&c.processing_us) / 1000,
            partitions: self.0.partitions.lock().clone(),
        }
    }

    /// Records complete so far (cheaper than a snapshot).
    pub fn completed(&self) -> u64 {
        self.0.counters.completed.load(Ordering::Relaxed)
    }

    /// Liveness and readiness now.
    pub fn health(&self) -> Health {
        let s = &self.0;
        if !s.running.load(Ordering::Acquire) {
            return Health {
                live: false,
                ready: false,
            };
        }
        let since = s.origin.get().elapsed().as_micros() as u64;
        let idle =
            Duration::from_micros(since.saturating_sub(s.last_turn_us.load(Ordering::Relaxed)));
        let live = idle < Duration::from_millis(s.max_poll_interval_ms.load(Ordering::Relaxed));
        let ready = live && !s.partitions.lock().is_empty();
        Health { live, ready }
    }
}

/// The driver's counters (atomics, so the handle reads them from any thread).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub polled: AtomicU64,
    pub dispatched: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub skipped_by_offset_map: AtomicU64,
    pub commits: AtomicU64,
    pub commits_failed: AtomicU64,
    pub in_flight_records: AtomicU64,
    pub in_flight_bytes: AtomicU64,
    pub peak_in_flight_records: AtomicU64,
    pub peak_in_flight_bytes: AtomicU64,
    pub uncommitted_records: AtomicU64,
    pub peak_uncommitted_records: AtomicU64,
    pub completed_above_committable: AtomicU64,
    pub pauses: AtomicU64,
    pub resumes: AtomicU64,
    pub assigned: AtomicU64,
    pub revoked: AtomicU64,
    pub lost: AtomicU64,
    pub max_poll_exceeded: AtomicU64,
    pub aborts: AtomicU64,
    pub stuck_records: AtomicU64,
    pub processing_us: AtomicU64,
    /// Time workers spent running records, ns: per worker and batch, from its first
    /// claim to its last (`worker::claim_each`), or the whole call of an overriding
    /// `process_batch` on its calling worker.
    pub worker_busy_ns: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Sets the in-flight gauges and raises their peaks.
    pub(crate) fn set_in_flight(&self, records: u64, bytes: u64, uncommitted: u64) {
        self.in_flight_records.store(records, Ordering::Relaxed);
        self.uncommitted_records
            .store(uncommitted, Ordering::Relaxed);
        self.peak_uncommitted_records
            .fetch_max(uncommitted, Ordering::Relaxed);
        self.in_flight_bytes.store(bytes, Ordering::Relaxed);
        self.peak_in_flight_records
            .fetch_max(records, Ordering::Relaxed);
        self.peak_in_flight_bytes
            .fetch_max(bytes, Ordering::Relaxed);
    }
}
