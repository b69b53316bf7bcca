//! Completion: how a task's outcome comes back. [`progress`] carries each record's
//! completion (processed, outputs acknowledged) as bits the poll thread reads, and a
//! task's end (failures, skipped records) once; [`outcomes`] applies them to the
//! trackers and the scheduler; [`failure`] decides what a failed record causes
//! (retry, dead letter, stop).

pub(in crate::engine) mod failure;
pub(in crate::engine) mod outcomes;
pub(in crate::engine) mod progress;
