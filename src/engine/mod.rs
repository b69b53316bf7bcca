//! The engine: one poll thread owning the consumer and all offset state, a worker pool
//! (or a tokio runtime) running the processor, and the records' completions coming
//! back as bits the poll thread reads. See docs/DESIGN.md for the architecture. Its
//! rooms follow a record's path:
//!
//! - [`intake`]: polling, staging per partition, assignments and their start offsets;
//! - [`scheduling`]: which records run now and together, and back-pressure;
//! - [`execution`]: the worker pool and the async runtime, running the processor;
//! - [`completion`]: completions and task ends coming back, and failure policy;
//! - [`commits`]: when to commit, what, and where to (group, transaction, store);
//! - [`observation`]: metrics, the lag sampler, refusals;
//! - [`seams`]: the consumer and sink traits and the tests' fakes.
//!
//! Beside them: [`driver`] (the poll loop, sole writer of the run state, [`state`]),
//! [`wake`] (when the parked poll thread wakes) and [`pipeline`] (the public
//! [`Pipeline`] and its start-up).

mod commits;
mod completion;
mod driver;
pub(crate) mod execution;
mod intake;
pub(crate) mod observation;
mod pipeline;
mod scheduling;
pub(crate) mod seams;
mod state;
#[cfg(test)]
mod tests;
mod wake;

pub use pipeline::{Pipeline, RunSummary};

/// The engine's hash map on the hot paths (per record: the partition of a polled
/// message, the lane of a key): foldhash, seeded per process, instead of SipHash.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
