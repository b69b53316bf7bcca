//! The worker pool: `Config::workers` OS threads that block on one job queue, and
//! the *claims* through which the records of a layer spread over them.
//!
//! Why not rayon: its idle workers look for work by stealing from every other
//! worker's deque, and each attempt walks crossbeam-epoch's list of all the pool's
//! threads — with 1,024 workers on blocking work, 78 % of the CPU went to
//! `crossbeam_epoch::Global::try_advance` and the rate fell from 134 k records/s
//! (256 workers) to 9.8 k (BENCHMARKS.md, "Workers on sleeping work"). Here an idle
//! worker sleeps in the queue's receive (a futex) and costs nothing; a job is one
//! channel message.
//!
//! A layer runs as [`claim_each`]: the worker running the task and up to
//! `workers − 1` helpers take records one at a time from a shared counter, so a
//! worker held by a slow record holds nothing else.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

/// A unit of work for a worker.
type Job = Box<dyn FnOnce() + Send>;

enum Message {
    Run(Job),
    /// One worker stops (the pool sends one per worker when dropped).
    Stop,
}

/// The worker threads. Dropping the pool lets each worker finish the job it runs,
/// then stop; it does not wait for them.
pub(crate) struct Pool {
    jobs: Sender<Message>,
    size: usize,
    /// Workers waiting for a job (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    idle: Arc<AtomicUsize>,
}

/// The pool of the worker thread this runs on: where its helpers go.
#[derive(Clone)]
struct Current {
    jobs: Sender<Message>,
    /// The queue, so a worker waiting for its layer runs other jobs meanwhile.
    queue: Receiver<Message>,
    size: usize,
}

impl Current {
    /// Most helpers for `len` records: one per other worker, at most `len − 1`
    /// (the calling worker takes part). (Sending only as many as workers were idle
    /// halved the rate at 64 workers on sleeping work, measured: a worker that
    /// turned idle a moment later had no helper job to join through.)
    fn helpers(&self, len: usize) -> usize {
        (self.size - 1).min(len.saturating_sub(1))
    }
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Current>> = const { std::cell::RefCell::new(None) };
}

impl Pool {
    /// Starts `size` (≥ 1) threads named `tidemark-worker-N`. Errors when the OS
    /// refuses a thread.
    pub(crate) fn new(size: usize) -> std::io::Result<Pool> {
        let size = size.max(1);
        let (jobs, queue) = crossbeam_channel::unbounded::<Message>();
        let idle = Arc::new(AtomicUsize::new(0));
        for i in 0..size {
            let current = Current {
                jobs: jobs.clone(),
                queue: queue.clone(),
                size,
            };
            let idle = idle.clone();
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("tidemark-worker-{i}"))
                .spawn(move || work(current, queue, idle))?;
        }
        Ok(Pool { jobs, size, idle })
    }

    /// Runs `job` on a worker. A panic escaping it is logged; the worker goes on.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        // The workers hold the receiver until they are told to stop: never closed.
        let _ = self.jobs.send(Message::Run(Box::new(job)));
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for _ in 0..self.size {
            let _ = self.jobs.send(Message::Stop);
        }
    }
}

fn work(current: Current, queue: Receiver<Message>, idle: Arc<AtomicUsize>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(current));
    loop {
        idle.fetch_add(1, Ordering::Relaxed);
        let message = queue.recv();
        idle.fetch_sub(1, Ordering::Relaxed);
        let Ok(Message::Run(job)) = message else {
            break;
        };
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(job)) {
            // User panics are caught where they happen (`run_task`); one that
            // escapes anyway is logged and the worker goes on.
            tracing::error!(
                message = %crate::processor::panic_message(&*panic),
                "panic on a worker thread"
            );
        }
    }
    CURRENT.with(|c| c.borrow_mut().take());
}

/// A layer's records being claimed: shared with the helpers, which may start after
/// every record was claimed (they then touch nothing but this).
struct Claims {
    next: AtomicUsize,
    len: usize,
    /// Records run to their end (by any worker).
    finished: AtomicUsize,
    /// Told once `finished == len` (the owner waits on it and on the job queue).
    done: Sender<()>,
    /// Runs record `i`. Points into the owner's stack frame, which outlives every
    /// call: the owner returns only once every claimed record has finished.
    run: *const (dyn Fn(usize) + Sync),
    /// Where each worker adds its time from first claim to last, ns (null: not
    /// measured). Lives as long as `run`.
    busy: *const AtomicU64,
    /// Helper jobs still allowed (`workers − 1` at most).
    helpers: AtomicUsize,
    jobs: Sender<Message>,
}

// SAFETY: `run` is `Sync` and only called while the owner waits (see above).
unsafe impl Send for Claims {}
// SAFETY: as for `Send`: shared access only calls `run`, which is `Sync`.
unsafe impl Sync for Claims {}

impl Claims {
    /// Claims and runs records until none is left; returns how many it ran. At its
    /// first claim, while records remain after it, it sends one more helper: the
    /// layer fans out one worker at a time, as fast as idle workers take the jobs,
    /// and a worker is woken only when there was a record left to claim (one
    /// helper per worker of a 1,024-worker pool per layer woke hundreds for
    /// nothing, measured).
    fn help(self: &Arc<Self>) -> usize {
        let started = Instant::now();
        let mut ran = 0;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if ran == 0 && i + 1 < self.len {
                self.send_helper();
            }
            if i >= self.len {
                if ran > 0 && !self.busy.is_null() {
                    // SAFETY: as `run` (records this worker ran are not finished yet).
                    let busy = unsafe { &*self.busy };
                    busy.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                return ran;
            }
            // SAFETY: `i < len` was claimed, so the owner is still waiting for it
            // and `run` is alive. A panic leaves the record's result empty.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*self.run)(i) }));
            ran += 1;
        }
    }

