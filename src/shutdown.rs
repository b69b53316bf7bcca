//! Asking a running pipeline to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cloneable handle that asks a running [`Pipeline`](crate::Pipeline) to stop
/// gracefully: stop fetching, drain in-flight records (up to `drain_timeout`),
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

    /// Turns the process's termination signals into this graceful stop: the first
    /// SIGINT (Ctrl-C), SIGTERM (what Kubernetes and systemd send before killing)
    /// or SIGHUP requests the stop (drain in-flight records, final commit, leave the
    /// group); a second one exits the process at once with status 130, as a shell
    /// expects of a second Ctrl-C. Installs the process's one handler (the `ctrlc`
    /// crate, on a thread of its own: nothing runs inside the signal handler).
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) when the process already has a
    /// handler for these signals (installed by this call or by the `ctrlc` crate
    /// elsewhere), or the handler cannot be installed.
    pub fn stop_on_signals(&self) -> Result<(), crate::Error> {
        let handle = self.clone();
        let signals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        ctrlc::set_handler(move || {
            if signals.fetch_add(1, Ordering::SeqCst) == 0 {
                tracing::warn!("stop requested by a signal: draining in-flight records and committing (again to abort)");
                handle.shutdown();
            } else {
                std::process::exit(130);
            }
        })
        .map_err(|e| crate::Error::Config(format!("stop_on_signals: {e}")))
    }
}
