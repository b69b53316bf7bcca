//! Waking the poll thread: it parks when the consumer's queue is empty, and wakes
//! when that queue gets an event (librdkafka's non-empty callback), when a task
//! ends, or when as many records completed as it asked for before parking — never
//! after a fixed sleep while records wait (docs/DESIGN.md, "Waking the poll thread").
//!
//! The cost to a worker is one relaxed load per completed record while nothing is
//! armed, one atomic decrement while a count is armed, and at most one
//! `unpark` per park (a futex wake only when the poll thread is really parked).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// The poll thread's wake-up, shared with the workers, the sink's delivery reports
/// and librdkafka's non-empty callback.
#[derive(Default)]
pub(crate) struct Wake {
    /// The thread that parks: the one that called [`park`](Self::park) first.
    poll_thread: OnceLock<Thread>,
    /// Records still to complete before the parked poll thread wants waking;
    /// ≤ 0: completions do not wake it.
    countdown: AtomicI64,
}

impl Wake {
    /// Wakes the poll thread (or makes its next park return at once).
    pub(crate) fn notify(&self) {
        if let Some(thread) = self.poll_thread.get() {
            thread.unpark();
        }
    }

    /// A record completed: wakes the poll thread when it was the last of the count
    /// armed by [`park`](Self::park).
    #[inline]
    pub(crate) fn record_completed(&self) {
        if self.countdown.load(Ordering::Relaxed) > 0
            && self.countdown.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.notify();
        }
    }

    /// A task ended (its outcome is on the completion channel): always worth a
    /// round — its lanes free, its failures need deciding.
    pub(crate) fn task_ended(&self) {
        self.notify();
    }

    /// Parks the calling (poll) thread up to `timeout`, or until notified, or —
    /// when `records` is positive — until that many more records complete.
    /// Returns at once when notified since the last park.
    pub(crate) fn park(&self, timeout: Duration, records: usize) {
        let _ = self.poll_thread.get_or_init(std::thread::current);
        self.countdown
            .store(records.min(i64::MAX as usize) as i64, Ordering::Release);
        std::thread::park_timeout(timeout);
        self.countdown.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn the_armed_count_of_completions_wakes_the_parked_thread_and_fewer_do_not() {
        let wake = Arc::new(Wake::default());
        // Register the poll thread (a notification before it parks is kept).
        wake.park(Duration::ZERO, 0);
        let w = wake.clone();
        let completer = std::thread::spawn(move || {
            // Give the poll thread time to park (not an assertion on time).
            std::thread::sleep(Duration::from_millis(50));
            for _ in 0..3 {
                w.record_completed();
            }
        });
        let started = Instant::now();
        wake.park(Duration::from_secs(60), 3);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "three completions did not wake the poll thread"
        );
        completer.join().unwrap();
        // Disarmed after the park: completions no longer count down.
        wake.record_completed();
        assert_eq!(wake.countdown.load(Ordering::Relaxed), 0);
    }
}
