//! Observation: what the run tells the outside. [`publish`] writes the metrics
//! (per partition and per member) from the poll thread; [`lag_sampler`] keeps the
//! high watermarks (and so the lag) true while partitions are paused;
//! [`refusal`] tells a refusing cluster (authentication, TLS, ACLs) from a
//! transient fault, so a run stops with a clear error instead of retrying forever.

pub(in crate::engine) mod lag_sampler;
pub(in crate::engine) mod publish;
pub(in crate::engine) mod refusal;
pub(crate) mod trace;
