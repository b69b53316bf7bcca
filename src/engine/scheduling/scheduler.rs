//! The scheduler: which delivered records may run now, as pool tasks. It decides
//! what runs together, never what is committed (that is the tracker's).
//!
//! **Lanes.** With [`ProcessingOrder::Key`] every key of a partition is a lane, with
//! [`ProcessingOrder::Partition`] the partition is one lane; records without a key
//! (key order) and every record (unordered) run free. A lane has at most one task
//! in flight (or one record waiting for a retry, or one dead letter unacknowledged):
//! records that arrive for a busy lane wait in it, in offset order, and go out
//! together as one *chain* when it frees.
//!
//! **Tasks.** Chains of one partition with the same length form one task, stored
//! layer by layer: the first record of every chain, then the second of every chain,
//! and so on. The worker hands each layer to `process_batch` in turn — a layer never
//! holds two records of one lane, so a batch is "records that may run together",
//! and per-lane offset order holds — and stops a lane at its first failure (the
//! rest of the chain comes back *skipped*). Many keys share a task; a hot key's
//! chain runs as its own task, so it cannot hold the others back.
//!
//! **Retries.** A record to retry waits in a queue ordered by due time, its lane kept
//! busy; when due it runs alone.
//!
//! **Parked records** (delivered, not running: waiting in a lane or for a retry)
//! hold their partition's committable offset like any incomplete record, but
//! draining does not wait for them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tidemark_offsets::Epoch;

use crate::engine::intake::partitions::Delivered;
use crate::engine::FastMap;
use crate::ordering::ProcessingOrder;
use crate::record::Record;
use crate::topic_partition::TopicPartition;

/// Records of one partition that may run now, dispatched under one epoch.
pub(crate) struct Task {
    /// Identifies the task's outcome to the scheduler.
    pub(in crate::engine) id: u64,
    pub(in crate::engine) topic: Arc<str>,
    pub(in crate::engine) partition: i32,
    pub(in crate::engine) epoch: Epoch,
    /// Key + payload bytes of `records`.
    pub(in crate::engine) bytes: usize,
    /// Layer by layer (see the module documentation); offset order within a lane.
    pub(in crate::engine) records: Vec<Record>,
    /// Records per layer: `records[j], records[j + layer], …` are one lane's chain.
    pub(in crate::engine) layer: usize,
    /// Exactly-once: the sink's abort count at dispatch (see `Sink::send`).
    pub(in crate::engine) aborts: u64,
}

type PartitionKey = TopicPartition;

/// A lane: a key's 64-bit hash (two keys that collide share a lane, which only
/// serializes them: order is never lost), or the whole partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LaneKey {
    Key(u64),
    Partition,
}

fn key_hash(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    // One seed per process: a key's lane never changes within the run, and crafted
    // keys cannot target one lane across runs.
    static STATE: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(key)
}

fn lane_of(order: ProcessingOrder, record: &Record) -> Option<LaneKey> {
    match order {
        ProcessingOrder::Key => record.key.as_deref().map(|k| LaneKey::Key(key_hash(k))),
        ProcessingOrder::Partition => Some(LaneKey::Partition),
        ProcessingOrder::Unordered => None,
    }
}

/// Records of one lane to run in offset order.
type Chain = (LaneKey, Vec<Record>);

/// The chains of one partition formed in one call of [`Scheduler::tasks`].
struct Run {
    epoch: Epoch,
    /// Each with its lane.
    chains: Vec<Chain>,
    /// Free records (no lane), moved in whole: they join the chains of length 1.
    free: Vec<Record>,
    /// Where each lane's chain is in `chains`.
    chain_of: FastMap<LaneKey, usize>,
}

impl Run {
    fn new(epoch: Epoch) -> Self {
        Run {
            epoch,
            chains: Vec::new(),
            free: Vec::new(),
            chain_of: FastMap::default(),
        }
    }
}

#[derive(Default)]
struct Lane {
    busy: bool,
    waiting: VecDeque<Record>,
}

