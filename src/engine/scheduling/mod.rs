//! Scheduling: which delivered records run now and together. [`scheduler`] puts
//! records in lanes (per key or partition) and forms tasks layer by layer; [`flow`]
//! holds intake back when the in-flight, byte or commit-lag bounds are reached
//! (pausing partitions).

pub(in crate::engine) mod flow;
pub(in crate::engine) mod scheduler;
