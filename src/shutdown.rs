//! Asking a running pipeline to stop, and watching its progress.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A cloneable handle that asks a running [`Pipeline`](crate::Pipeline) to stop
/// gracefully: stop fetching, drain in-flight records (up to `drain_timeout_ms`),
/// commit synchronously, leave the group. Safe to call from any thread or a signal
/// handler's thread, any number of times.
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    /// Requests the graceful stop. Returns at once; `run` returns when it is done.
    pub fn shutdown(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once [`shutdown`](Self::shutdown) was called.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Live counters of a running pipeline, readable from any thread (a progress bar, a
/// test, a metrics exporter). Counts are totals since start; gauges are current.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records handed to the worker pool.
    pub dispatched: AtomicU64,
    /// Records complete (processed and, with a sink, acknowledged).
    pub completed: AtomicU64,
    /// Records produced to the dead-letter topic (and acknowledged).
    pub dead_lettered: AtomicU64,
    /// Commits accepted by the group coordinator.
    pub commits: AtomicU64,
    /// Gauge: records polled and not yet covered by a confirmed commit (the quantity
    /// `max_in_flight_records` bounds).
    pub in_flight_records: AtomicU64,
    /// Gauge: key + payload bytes polled and not yet processed (the quantity
    /// `max_in_flight_bytes` bounds).
    pub in_flight_bytes: AtomicU64,
    /// Highest `in_flight_records` seen.
    pub peak_in_flight_records: AtomicU64,
    /// Highest `in_flight_bytes` seen.
    pub peak_in_flight_bytes: AtomicU64,
    /// Times back-pressure paused fetching.
    pub pauses: AtomicU64,
    /// Times fetching resumed after a pause.
    pub resumes: AtomicU64,
    /// Partitions assigned (each assignment starts a new epoch).
    pub assigned: AtomicU64,
    /// Partitions revoked (drained and committed).
    pub revoked: AtomicU64,
    /// Partitions lost (dropped without commit).
    pub lost: AtomicU64,
    /// librdkafka reported `max.poll.interval.ms` exceeded (MAXPOLL): should stay 0.
    pub max_poll_exceeded: AtomicU64,
    /// Records delivered that the previous owner's offset map marked complete:
    /// completed without processing (docs/DESIGN.md, "The offset map").
    pub skipped_by_offset_map: AtomicU64,
    /// Exactly-once: transactions aborted (each followed by a rewind to the last
    /// committed offsets).
    pub aborts: AtomicU64,
}

impl Progress {
    /// Records complete so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Records dispatched so far.
    pub fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Relaxed)
    }

    /// Reads any counter or gauge.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the in-flight gauges and raises their peaks.
    pub(crate) fn set_in_flight(&self, records: u64, bytes: u64) {
        self.in_flight_records.store(records, Ordering::Relaxed);
        self.in_flight_bytes.store(bytes, Ordering::Relaxed);
        self.peak_in_flight_records
            .fetch_max(records, Ordering::Relaxed);
        self.peak_in_flight_bytes
            .fetch_max(bytes, Ordering::Relaxed);
    }
}