struct PartitionLanes {
    epoch: Epoch,
    lanes: FastMap<LaneKey, Lane>,
    /// Records waiting in lanes or for a retry.
    parked: usize,
}

struct Retry {
    record: Record,
    epoch: Epoch,
}

/// What a task in flight holds: its partition and the lane of each chain.
struct Holding {
    partition: PartitionKey,
    lanes: Vec<LaneKey>,
}

/// See the module documentation.
pub(crate) struct Scheduler {
    order: ProcessingOrder,
    next_id: u64,
    partitions: FastMap<PartitionKey, PartitionLanes>,
    holding: HashMap<u64, Holding>,
    /// Lanes freed with records waiting, to dispatch next.
    ready: Vec<(PartitionKey, LaneKey)>,
    retries: BTreeMap<(Instant, u64), Retry>,
    /// Attempts so far of records that failed at least once, by coordinates.
    attempts: HashMap<(Arc<str>, i32, i64), u32>,
    /// Ids of dead letters on their way.
    dead_letters: std::collections::HashSet<u64>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::new(ProcessingOrder::default())
    }
}

impl Scheduler {
    pub(crate) fn new(order: ProcessingOrder) -> Self {
        Scheduler {
            order,
            next_id: 0,
            partitions: FastMap::default(),
            holding: HashMap::new(),
            ready: Vec::new(),
            retries: BTreeMap::new(),
            attempts: HashMap::new(),
            dead_letters: std::collections::HashSet::new(),
        }
    }

    fn lane_of(&self, record: &Record) -> Option<LaneKey> {
        lane_of(self.order, record)
    }

    fn lanes(&mut self, pk: &PartitionKey, epoch: Epoch) -> &mut PartitionLanes {
        let entry = self
            .partitions
            .entry(pk.clone())
            .or_insert_with(|| PartitionLanes {
                epoch,
                lanes: FastMap::default(),
                parked: 0,
            });
        if entry.epoch != epoch {
            // A new assignment of the partition: nothing of the old one is kept.
            *entry = PartitionLanes {
                epoch,
                lanes: FastMap::default(),
                parked: 0,
            };
        }
        entry
    }

    /// The tasks to run now: the records delivered this round (those of a busy lane
    /// wait in it), lanes freed since the last call, and retries due at `now`.
    /// `aborts`: the sink's abort count now (0 without exactly-once).
    pub(crate) fn tasks(
        &mut self,
        delivered: Vec<Delivered>,
        now: Instant,
        aborts: u64,
    ) -> Vec<Task> {
        let mut runs: FastMap<PartitionKey, Run> = FastMap::default();
        // Freed lanes first: their waiting records precede anything delivered now.
        self.run_freed_lanes(&mut runs);
        self.run_delivered(&mut runs, delivered);
        self.run_due_retries(&mut runs, now);
        self.tasks_of(runs, aborts)
    }

    /// The waiting records of lanes freed since the last call, as one chain each.
    fn run_freed_lanes(&mut self, runs: &mut FastMap<PartitionKey, Run>) {
        for (pk, lane_key) in std::mem::take(&mut self.ready) {
            let Some(lanes) = self.partitions.get_mut(&pk) else {
                continue;
            };
            let epoch = lanes.epoch;
            let Some(lane) = lanes.lanes.get_mut(&lane_key) else {
                continue;
            };
            if lane.busy || lane.waiting.is_empty() {
                continue;
            }
            lane.busy = true;
            let chain: Vec<Record> = lane.waiting.drain(..).collect();
            lanes.parked -= chain.len();
            let run = runs.entry(pk).or_insert_with(|| Run::new(epoch));
            run.chain_of.insert(lane_key, run.chains.len());
            run.chains.push((lane_key, chain));
        }
    }

