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

/// Live counters of a running pipeline, readable from any thread (for a progress bar).
#[derive(Debug, Default)]
pub struct Progress {
    /// Records handed to the worker pool.
    pub dispatched: AtomicU64,
    /// Records complete (processed and, with a sink, acknowledged).
    pub completed: AtomicU64,
    /// Commits accepted by the group coordinator.
    pub commits: AtomicU64,
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
}