    fn send_helper(self: &Arc<Self>) {
        let left = self.helpers.load(Ordering::Relaxed);
        if left == 0
            || self
                .helpers
                .compare_exchange(left, left - 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let claims = self.clone();
        let _ = self.jobs.send(Message::Run(Box::new(move || {
            let ran = claims.help();
            claims.finished(ran);
        })));
    }

    /// `ran` more records finished; the last one wakes the owner. Nothing of the
    /// owner's frame is touched after this.
    fn finished(&self, ran: usize) {
        if ran > 0 && self.finished.fetch_add(ran, Ordering::AcqRel) + ran == self.len {
            let _ = self.done.try_send(());
        }
    }
}

/// Runs `run(i)` for every `i` in `0..len`, on this worker and up to `workers − 1`
/// helpers of its pool (sent one at a time: see `Claims::help`), each taking the next index from a shared counter (one
/// atomic add per record); returns when every index has run. Outside a pool
/// (a `process_batch` called directly) it runs them in order on this thread.
///
/// Each worker that ran records adds its time from first claim to last to `busy`
/// (ns): two clock reads per worker and layer, none per record.
pub(crate) fn claim_each(len: usize, busy: Option<&AtomicU64>, run: &(dyn Fn(usize) + Sync)) {
    let current = CURRENT.with(|c| c.borrow().clone());
    let helpers = current.as_ref().map_or(0, |c| c.helpers(len));
    let Some(current) = current.filter(|_| helpers > 0) else {
        let started = Instant::now();
        (0..len).for_each(run);
        if let Some(busy) = busy {
            busy.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        return;
    };
    // SAFETY: only the lifetime is erased; `Claims::run` says why it is never
    // called after `run` ends.
    let run: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(run) };
    let (done, finished) = crossbeam_channel::bounded(1);
    let claims = Arc::new(Claims {
        next: AtomicUsize::new(0),
        len,
        finished: AtomicUsize::new(0),
        done,
        run,
        busy: busy.map_or(std::ptr::null(), |b| b as *const AtomicU64),
        helpers: AtomicUsize::new(helpers),
        jobs: current.jobs.clone(),
    });
    let ran = claims.help();
    claims.finished(ran);
    // Records of this layer still run on helpers: run other jobs meanwhile, as a
    // free worker would. Waiting idle deadlocked a pool whose other workers were
    // all held — e.g. 2 workers, a helper in a record that sleeps, the owner
    // waiting for it: nothing left to run the other partitions' tasks.
    while claims.finished.load(Ordering::Acquire) < len {
        crossbeam_channel::select! {
            recv(finished) -> _ => break,
            recv(current.queue) -> message => match message {
                Ok(Message::Run(job)) => {
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
                // Not this worker's to take while it waits: put it back.
                Ok(Message::Stop) | Err(_) => {
                    let _ = current.jobs.send(Message::Stop);
                    let _ = finished.recv();
                    break;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_layer_runs_every_record_once_across_workers_while_one_sleeps() {
        let pool = Pool::new(4).unwrap();
        while pool.idle.load(Ordering::Relaxed) < 4 {
            std::thread::yield_now();
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.spawn(move || {
            let seen = Mutex::new(Vec::new());
            let threads = Mutex::new(std::collections::HashSet::new());
            claim_each(100, None, &|i| {
                if i == 0 {
                    // A slow record: the others go on without it.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                seen.lock().unwrap().push(i);
                threads.lock().unwrap().insert(std::thread::current().id());
            });
            let mut seen = seen.into_inner().unwrap();
            seen.sort_unstable();
            tx.send((seen, threads.into_inner().unwrap().len()))
                .unwrap();
        });
        let (seen, threads) = rx.recv().unwrap();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert!(threads > 1, "the layer ran on one worker only");
    }

    #[test]
    fn busy_workers_do_not_deadlock_waiting_for_helpers() {
        // Two workers, each running a layer whose helpers queue behind the other
        // layer: each owner claims its own records, so both finish.
        let pool = Pool::new(2).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..2 {
            let tx = tx.clone();
            pool.spawn(move || {
                let count = AtomicUsize::new(0);
                claim_each(50, None, &|_| {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    count.fetch_add(1, Ordering::Relaxed);
                });
                tx.send(count.load(Ordering::Relaxed)).unwrap();
            });
        }
        assert_eq!(rx.recv().unwrap(), 50);
        assert_eq!(rx.recv().unwrap(), 50);
    }

    #[test]
    fn a_worker_waiting_for_its_layer_runs_other_jobs_meanwhile() {
        // Two workers: the owner's helper holds record 1 until job B runs; the
        // owner, done with record 0, must run B itself (the other worker is held).
        use std::sync::atomic::AtomicBool;
        let pool = Pool::new(2).unwrap();
        let (helper_took_1, released) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (tx, rx) = crossbeam_channel::unbounded();
        let (took, rel, done_a) = (helper_took_1.clone(), released.clone(), tx.clone());
        pool.spawn(move || {
            claim_each(2, None, &|i| {
                if i == 0 {
                    while !took.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                } else {
                    took.store(true, Ordering::Release);
                    while !rel.load(Ordering::Acquire) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            });
            done_a.send("a").unwrap();
        });
        pool.spawn(move || {
            released.store(true, Ordering::Release);
            tx.send("b").unwrap();
        });
        let mut got: Vec<&str> = (0..2)
            .map(|_| {
                rx.recv_timeout(std::time::Duration::from_secs(60))
                    .expect("deadlocked: the waiting owner ran nothing")
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, ["a", "b"]);
    }
}
