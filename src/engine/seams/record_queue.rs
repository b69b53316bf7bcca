//! Where the records of the assigned partitions arrive: a queue of the consumer's
//! own (`rd_kafka_queue_new`) that every assigned partition's fetch queue is
//! forwarded to (`rd_kafka_queue_get_partition` + `rd_kafka_queue_forward`), apart
//! from the consumer queue that brings rebalances, errors and commit results.
//!
//! Why: back-pressure must stop taking records without stopping the poll (docs/DESIGN.md,
//! invariant 8). With records and events in one queue the only way was pausing
//! every partition at the in-flight bounds — and a pause in librdkafka discards
//! what it had prefetched, so each pause and resume fetched and parsed the
//! prefetch again: on the sink path the consumer's broker thread did ~6× the raw
//! loop's work (BENCHMARKS.md, "Held back, not paused"). With two queues, a poll
//! round at a bound serves the consumer queue and leaves the records where they
//! are; librdkafka stops fetching once this queue holds `queued.min.messages`
//! records or `queued.max.messages.kbytes` (its thresholds count the queue a
//! partition's fetch queue is forwarded to: `rd_kafka_toppar_fetch_decide`), so the
//! prefetch stays bounded as before.
//!
//! librdkafka clears a partition's forwarding when it stops fetching it (revoke,
//! unassign) and, once the application forwarded it, never forwards it to the
//! consumer queue again (`RD_KAFKA_Q_F_FWD_APP`): every assignment forwards its
//! partitions ([`RecordQueue::forward`]) before `assign`. A partition not forwarded
//! still delivers, through the consumer queue.

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use rdkafka::bindings as rdsys;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedHeaders, Message, Timestamp};

use crate::engine::wake::Wake;

/// The record queue of one consumer; its non-empty callback wakes the parked poll
/// thread (librdkafka calls it when the queue goes from empty to non-empty).
pub(crate) struct RecordQueue {
    /// Null once [`close`](RecordQueue::close)d.
    queue: AtomicPtr<rdsys::rd_kafka_queue_t>,
    rk: *mut rdsys::rd_kafka_t,
    /// Kept alive while librdkafka holds its address as the callback's opaque.
    _wake: Arc<Wake>,
}

// SAFETY: librdkafka's queues and client handle are thread-safe; the pointers are
// only handed to librdkafka's functions.
unsafe impl Send for RecordQueue {}
// SAFETY: as above.
unsafe impl Sync for RecordQueue {}