    /// This round's records: into their lane's chain when the lane is free, to wait
    /// in it when busy, or free (no lane, or unordered).
    fn run_delivered(&mut self, runs: &mut FastMap<PartitionKey, Run>, delivered: Vec<Delivered>) {
        let order = self.order;
        for d in delivered {
            let Some(first) = d.records.first() else {
                continue;
            };
            let pk = TopicPartition::new(first.topic.clone(), first.partition);
            let run = runs.entry(pk.clone()).or_insert_with(|| Run::new(d.epoch));
            if order == ProcessingOrder::Unordered {
                if run.free.is_empty() {
                    run.free = d.records;
                } else {
                    run.free.extend(d.records);
                }
                continue;
            }
            let lanes = self.lanes(&pk, d.epoch);
            for record in d.records {
                let Some(lane_key) = lane_of(order, &record) else {
                    run.free.push(record);
                    continue;
                };
                if let Some(i) = run.chain_of.get(&lane_key) {
                    run.chains[*i].1.push(record);
                    continue;
                }
                let lane = lanes.lanes.entry(lane_key).or_default();
                if lane.busy || !lane.waiting.is_empty() {
                    lane.waiting.push_back(record);
                    lanes.parked += 1;
                } else {
                    lane.busy = true;
                    run.chain_of.insert(lane_key, run.chains.len());
                    // Room for a few: a key's records come in runs within a round.
                    let mut chain = Vec::with_capacity(4);
                    chain.push(record);
                    run.chains.push((lane_key, chain));
                }
            }
        }
    }

