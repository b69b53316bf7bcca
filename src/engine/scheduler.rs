//! The scheduler: which delivered records may run together, as pool tasks.
//!
//! Today one policy: a task per partition per poll round (the records of one
//! partition polled in one round, in offset order), and `process_batch` receives it
//! whole. Ordering modes (per key, per partition) and retry queues will live here:
//! they decide what may run now, never what is committed (that is the tracker's).

use std::sync::Arc;

use tidemark_offsets::Epoch;

use super::partitions::Delivered;
use crate::record::Record;

/// Records of one partition that may run together, dispatched under one epoch.
pub(crate) struct Task {
    pub topic: Arc<str>,
    pub partition: i32,
    pub epoch: Epoch,
    /// Key + payload bytes of `records`.
    pub bytes: usize,
    /// In offset order.
    pub records: Vec<Record>,
    /// Exactly-once: the sink's abort count at dispatch (see `Sink::send`).
    pub aborts: u64,
}

/// Turns delivered records into tasks; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Scheduler;

impl Scheduler {
    /// The tasks for the records delivered this round. `aborts`: the sink's abort
    /// count now (0 without exactly-once).
    pub(crate) fn tasks(&mut self, delivered: Vec<Delivered>, aborts: u64) -> Vec<Task> {
        delivered
            .into_iter()
            .filter_map(|d| {
                let first = d.records.first()?;
                Some(Task {
                    topic: first.topic.clone(),
                    partition: first.partition,
                    epoch: d.epoch,
                    bytes: d.bytes,
                    records: d.records,
                    aborts,
                })
            })
            .collect()
    }
}
