//! Asking a running pipeline to stop.

use std::sync::atomic::{AtomicBool, Ordering};
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