    /// Retries due at `now`, each alone (its lane's later records wait until it
    /// completes).
    fn run_due_retries(&mut self, runs: &mut FastMap<PartitionKey, Run>, now: Instant) {
        let order = self.order;
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let Retry { record, epoch } = entry.remove();
            let pk = TopicPartition::new(record.topic.clone(), record.partition);
            match self.partitions.get_mut(&pk) {
                Some(lanes) if lanes.epoch == epoch => lanes.parked -= 1,
                _ => continue, // the partition went away meanwhile
            }
            // Alone: its lane's later records wait until it completes.
            let run = runs.entry(pk).or_insert_with(|| Run::new(epoch));
            match lane_of(order, &record) {
                Some(lane_key) => run.chains.push((lane_key, vec![record])),
                None => run.free.push(record),
            }
        }
    }

    /// Each partition's runs as tasks: one per chain length, its records laid out
    /// layer by layer (the n-th record of every chain), free records in the first.
    fn tasks_of(&mut self, runs: FastMap<PartitionKey, Run>, aborts: u64) -> Vec<Task> {
        let mut tasks = Vec::new();
        for (
            pk,
            Run {
                epoch,
                chains,
                mut free,
                ..
            },
        ) in runs
        {
            let mut by_length: BTreeMap<usize, Vec<Chain>> = BTreeMap::new();
            for chain in chains {
                by_length.entry(chain.1.len()).or_default().push(chain);
            }
            if !free.is_empty() {
                by_length.entry(1).or_default();
            }
            for (length, chains) in by_length {
                let free = if length == 1 {
                    std::mem::take(&mut free)
                } else {
                    Vec::new()
                };
                let id = self.next_id;
                self.next_id += 1;
                let layer = chains.len() + free.len();
                let mut lanes = Vec::with_capacity(chains.len());
                let mut iters = Vec::with_capacity(chains.len());
                for (lane, chain) in chains {
                    lanes.push(lane);
                    iters.push(chain.into_iter());
                }
                let records = if iters.is_empty() {
                    free // the whole layer, as delivered: no copy
                } else {
                    let mut records = Vec::with_capacity(layer * length);
                    for _ in 0..length {
                        records.extend(iters.iter_mut().filter_map(Iterator::next));
                    }
                    records.extend(free);
                    records
                };
                if !lanes.is_empty() {
                    self.holding.insert(
                        id,
                        Holding {
                            partition: pk.clone(),
                            lanes,
                        },
                    );
                }
                tasks.push(Task {
                    id,
                    topic: pk.topic.clone(),
                    partition: pk.partition,
                    epoch,
                    bytes: records.iter().map(Record::size_bytes).sum(),
                    records,
                    layer,
                    aborts,
                });
            }
        }
        tasks
    }

    /// Task `id`'s outcome was applied: its lanes free up, except those of `records`
    /// it keeps busy (a retry or a dead letter of theirs is pending).
    pub(crate) fn finish(&mut self, id: u64, keep_busy: &[&Record]) {
        let Some(Holding { partition, lanes }) = self.holding.remove(&id) else {
            return;
        };
        let kept: Vec<LaneKey> = keep_busy.iter().filter_map(|r| self.lane_of(r)).collect();
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        for lane_key in lanes {
            if kept.contains(&lane_key) {
                continue;
            }
            let Some(lane) = state.lanes.get_mut(&lane_key) else {
                continue;
            };
            lane.busy = false;
            if lane.waiting.is_empty() {
                state.lanes.remove(&lane_key);
            } else {
                self.ready.push((partition.clone(), lane_key));
            }
        }
    }

    /// Holds `record`'s lane busy under a new task id for its dead letter, whose
    /// outcome arrives as that task's.
    pub(crate) fn hold_for_dead_letter(&mut self, record: &Record) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.dead_letters.insert(id);
        if let Some(lane) = self.lane_of(record) {
            self.holding.insert(
                id,
                Holding {
                    partition: TopicPartition::new(record.topic.clone(), record.partition),
                    lanes: vec![lane],
                },
            );
        }
        id
    }

    /// True (once) when task `id` was a dead letter.
    pub(crate) fn take_dead_letter(&mut self, id: u64) -> bool {
        !self.dead_letters.is_empty() && self.dead_letters.remove(&id)
    }

    /// Puts records a task skipped (its lane failed before them) back at the front of
    /// their lane, in offset order.
    pub(crate) fn requeue(&mut self, epoch: Epoch, skipped: Vec<Record>) {
        for record in skipped.into_iter().rev() {
            let pk = TopicPartition::new(record.topic.clone(), record.partition);
            let Some(lane_key) = self.lane_of(&record) else {
                continue;
            };
            let lanes = self.lanes(&pk, epoch);
            lanes.parked += 1;
            lanes
                .lanes
                .entry(lane_key)
                .or_default()
                .waiting
                .push_front(record);
        }
    }

    /// Schedules `record` to run again at `due`, as attempt `attempt + 1`. Its key
    /// and payload are copied out of the partition's arena first, so a record
    /// waiting out a backoff does not keep its neighbours' chunk alive.
    pub(crate) fn retry(&mut self, mut record: Record, epoch: Epoch, attempt: u32, due: Instant) {
        record.unshare();
        let pk = TopicPartition::new(record.topic.clone(), record.partition);
        self.lanes(&pk, epoch).parked += 1;
        self.attempts.insert(
            (record.topic.clone(), record.partition, record.offset),
            attempt,
        );
        let seq = self.next_id;
        self.next_id += 1;
        self.retries.insert((due, seq), Retry { record, epoch });
    }

    /// Attempts so far of the record at these coordinates (1 unless it was retried).
    pub(crate) fn attempts(&self, record: &Record) -> u32 {
        if self.attempts.is_empty() {
            return 1;
        }
        self.attempts
            .get(&(record.topic.clone(), record.partition, record.offset))
            .map_or(1, |a| a + 1)
    }

    /// True while some record has failed at least once (its attempts are kept).
    pub(crate) fn has_attempts(&self) -> bool {
        !self.attempts.is_empty()
    }

    /// Forgets the attempts of records that are done (completed or dead-lettered).
    pub(crate) fn done(&mut self, topic: &Arc<str>, partition: i32, offsets: &[i64]) {
        if self.attempts.is_empty() {
            return;
        }
        for o in offsets {
            self.attempts.remove(&(topic.clone(), partition, *o));
        }
    }

    /// Drops everything of `topic`/`partition` (revoked, lost, rewound): its lanes,
    /// waiting records and retries. Their records are not committed, so they are
    /// read again.
    pub(crate) fn remove(&mut self, topic: &str, partition: i32) {
        self.partitions.retain(|tp, _| !tp.is(topic, partition));
        self.retries
            .retain(|_, r| !(&*r.record.topic == topic && r.record.partition == partition));
        self.attempts
            .retain(|(t, p, _), _| !(&**t == topic && *p == partition));
        self.holding
            .retain(|_, h| !h.partition.is(topic, partition));
        self.ready.retain(|(tp, _)| !tp.is(topic, partition));
    }

    /// Records of `topic`/`partition` delivered and not running (see the module
    /// documentation).
    pub(crate) fn parked(&self, topic: &str, partition: i32) -> usize {
        self.partitions
            .iter()
            .find(|(tp, _)| tp.is(topic, partition))
            .map_or(0, |(_, l)| l.parked)
    }

    /// When the next retry is due.
    /// Records waiting for a retry.
    pub(crate) fn retries_waiting(&self) -> usize {
        self.retries.len()
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.retries.keys().next().map(|(due, _)| *due)
    }

    /// True when lanes freed with records waiting, or a retry is due at `now`.
    pub(crate) fn has_ready(&self, now: Instant) -> bool {
        !self.ready.is_empty() || self.next_due().is_some_and(|d| d <= now)
    }

    /// True while records wait in lanes behind running tasks (their dispatch follows
    /// the tasks' outcomes, which do not wake `poll`).
    pub(crate) fn has_waiting(&self) -> bool {
        self.partitions.values().any(|l| l.parked > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Bytes;

    fn rec(partition: i32, offset: i64, key: &str) -> Record {
        Record {
            topic: Arc::from("t"),
            partition,
            offset,
            timestamp_ms: None,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            payload: None,
            headers: Vec::new(),
        }
    }

    fn delivered(records: Vec<Record>) -> Vec<Delivered> {
        vec![Delivered {
            epoch: Epoch(1),
            records,
        }]
    }

    fn offsets(task: &Task) -> Vec<i64> {
        task.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn key_order_chains_a_key_and_parks_what_arrives_while_it_runs() {
        let mut s = Scheduler::new(ProcessingOrder::Key);
        let now = Instant::now();
        let mut tasks = s.tasks(
            delivered(vec![
                rec(0, 0, "a"),
                rec(0, 1, "b"),
                rec(0, 2, "a"),
                rec(0, 3, "c"),
            ]),
            now,
            0,
        );
        tasks.sort_by_key(|t| t.records.len());
        // b and c alone in one task (one layer), a's chain [0, 2] in its own.
        assert_eq!(tasks.len(), 2);
        assert_eq!((offsets(&tasks[0]), tasks[0].layer), (vec![1, 3], 2));
        assert_eq!((offsets(&tasks[1]), tasks[1].layer), (vec![0, 2], 1));
        // a is busy: its next record waits.
        assert!(s.tasks(delivered(vec![rec(0, 4, "a")]), now, 0).is_empty());
        assert_eq!(s.parked("t", 0), 1);
        s.finish(tasks[1].id, &[]);
        // The freed lane's waiting record goes before one delivered in the same call.
        let next = s.tasks(delivered(vec![rec(0, 5, "a")]), now, 0);
        assert_eq!(next.len(), 1);
        assert_eq!(offsets(&next[0]), vec![4, 5]);
        assert_eq!(s.parked("t", 0), 0);
    }

    #[test]
    fn a_retry_keeps_its_lane_busy_until_it_runs_and_completes() {
        let mut s = Scheduler::new(ProcessingOrder::Key);
        let now = Instant::now();
        let tasks = s.tasks(delivered(vec![rec(0, 0, "a")]), now, 0);
        let failed = rec(0, 0, "a");
        s.retry(
            failed.clone(),
            Epoch(1),
            1,
            now + std::time::Duration::from_secs(60),
        );
        s.finish(tasks[0].id, &[&failed]);
        assert!(s.tasks(delivered(vec![rec(0, 1, "a")]), now, 0).is_empty());
        assert_eq!(s.attempts(&failed), 2);
        let later = now + std::time::Duration::from_secs(61);
        assert!(s.has_ready(later));
        let retry = s.tasks(Vec::new(), later, 0);
        assert_eq!(offsets(&retry[0]), vec![0], "the retry runs alone");
        s.finish(retry[0].id, &[]);
        let rest = s.tasks(Vec::new(), later, 0);
        assert_eq!(offsets(&rest[0]), vec![1]);
    }

    #[test]
    fn unordered_puts_every_record_in_one_layer() {
        let mut s = Scheduler::new(ProcessingOrder::Unordered);
        let tasks = s.tasks(
            delivered(vec![rec(0, 0, "a"), rec(0, 1, "a"), rec(0, 2, "a")]),
            Instant::now(),
            0,
        );
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].layer, 3);
    }

    /// The scheduler against random deliveries, failures and retries, for every
    /// order: a layer never holds two records of one lane, a lane never has two
    /// tasks in flight, each lane's records succeed in offset order, and every
    /// record delivered succeeds exactly once (nothing dropped or duplicated).
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::{BTreeMap, HashSet};
        use std::time::Duration;

        #[derive(Debug, Clone)]
        enum Op {
            /// Deliver records of `partition` with these keys (`None`: no key).
            Deliver(i32, Vec<Option<u8>>),
            /// Run the in-flight task at this index (modulo their number); the lane
            /// at `fail.0` (modulo the layer) fails at step `fail.1` (modulo its
            /// chain), retried after `fail.2` ms.
            Run(usize, Option<(usize, usize, u64)>),
            /// Time passes (ms).
            Tick(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (
                    0..2i32,
                    prop::collection::vec(prop::option::weighted(0.8, 0..4u8), 1..12)
                )
                    .prop_map(|(p, keys)| Op::Deliver(p, keys)),
                (
                    any::<usize>(),
                    prop::option::weighted(0.3, (any::<usize>(), any::<usize>(), 0..50u64))
                )
                    .prop_map(|(i, f)| Op::Run(i, f)),
                (0..40u64).prop_map(Op::Tick),
            ]
        }

        /// A record's lane as the property sees it: `None` runs free.
        fn lane(order: ProcessingOrder, r: &Record) -> Option<(i32, Option<Vec<u8>>)> {
            match order {
                ProcessingOrder::Key => r.key.as_ref().map(|k| (r.partition, Some(k.to_vec()))),
                ProcessingOrder::Partition => Some((r.partition, None)),
                ProcessingOrder::Unordered => None,
            }
        }

        struct Model {
            order: ProcessingOrder,
            s: Scheduler,
            now: Instant,
            next_offset: [i64; 2],
            delivered: Vec<Record>,
            in_flight: Vec<Task>,
            /// Offsets that succeeded, per (partition, offset): how many times.
            succeeded: BTreeMap<(i32, i64), u32>,
            /// The offsets each lane succeeded, in order.
            lane_log: HashMap<(i32, Option<Vec<u8>>), Vec<i64>>,
        }

        impl Model {
            fn dispatch(&mut self, delivered: Vec<Delivered>) {
                let tasks = self.s.tasks(delivered, self.now, 0);
                for t in tasks {
                    // A layer never holds two records of one lane.
                    for layer in t.records.chunks(t.layer.max(1)) {
                        let mut seen = HashSet::new();
                        for r in layer {
                            if let Some(l) = lane(self.order, r) {
                                assert!(
                                    seen.insert(l.clone()),
                                    "two records of lane {l:?} in one layer"
                                );
                            }
                        }
                    }
                    // A lane never has two tasks in flight.
                    let lanes: HashSet<_> = t
                        .records
                        .iter()
                        .filter_map(|r| lane(self.order, r))
                        .collect();
                    for other in &self.in_flight {
                        for r in &other.records {
                            if let Some(l) = lane(self.order, r) {
                                assert!(!lanes.contains(&l), "lane {l:?} in two tasks at once");
                            }
                        }
                    }
                    self.in_flight.push(t);
                }
            }

            /// Runs `task` as a worker and the poll thread would: chain by chain,
            /// the failing lane stops there (its record retried, the rest skipped).
            fn run(&mut self, task: Task, fail: Option<(usize, usize, u64)>) {
                let layer = task.layer.max(1);
                let fail = fail.map(|(j, n, wait)| {
                    let j = j % layer;
                    let chain = task.records.iter().skip(j).step_by(layer).count();
                    (j, n % chain, wait)
                });
                let (mut failed, mut skipped) = (None, Vec::new());
                for (i, r) in task.records.iter().enumerate() {
                    let (j, n) = (i % layer, i / layer);
                    match fail {
                        Some((fj, fn_, _)) if fj == j && n == fn_ => failed = Some(r.clone()),
                        Some((fj, fn_, _)) if fj == j && n > fn_ => skipped.push(r.clone()),
                        _ => {
                            *self.succeeded.entry((r.partition, r.offset)).or_default() += 1;
                            if let Some(l) = lane(self.order, r) {
                                self.lane_log.entry(l).or_default().push(r.offset);
                            }
                        }
                    }
                }
                let mut keep = Vec::new();
                if let (Some(record), Some((_, _, wait))) = (failed, fail) {
                    let attempts = self.s.attempts(&record);
                    self.s.retry(
                        record.clone(),
                        task.epoch,
                        attempts,
                        self.now + Duration::from_millis(wait),
                    );
                    keep.push(record);
                }
                if !skipped.is_empty() {
                    skipped.sort_by_key(|r| r.offset);
                    self.s.requeue(task.epoch, skipped);
                }
                let kept: Vec<&Record> = keep.iter().collect();
                self.s.finish(task.id, &kept);
            }
        }

        fn check(order: ProcessingOrder, ops: Vec<Op>) {
            let mut m = Model {
                order,
                s: Scheduler::new(order),
                now: Instant::now(),
                next_offset: [0; 2],
                delivered: Vec::new(),
                in_flight: Vec::new(),
                succeeded: BTreeMap::new(),
                lane_log: HashMap::new(),
            };
            for op in ops {
                match op {
                    Op::Deliver(p, keys) => {
                        let records: Vec<Record> = keys
                            .into_iter()
                            .map(|k| {
                                let o = m.next_offset[p as usize];
                                m.next_offset[p as usize] += 1;
                                let mut r = rec(p, o, "");
                                r.key = k.map(|k| Bytes::copy_from_slice(&[k]));
                                r
                            })
                            .collect();
                        m.delivered.extend(records.iter().cloned());
                        m.dispatch(vec![Delivered {
                            epoch: Epoch(1),
                            records,
                        }]);
                    }
                    Op::Run(i, fail) if !m.in_flight.is_empty() => {
                        let task = m.in_flight.swap_remove(i % m.in_flight.len());
                        m.run(task, fail);
                        m.dispatch(Vec::new());
                    }
                    Op::Run(..) => {}
                    Op::Tick(ms) => {
                        m.now += Duration::from_millis(ms);
                        m.dispatch(Vec::new());
                    }
                }
            }
            // Everything left runs to success.
            for _ in 0..10_000 {
                m.now += Duration::from_millis(100);
                m.dispatch(Vec::new());
                let Some(task) = m.in_flight.pop() else {
                    if !m.s.has_waiting() && m.s.retries_waiting() == 0 {
                        break;
                    }
                    continue;
                };
                m.run(task, None);
            }
            for r in &m.delivered {
                assert_eq!(
                    m.succeeded.get(&(r.partition, r.offset)),
                    Some(&1),
                    "record {}@{} succeeded {:?} times",
                    r.partition,
                    r.offset,
                    m.succeeded.get(&(r.partition, r.offset))
                );
            }
            assert_eq!(
                m.succeeded.len(),
                m.delivered.len(),
                "a record never delivered succeeded"
            );
            for (l, offsets) in &m.lane_log {
                assert!(
                    offsets.windows(2).all(|w| w[0] < w[1]),
                    "lane {l:?} out of order: {offsets:?}"
                );
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn key_order(ops in prop::collection::vec(op(), 1..60)) {
                check(ProcessingOrder::Key, ops);
            }

            #[test]
            fn partition_order(ops in prop::collection::vec(op(), 1..60)) {
                check(ProcessingOrder::Partition, ops);
            }

            #[test]
            fn unordered(ops in prop::collection::vec(op(), 1..60)) {
                check(ProcessingOrder::Unordered, ops);
            }
        }
    }
}
