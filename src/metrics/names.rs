//! The metric names tidemark writes through the `metrics` facade. Per-partition
//! metrics carry the labels `topic` and `partition`; the others none unless noted.
//! Counters end in `_total`; units are in the names (Prometheus naming
//! conventions).

/// Gauge, per partition: the last offset accepted by the group coordinator (or
/// store, or transaction) from this member.
pub const COMMITTED_OFFSET: &str = "tidemark_committed_offset";
/// Gauge, per partition: the offset a commit now would send.
pub const COMMITTABLE_OFFSET: &str = "tidemark_committable_offset";
/// Gauge, per partition: the high watermark, refreshed every `lag_refresh`
/// by ListOffsets (fresh while the partition is paused).
pub const HIGH_WATERMARK: &str = "tidemark_high_watermark";
/// Gauge, per partition: high watermark − committed offset, records.
pub const CONSUMER_LAG: &str = "tidemark_consumer_lag_records";
/// Gauge, per partition: records delivered whose outcome is unknown.
pub const PARTITION_IN_FLIGHT: &str = "tidemark_partition_in_flight_records";
/// Gauge, per partition: age of the oldest in-flight record, seconds.
pub const OLDEST_IN_FLIGHT_AGE: &str = "tidemark_oldest_in_flight_age_seconds";
/// Gauge, per partition: bytes of the offset map in the last commit.
pub const OFFSET_MAP_BYTES: &str = "tidemark_offset_map_bytes";
/// Gauge, per partition: 1 while back-pressure pauses it.
pub const PARTITION_PAUSED: &str = "tidemark_partition_paused";

/// Gauge: the offset map's byte budget (`offset_map_max_bytes`).
pub const OFFSET_MAP_BUDGET: &str = "tidemark_offset_map_budget_bytes";
/// Counter: records returned by poll.
pub const RECORDS_POLLED: &str = "tidemark_records_polled_total";
/// Counter: records handed to the worker pool.
pub const RECORDS_DISPATCHED: &str = "tidemark_records_dispatched_total";
/// Counter: records complete.
pub const RECORDS_COMPLETED: &str = "tidemark_records_completed_total";
/// Counter: failed record attempts.
pub const RECORDS_FAILED: &str = "tidemark_records_failed_total";
/// Counter: records produced to the dead-letter topic.
pub const RECORDS_DEAD_LETTERED: &str = "tidemark_records_dead_lettered_total";
/// Counter: records skipped because the previous owner's offset map marked them
/// complete.
pub const RECORDS_SKIPPED: &str = "tidemark_records_skipped_by_offset_map_total";
/// Gauge: records polled and not yet complete.
pub const IN_FLIGHT_RECORDS: &str = "tidemark_in_flight_records";
/// Gauge: records polled and not yet covered by a confirmed commit.
pub const UNCOMMITTED_RECORDS: &str = "tidemark_uncommitted_records";
/// Gauge: completed records above their partition's committable offset (waiting for
/// a record below them before a commit can cover them).
pub const COMPLETED_ABOVE_COMMITTABLE: &str = "tidemark_completed_above_committable_records";
/// Gauge: key + payload bytes polled and not yet processed.
pub const IN_FLIGHT_BYTES: &str = "tidemark_in_flight_bytes";
/// Gauge: partitions paused by back-pressure.
pub const PAUSED_PARTITIONS: &str = "tidemark_paused_partitions";
/// Gauge: records waiting for a retry.
pub const RETRIES_WAITING: &str = "tidemark_retries_waiting_records";
/// Counter, label `result` = `ok` | `failed`: commits.
pub const COMMITS: &str = "tidemark_commits_total";
/// Histogram: from sending a commit to its answer, seconds.
pub const COMMIT_LATENCY: &str = "tidemark_commit_latency_seconds";
/// Counter, label `event` = `assigned` | `revoked` | `lost`: partitions.
pub const REBALANCE_PARTITIONS: &str = "tidemark_rebalance_partitions_total";
/// Histogram: how long a revoke waited for in-flight records, seconds.
pub const DRAIN: &str = "tidemark_revoke_drain_seconds";
/// Histogram: processor time per record (a task's time over its records), seconds.
pub const RECORD_PROCESSING: &str = "tidemark_record_processing_seconds";
/// Counter: worker time spent in the processor, seconds (pool utilisation =
/// its rate / `workers`).
pub const PROCESSING_TIME: &str = "tidemark_processing_seconds_total";
/// Counter: records found in flight longer than `stuck_threshold`.
pub const STUCK_RECORDS: &str = "tidemark_stuck_records_total";
/// Gauge: partitions whose oldest in-flight record is past `stuck_threshold`.
pub const STUCK_PARTITIONS: &str = "tidemark_stuck_partitions";
/// Counter: transactions aborted (exactly-once).
pub const TRANSACTIONS_ABORTED: &str = "tidemark_transactions_aborted_total";
/// Counter: `max.poll.interval.ms` exceeded, as librdkafka reported it.
pub const MAX_POLL_EXCEEDED: &str = "tidemark_max_poll_exceeded_total";