/// librdkafka's non-empty callback of the [`RecordQueue`].
unsafe extern "C" fn records_arrived(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Wake` the queue's `Arc` keeps alive until the
    // callback is disabled (`RecordQueue::drop`).
    unsafe { &*(opaque as *const Wake) }.notify();
}

impl RecordQueue {
    /// A new record queue on the consumer client `rk`; its arrivals notify `wake`.
    ///
    /// # Safety
    /// `rk` is a live consumer handle that outlives the queue.
    pub(crate) unsafe fn new(rk: *mut rdsys::rd_kafka_t, wake: Arc<Wake>) -> Self {
        // SAFETY: the caller's live client; the opaque outlives the callback (`drop`).
        unsafe {
            let queue = rdsys::rd_kafka_queue_new(rk);
            rdsys::rd_kafka_queue_cb_event_enable(
                queue,
                Some(records_arrived),
                Arc::as_ptr(&wake) as *mut c_void,
            );
            RecordQueue {
                queue: AtomicPtr::new(queue),
                rk,
                _wake: wake,
            }
        }
    }

    /// Forwards the fetch queue of each `(topic, partition)` to this queue. Call it
    /// before assigning them. A partition librdkafka does not know yet is created
    /// (`rd_kafka_queue_get_partition`); a name with a NUL byte is skipped (its
    /// records keep coming through the consumer queue).
    pub(crate) fn forward<'a>(&self, partitions: impl IntoIterator<Item = (&'a str, i32)>) {
        let queue = self.queue.load(Ordering::Acquire);
        if queue.is_null() {
            return;
        }
        for (topic, partition) in partitions {
            let Ok(name) = CString::new(topic) else {
                continue;
            };
            // SAFETY: a live client, a NUL-terminated name; the partition's queue
            // handle is released after the forward (librdkafka keeps its own
            // reference to both queues).
            unsafe {
                let fetchq = rdsys::rd_kafka_queue_get_partition(self.rk, name.as_ptr(), partition);
                if fetchq.is_null() {
                    continue;
                }
                rdsys::rd_kafka_queue_forward(fetchq, queue);
                rdsys::rd_kafka_queue_destroy(fetchq);
            }
        }
    }

    /// The next record — or a partition's end of log or error — without waiting;
    /// `None` when the queue is empty. librdkafka moves the partition's fetch
    /// position past it as `rd_kafka_consumer_poll` would.
    pub(crate) fn next(&self) -> Option<KafkaResult<QueuedMessage<'_>>> {
        let queue = NonNull::new(self.queue.load(Ordering::Acquire))?;
        // SAFETY: the queue is alive (not closed); the message returned is ours to
        // destroy.
        let msg = NonNull::new(unsafe { rdsys::rd_kafka_consume_queue(queue.as_ptr(), 0) })?;
        // SAFETY: a message librdkafka just returned.
        let (err, partition) = unsafe { (msg.as_ref().err, msg.as_ref().partition) };
        let message = QueuedMessage {
            msg,
            _queue: PhantomData,
        };
        if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Some(Ok(message));
        }
        drop(message);
        Some(Err(match err {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                KafkaError::PartitionEOF(partition)
            }
            e => KafkaError::MessageConsumption(e.into()),
        }))
    }

    /// True when the queue holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        let queue = self.queue.load(Ordering::Acquire);
        // SAFETY: the queue is alive (not closed).
        queue.is_null() || unsafe { rdsys::rd_kafka_queue_length(queue) == 0 }
    }

    /// Destroys the queue and the records still in it. Must happen before the
    /// consumer's client is destroyed: a queued record holds its partition, and
    /// `rd_kafka_destroy` waits for every partition to be released (it hung there).
    /// Called from the poll thread, which alone reads the queue; afterwards `next`
    /// finds nothing and `forward` does nothing.
    pub(crate) fn close(&self) {
        let queue = self.queue.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if queue.is_null() {
            return;
        }
        // SAFETY: the callback is disabled before the queue goes, and `_wake` lives
        // until `self` does; destroying the application's handle purges the queue
        // (librdkafka keeps the queue itself while fetch queues still forward to it).
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(queue);
        }
    }
}

impl Drop for RecordQueue {
    fn drop(&mut self) {
        self.close();
    }
}

/// A record taken from the [`RecordQueue`], librdkafka's until dropped.
pub(crate) struct QueuedMessage<'a> {
    msg: NonNull<rdsys::rd_kafka_message_t>,
    _queue: PhantomData<&'a RecordQueue>,
}

impl QueuedMessage<'_> {
    fn raw(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: alive until dropped.
        unsafe { self.msg.as_ref() }
    }
}

impl Drop for QueuedMessage<'_> {
    fn drop(&mut self) {
        // SAFETY: returned by `rd_kafka_consume_queue`, destroyed once.
        unsafe { rdsys::rd_kafka_message_destroy(self.msg.as_ptr()) }
    }
}

/// `ptr`/`len` as a slice (`None` for a null pointer).
///
/// # Safety
/// A non-null `ptr` points to `len` bytes alive for `'a`.
unsafe fn slice<'a>(ptr: *mut c_void, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: the caller's.
        Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
    }
}

impl Message for QueuedMessage<'_> {
    type Headers = BorrowedHeaders;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka's key and length, alive with the message.
        unsafe { slice(self.raw().key, self.raw().key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka's payload and length, alive with the message.
        unsafe { slice(self.raw().payload, self.raw().len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let (ptr, len) = (self.raw().payload, self.raw().len);
        if ptr.is_null() {
            None
        } else {
            // SAFETY: the payload is the message's, borrowed mutably with it.
            Some(unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) })
        }
    }

    fn topic(&self) -> &str {
        // SAFETY: the message's topic handle is alive with it; the name is a C string.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.raw().rkt)) }
            .to_str()
            .unwrap_or("")
    }

    fn partition(&self) -> i32 {
        self.raw().partition
    }

    fn offset(&self) -> i64 {
        self.raw().offset
    }

    fn timestamp(&self) -> Timestamp {
        use rdsys::rd_kafka_timestamp_type_t::*;
        let mut kind = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message.
        let ms = unsafe { rdsys::rd_kafka_message_timestamp(self.msg.as_ptr(), &mut kind) };
        match kind {
            _ if ms == -1 => Timestamp::NotAvailable,
            RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
            RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(ms),
            RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(ms),
        }
    }

    /// The headers librdkafka parsed (`rd_kafka_message_headers`), viewed the way
    /// rdkafka's own `BorrowedMessage` does: `BorrowedHeaders` is a view of the
    /// native header list at its address.
    fn headers(&self) -> Option<&BorrowedHeaders> {
        let mut native = std::ptr::null_mut();
        // SAFETY: a live message; the header list is the message's, alive with it.
        unsafe {
            let err = rdsys::rd_kafka_message_headers(self.msg.as_ptr(), &mut native);
            (err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !native.is_null())
                .then(|| &*(native as *const BorrowedHeaders))
        }
    }
}