/// Registers the help text of every metric above with the installed `metrics`
/// recorder (what Prometheus shows as `# HELP`). tidemark calls it when a
/// pipeline starts; calling it again is harmless.
pub fn describe() {
    metrics::describe_gauge!(COMMITTED_OFFSET, "the last offset accepted by the group coordinator (or store, or transaction) from this member.");
    metrics::describe_gauge!(COMMITTABLE_OFFSET, "the offset a commit now would send.");
    metrics::describe_gauge!(HIGH_WATERMARK, "the high watermark, refreshed every lag_refresh by ListOffsets (fresh while the partition is paused).");
    metrics::describe_gauge!(CONSUMER_LAG, "high watermark − committed offset, records.");
    metrics::describe_gauge!(
        PARTITION_IN_FLIGHT,
        "records delivered whose outcome is unknown."
    );
    metrics::describe_gauge!(
        OLDEST_IN_FLIGHT_AGE,
        "age of the oldest in-flight record, seconds."
    );
    metrics::describe_gauge!(
        OFFSET_MAP_BYTES,
        "bytes of the offset map in the last commit."
    );
    metrics::describe_gauge!(PARTITION_PAUSED, "1 while back-pressure pauses it.");
    metrics::describe_gauge!(
        OFFSET_MAP_BUDGET,
        "the offset map's byte budget (offset_map_max_bytes)."
    );
    metrics::describe_counter!(RECORDS_POLLED, "records returned by poll.");
    metrics::describe_counter!(RECORDS_DISPATCHED, "records handed to the worker pool.");
    metrics::describe_counter!(RECORDS_COMPLETED, "records complete.");
    metrics::describe_counter!(RECORDS_FAILED, "failed record attempts.");
    metrics::describe_counter!(
        RECORDS_DEAD_LETTERED,
        "records produced to the dead-letter topic."
    );
    metrics::describe_counter!(
        RECORDS_SKIPPED,
        "records skipped because the previous owner's offset map marked them complete."
    );
    metrics::describe_gauge!(IN_FLIGHT_RECORDS, "records polled and not yet complete.");
    metrics::describe_gauge!(
        COMPLETED_ABOVE_COMMITTABLE,
        "completed records above their partition's committable offset."
    );
    metrics::describe_gauge!(
        UNCOMMITTED_RECORDS,
        "records polled and not yet covered by a confirmed commit."
    );
    metrics::describe_gauge!(
        IN_FLIGHT_BYTES,
        "key + payload bytes polled and not yet processed."
    );
    metrics::describe_gauge!(PAUSED_PARTITIONS, "partitions paused by back-pressure.");
    metrics::describe_gauge!(RETRIES_WAITING, "records waiting for a retry.");
    metrics::describe_counter!(COMMITS, "commits.");
    metrics::describe_histogram!(
        COMMIT_LATENCY,
        "from sending a commit to its answer, seconds."
    );
    metrics::describe_counter!(REBALANCE_PARTITIONS, "partitions.");
    metrics::describe_histogram!(
        DRAIN,
        "how long a revoke waited for in-flight records, seconds."
    );
    metrics::describe_histogram!(
        RECORD_PROCESSING,
        "processor time per record (a task's time over its records), seconds."
    );
    metrics::describe_counter!(
        PROCESSING_TIME,
        "worker time spent in the processor, seconds (pool utilisation = its rate / workers)."
    );
    metrics::describe_counter!(
        STUCK_RECORDS,
        "records found in flight longer than stuck_threshold."
    );
    metrics::describe_gauge!(
        STUCK_PARTITIONS,
        "partitions whose oldest in-flight record is past stuck_threshold."
    );
    metrics::describe_counter!(TRANSACTIONS_ABORTED, "transactions aborted (exactly-once).");
    metrics::describe_counter!(
        MAX_POLL_EXCEEDED,
        "max.poll.interval.ms exceeded, as librdkafka reported it."
    );
}
