//! The engine's unit tests: the driver and its components against a scripted
//! consumer ([`FakeConsumer`]), with a real worker pool and no broker.

use std::sync::{Arc, Condvar, Mutex as StdMutex};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::commits::target::CommitTarget;
use super::driver::{Driver, Engine};
use super::intake::partitions::Committed;
use super::seams::fake::{Call, FakeConsumer, FakeProducer};
use super::seams::sink::Sink;
use super::state::RunState;
use crate::commit::{CommitEvent, CommitMode, CommitPolicy, PartitionOffset};
use crate::config::Config;
use crate::error::Error;
use crate::metrics::Counters;
use crate::processor::{ProcessResult, Processor};
use crate::record::{Outputs, Record};
use crate::shutdown::ShutdownHandle;
use crate::topic_partition::TopicPartition;

const T: &str = "t";

/// Completes every record at once, except those at `blocked` offsets, which wait
/// until the gate opens; panics on `panic_at`.
#[derive(Default)]
struct Gated {
    blocked: Vec<i64>,
    panic_at: Option<i64>,
    gate: Arc<(StdMutex<bool>, Condvar)>,
    /// Offsets processed, in the order they started.
    seen: Arc<StdMutex<Vec<i64>>>,
}

impl Gated {
    fn blocking(offsets: impl IntoIterator<Item = i64>) -> Self {
        Gated {
            blocked: offsets.into_iter().collect(),
            ..Gated::default()
        }
    }

    fn opener(&self) -> impl Fn() + Send + Sync + 'static {
        let gate = self.gate.clone();
        move || {
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        }
    }
}

impl Processor for Gated {
    fn process(&self, record: &Record) -> ProcessResult {
        self.seen.lock().unwrap().push(record.offset);
        if self.panic_at == Some(record.offset) {
            panic!("boom at {}", record.offset);
        }
        if self.blocked.contains(&record.offset) {
            let mut open = self.gate.0.lock().unwrap();
            while !*open {
                open = self.gate.1.wait(open).unwrap();
            }
        }
        Ok(Outputs::none())
    }
}

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::new("fake:9092", "g", [T]);
    c.workers = 2;
    c.lifecycle.drain_timeout = std::time::Duration::from_millis(2_000);
    c.commits.policy = CommitPolicy::AtEnd;
    edit(&mut c);
    c
}

fn driver(config: &Config, target: CommitTarget, processor: impl Processor) -> Driver {
    driver_with(
        config,
        target,
        super::execution::Work::Blocking(Arc::new(processor)),
    )
}

fn driver_with(config: &Config, target: CommitTarget, work: super::execution::Work) -> Driver {
    driver_over(config, target, work, None)
}

/// A driver whose outputs and dead letters go to `sink`.
fn driver_over(
    config: &Config,
    target: CommitTarget,
    work: super::execution::Work,
    sink: Option<Arc<Sink>>,
) -> Driver {
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let (_, requests) = crossbeam_channel::unbounded();
    let tracer = Arc::new(crate::engine::observation::trace::Tracer::new(config, None));
    let engine = Arc::new(Engine {
        tracer: tracer.clone(),
        state: Mutex::new(RunState::new(config)),
        completions: done_rx,
        sink,
        done_tx,
        wake: Arc::default(),
        metrics: Arc::default(),
        record_processing: metrics::Histogram::noop(),
        on_commit: None,
        hooks: Arc::new(work.clone()),
        delivery: config.delivery,
        drain_timeout: config.lifecycle.drain_timeout,
        start_position: None,
        target,
        refusals: super::observation::refusal::Refusals::new(
            Duration::from_secs(10),
            Vec::new(),
            None,
        ),
    });
    let execution =
        super::execution::Execution::start(&work, config.workers, config.concurrency, None, tracer)
            .unwrap();
    Driver::new(
        config,
        engine,
        execution,
        requests,
        ShutdownHandle::default(),
    )
}

/// The usual set-up: a driver committing synchronously to the group, with
/// `partitions` of `T` assigned, and its fake consumer.
fn synced(c: &Config, processor: impl Processor, partitions: &[i32]) -> (Driver, FakeConsumer) {
    let d = driver(c, CommitTarget::Group(CommitMode::Sync), processor);
    assign(&d, partitions);
    (d, FakeConsumer::default())
}

fn assign(d: &Driver, partitions: &[i32]) {
    let list: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(T, *p))
        .collect();
    d.engine
        .on_assign(&mut d.engine.state.lock(), &list, Vec::new());
}

fn at(partition: i32, offset: i64) -> PartitionOffset {
    PartitionOffset::new(T, partition, offset)
}

fn drain_all(d: &Driver) -> usize {
    let mut st = d.engine.state.lock();
    d.engine
        .drain(&mut st, Duration::from_secs(10), |_, _| true)
}

fn committable(d: &Driver, partition: i32) -> Option<i64> {
    d.engine
        .state
        .lock()
        .partitions
        .get(T, partition)
        .and_then(|s| s.tracker.committable())
}

/// Applies task outcomes until at most `n` records of partition 0 are in flight
/// (panics after about 20 s without).
fn apply_until_in_flight(d: &Driver, n: usize) {
    let mut tries = 0;
    while d
        .engine
        .state
        .lock()
        .partitions
        .get(T, 0)
        .unwrap()
        .tracker
        .in_flight()
        > n
    {
        d.engine.apply_ready(&mut d.engine.state.lock());
        tries += 1;
        assert!(tries < 20_000, "never down to {n} records in flight");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A new owner of partition 0 that inherits `map`: processes `0..records` and
/// returns the offsets it processed, sorted.
fn redone_by_new_owner(
    c: &Config,
    map: tidemark_offsets::OffsetMap,
    records: i64,
) -> (Driver, Vec<i64>) {
    let processor = Gated::default();
    let seen = processor.seen.clone();
    let d = driver(c, CommitTarget::Group(CommitMode::Sync), processor);
    d.engine.on_assign(
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
        vec![(TopicPartition::new(T, 0), map)],
    );
    let fake = FakeConsumer::default();
    fake.queue(T, 0, 0..records);
    let mut d = d;
    d.turn(&fake);
    drain_all(&d);
    let mut redone = seen.lock().unwrap().clone();
    redone.sort();
    (d, redone)
}

fn commits(fake: &FakeConsumer) -> Vec<Vec<PartitionOffset>> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::CommitSync(o) | Call::CommitAsync(Some(o)) => Some(o),
            _ => None,
        })
        .collect()
}

#[test]
fn revoke_drains_and_commits_only_the_revoked_partitions() {
    let processor = Gated::blocking([7]);
    let open = processor.opener();
    let mut d = driver(
        &config(|_| {}),
        CommitTarget::Group(CommitMode::Async),
        processor,
    );
    let fake = FakeConsumer::default();
    assign(&d, &[0, 1]);
    fake.queue(T, 0, 0..10);
    fake.queue(T, 1, 0..10);
    d.turn(&fake);
    // Offset 7 of both partitions is still running when the revoke starts.
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        open();
    });
    let started = Instant::now();
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    opener.join().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "the revoke did not wait"
    );
    assert_eq!(
        commits(&fake),
        vec![vec![at(0, 10)]],
        "only partition 0, to its end"
    );
    assert_eq!(fake.committed(T, 0), Some(10));
    let st = d.engine.state.lock();
    assert!(st.partitions.get(T, 0).is_none(), "revoked state dropped");
    assert!(
        st.partitions.get(T, 1).is_some(),
        "the other partition stays"
    );
}

#[test]
fn a_lost_assignment_commits_nothing() {
    let (mut d, fake) = synced(&config(|_| {}), Gated::default(), &[0]);
    fake.queue(T, 0, 0..10);
    d.turn(&fake);
    drain_all(&d);
    fake.lose_assignment();
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    assert!(commits(&fake).is_empty(), "a lost partition was committed");
    assert!(d.engine.state.lock().partitions.get(T, 0).is_none());
    assert_eq!(Counters::get(&d.engine.metrics.counters.lost), 1);
}

/// An async-committing driver over a fake, partition 0 assigned, records
/// `offsets` polled and completed.
fn async_driver_completed(offsets: std::ops::Range<i64>) -> (Driver, FakeConsumer) {
    let mut d = driver(
        &config(|_| {}),
        CommitTarget::Group(CommitMode::Async),
        Gated::default(),
    );
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, offsets);
    d.turn(&fake);
    drain_all(&d);
    (d, fake)
}

/// librdkafka retries an OffsetCommit that timed out or met a coordinator change,
/// so a commit still unanswered may land after a newer one and move the committed
/// offset back (seen on a 3-node cluster with a leader killed): no commit goes out
/// while an async one is unanswered, and a refused one is sent again with the
/// partition's current offset, never an older one.
#[test]
fn one_async_commit_at_a_time_and_commits_never_go_back() {
    let (mut d, fake) = async_driver_completed(0..10);
    let commit_all = |d: &Driver| {
        d.engine
            .commit_dirty(&fake, &mut d.engine.state.lock(), |_, _| true)
    };
    let take_answers = |d: &Driver| {
        d.engine
            .take_commit_answers(&fake, &mut d.engine.state.lock(), Duration::ZERO)
    };
    let sent =
        |fake: &FakeConsumer| -> Vec<i64> { commits(fake).iter().map(|c| c[0].offset).collect() };

    fake.fail_commits(1);
    commit_all(&d); // 10, refused when sent: partition 0 is dirty again
    commit_all(&d); // sends 10
    fake.queue(T, 0, 10..20);
    d.turn(&fake);
    drain_all(&d);
    commit_all(&d); // 20 waits: 10 is unanswered (librdkafka may still retry it)
    assert_eq!(
        sent(&fake),
        vec![10, 10],
        "a commit sent while one was unanswered"
    );
    assert!(!take_answers(&d), "nothing answered yet");

    fake.answer_commit(false); // 10 refused after librdkafka's retries
    assert!(take_answers(&d));
    commit_all(&d); // the current offset, 20
    commit_all(&d); // 20 is unanswered: nothing
    fake.answer_commit(true);
    assert!(take_answers(&d));
    commit_all(&d); // nothing dirty

    assert_eq!(sent(&fake), vec![10, 10, 20]);
    assert_eq!(fake.committed(T, 0), Some(20));
    let st = d.engine.state.lock();
    assert_eq!(
        st.commits.accepted.get(&TopicPartition::new(T, 0)),
        Some(&20)
    );
    assert_eq!(
        st.partitions.records_uncommitted(),
        0,
        "confirmed records released"
    );
}

/// A synchronous commit (here the final one) is not sent before the answer to the
/// async commit on its way: sent at once, it could be overtaken by a retry of the
/// older one.
#[test]
fn the_final_commit_waits_for_the_answer_to_the_async_one_on_its_way() {
    let (mut d, fake) = async_driver_completed(0..10);
    d.engine
        .commit_dirty(&fake, &mut d.engine.state.lock(), |_, _| true);
    fake.queue(T, 0, 10..20);
    d.turn(&fake);
    drain_all(&d);
    d.finish(&fake).expect("the final commit");

    let commit_calls: Vec<Call> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                Call::CommitAsync(_) | Call::CommitSync(_) | Call::Answered
            )
        })
        .collect();
    assert_eq!(
        commit_calls,
        vec![
            Call::CommitAsync(Some(vec![at(0, 10)])),
            Call::Answered,
            Call::CommitSync(vec![at(0, 20)]),
        ]
    );
    assert_eq!(fake.committed(T, 0), Some(20));
}

/// True when the engine ever paused a partition.
fn ever_paused(fake: &FakeConsumer) -> bool {
    fake.calls().iter().any(|c| matches!(c, Call::Pause(_)))
}

#[test]
fn back_pressure_holds_back_at_the_in_flight_bound_without_pausing_and_takes_again_on_completions()
{
    let processor = Gated::blocking(0..10);
    let open = processor.opener();
    let c = config(|c| c.flow.max_in_flight_records = 10);
    let (mut d, fake) = synced(&c, processor, &[0]);
    fake.queue(T, 0, 0..50);
    d.turn(&fake);
    assert_eq!(d.engine.state.lock().partitions.records_in_flight(), 10);
    assert_eq!(fake.queued_len(T, 0), 40, "taken past the bound");
    // Polling goes on while held back, and takes nothing; the records stay
    // prefetched (a pause would have librdkafka discard and fetch them again).
    d.turn(&fake);
    assert_eq!(Counters::get(&d.engine.metrics.counters.dispatched), 10);
    assert_eq!(fake.queued_len(T, 0), 40);
    assert!(!ever_paused(&fake), "paused for a global bound");

    open();
    drain_all(&d);
    d.turn(&fake); // completions free the in-flight bound, no commit needed
    d.turn(&fake); // and this round takes records again
    assert!(
        fake.queued_len(T, 0) < 40,
        "nothing taken once the records completed"
    );
    assert!(!ever_paused(&fake));
    assert_eq!(
        fake.committed(T, 0),
        None,
        "the policy (at-end) commits nothing"
    );
}

#[test]
fn back_pressure_holds_back_at_the_commit_lag_bound_until_a_commit_confirms() {
    let c = config(|c| {
        c.flow.max_in_flight_records = 10;
        c.flow.max_uncommitted_records = 10;
    });
    let (mut d, fake) = synced(&c, Gated::default(), &[0]);
    fake.queue(T, 0, 0..50);
    d.turn(&fake);
    assert_eq!(fake.queued_len(T, 0), 40, "taken past the bound");
    drain_all(&d);
    // Completed but uncommitted: at the commit-lag bound nothing more is taken; a
    // commit is forced whatever the policy (at-end), and its confirmation lets
    // records be taken again.
    d.turn(&fake);
    assert_eq!(fake.committed(T, 0), Some(10), "the forced commit");
    assert_eq!(fake.queued_len(T, 0), 40, "taken past the bound");
    d.turn(&fake);
    assert!(
        fake.queued_len(T, 0) < 40,
        "nothing taken after the commit confirmed"
    );
    assert!(!ever_paused(&fake), "paused for the commit-lag bound");
    assert!(d.engine.state.lock().partitions.records_uncommitted() <= 10);
}

#[test]
fn a_stuck_record_pauses_only_its_own_partition_at_the_commit_lag_bound() {
    // Offset 3 of partition 0 runs until opened; partition 1 starts at 100, so
    // none of its records is held.
    let processor = Gated::blocking([3]);
    let open = processor.opener();
    let c = config(|c| {
        c.flow.max_in_flight_records = 100;
        c.flow.max_uncommitted_records = 20;
    });
    let (mut d, fake) = synced(&c, processor, &[0, 1]);
    fake.queue(T, 0, 0..30);
    fake.queue(T, 1, 100..160);
    // Partition 0 holds about half the bound (it pauses once its share, 10,
    // waits above the stuck record), so partition 1 moves on in steps of the rest.
    for _ in 0..100 {
        d.turn(&fake);
        let mut st = d.engine.state.lock();
        d.engine
            .drain(&mut st, Duration::from_millis(20), |_, p| p == 0);
        d.engine
            .drain(&mut st, Duration::from_secs(10), |_, p| p == 1);
        drop(st);
        if fake.committed(T, 1) == Some(160) {
            break;
        }
    }
    d.turn(&fake); // commits what the last drain completed
    d.turn(&fake); // back-pressure sees that commit
    assert!(fake.committed(T, 0).unwrap_or(0) <= 3);
    assert!(fake.is_paused(T, 0), "the stuck partition is not paused");
    assert_eq!(
        fake.committed(T, 1),
        Some(160),
        "the other partition stopped behind the stuck one"
    );
    assert!(!fake.is_paused(T, 1));

    open();
    for _ in 0..5 {
        drain_all(&d);
        d.turn(&fake);
    }
    assert_eq!(fake.committed(T, 0), Some(30));
    assert!(
        !fake.is_paused(T, 0),
        "not resumed once its commit confirmed"
    );
}

#[test]
fn drain_timeout_on_revoke_commits_up_to_the_stuck_record() {
    let processor = Gated::blocking([3]);
    let open = processor.opener();
    let c = config(|c| c.lifecycle.drain_timeout = std::time::Duration::from_millis(50));
    let (mut d, fake) = synced(&c, processor, &[0]);
    // Two tasks: 0..3 completes, 3..6 is stuck on offset 3.
    fake.queue(T, 0, 0..3);
    d.turn(&fake);
    drain_all(&d);
    fake.queue(T, 0, 3..6);
    d.turn(&fake);
    let started = Instant::now();
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the drain did not time out"
    );
    let commits = commits(&fake);
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].len(), 1);
    assert_eq!(commits[0][0].offset, 3, "never past the stuck record");
    // 4 and 5 were dispatched with the stuck record and completed meanwhile: the
    // next owner skips them (they used to wait for their task, and be redone).
    let map = tidemark_offsets::OffsetMap::decode(&commits[0][0].metadata).unwrap();
    assert_eq!(map.completed(), [4..6]);
    open();
}

#[test]
fn drain_timeout_on_stop_commits_up_to_the_stuck_record() {
    let processor = Gated::blocking([4]);
    let open = processor.opener();
    let c = config(|c| c.lifecycle.drain_timeout = std::time::Duration::from_millis(50));
    let mut d = driver(&c, CommitTarget::Group(CommitMode::Async), processor);
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    // Two tasks: 0..4 completes, 4..8 is stuck on offset 4.
    fake.queue(T, 0, 0..4);
    d.turn(&fake);
    drain_all(&d);
    fake.queue(T, 0, 4..8);
    d.turn(&fake);
    let started = Instant::now();
    d.finish(&fake).expect("the final commit");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the drain did not time out"
    );
    assert_eq!(fake.committed(T, 0), Some(4));
    assert!(
        matches!(fake.calls().last(), Some(Call::CommitSync(_))),
        "the final commit waits for its answer"
    );
    open();
}

#[test]
fn completions_of_an_earlier_epoch_are_ignored() {
    let processor = Gated::blocking(0..5);
    let open = processor.opener();
    let (mut d, fake) = synced(&config(|_| {}), processor, &[0]);
    fake.queue(T, 0, 0..5);
    d.turn(&fake);
    // The partition is assigned again (a new epoch) while the old tasks run.
    assign(&d, &[0]);
    open();
    std::thread::sleep(Duration::from_millis(100));
    d.turn(&fake);
    assert_eq!(
        committable(&d, 0),
        None,
        "a stale completion moved the new epoch"
    );
    assert_eq!(Counters::get(&d.engine.metrics.counters.completed), 0);
    fake.queue(T, 0, 0..5);
    d.turn(&fake);
    drain_all(&d);
    assert_eq!(committable(&d, 0), Some(5));
}

#[test]
fn a_panicking_record_stops_the_run_at_its_offset() {
    let processor = Gated {
        panic_at: Some(2),
        ..Gated::default()
    };
    let (mut d, fake) = synced(&config(|_| {}), processor, &[0]);
    fake.queue(T, 0, 0..5);
    d.turn(&fake);
    drain_all(&d);
    assert!(d.engine.state.lock().must_stop());
    d.finish(&fake).unwrap();
    assert_eq!(
        fake.committed(T, 0),
        Some(2),
        "committed past the failed record"
    );
    let error = d.engine.state.lock().failures.take_error();
    match error {
        Some(Error::Processor { offset, source, .. }) => {
            assert_eq!(offset, 2);
            assert!(source.message.contains("boom at 2"), "{}", source.message);
        }
        other => panic!("expected a processor error, got {other:?}"),
    }
}

#[test]
fn an_idle_partition_commits_past_offsets_never_delivered() {
    let mut d = driver(
        &config(|_| {}),
        CommitTarget::Group(CommitMode::Sync),
        Gated::default(),
    );
    let fake = FakeConsumer::default();
    fake.report_eof();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..10);
    d.turn(&fake);
    drain_all(&d);
    // librdkafka fetched a commit marker at offset 10, moved the position past it,
    // and reported the end of the log there.
    fake.set_position(T, 0, 11);
    fake.queue(T, 0, std::iter::empty());
    d.turn(&fake);
    d.finish(&fake).unwrap();
    assert_eq!(fake.committed(T, 0), Some(11));
}

#[test]
fn a_position_ahead_of_the_records_is_not_trusted_before_the_end_of_the_log() {
    // Apache Kafka, group chaos (CI): a member whose records of a partition were
    // all complete up to 323 read librdkafka's position as 5,248 and committed it;
    // 324..5247 were never processed. Only a reported end of log makes the
    // position a fact about offsets never delivered.
    let (mut d, fake) = synced(&config(|_| {}), Gated::default(), &[0]);
    fake.queue(T, 0, 0..324);
    d.turn(&fake);
    drain_all(&d);
    fake.set_position(T, 0, 5_248);
    d.turn(&fake);
    d.finish(&fake).unwrap();
    assert_eq!(
        fake.committed(T, 0),
        Some(324),
        "nothing above the last record polled was seen"
    );
}

#[test]
fn librdkafka_auto_commit_stores_the_committable_offsets() {
    let c = config(|c| c.commits.policy = CommitPolicy::Auto(100));
    let mut d = driver(&c, CommitTarget::LibrdkafkaAuto, Gated::default());
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..10);
    d.turn(&fake);
    drain_all(&d);
    d.turn(&fake);
    assert!(fake.calls().contains(&Call::Store(vec![at(0, 10)])));
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::CommitSync(_))),
        "librdkafka's timer commits, not the loop"
    );
}

#[test]
fn the_offset_map_lets_a_new_owner_skip_what_the_old_one_completed() {
    use tidemark_offsets::OffsetMap;
    // The old owner: offset 0 is stuck, 1..6 complete (in a later round).
    let processor = Gated::blocking([0]);
    let open = processor.opener();
    let c = config(|c| c.lifecycle.drain_timeout = std::time::Duration::from_millis(50));
    let (mut d, fake) = synced(&c, processor, &[0]);
    fake.queue(T, 0, 0..1);
    d.turn(&fake);
    fake.queue(T, 0, 1..6);
    d.turn(&fake);
    apply_until_in_flight(&d, 1);
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    open();
    let committed = fake.committed_with_metadata(T, 0).unwrap();
    assert_eq!(committed.offset, 0, "never past the stuck record");
    let map = OffsetMap::decode(&committed.metadata).expect("the commit carries a map");
    assert_eq!(map.completed().to_vec(), vec![1..6]);

    // The new owner reads the map and processes only offset 0.
    let (d, redone) = redone_by_new_owner(&c, map, 8);
    assert_eq!(redone, vec![0, 6, 7], "1..6 were skipped");
    assert_eq!(committable(&d, 0), Some(8));
    assert_eq!(
        Counters::get(&d.engine.metrics.counters.skipped_by_offset_map),
        5
    );
}

#[test]
fn a_completion_above_a_stuck_record_makes_the_partition_dirty() {
    let processor = Gated::blocking([0]);
    let open = processor.opener();
    let c = config(|_| {});
    let (mut d, fake) = synced(&c, processor, &[0]);
    fake.queue(T, 0, 0..1);
    d.turn(&fake);
    let commit_now = |d: &Driver| {
        let mut st = d.engine.state.lock();
        d.engine.commit_dirty(&fake, &mut st, |_, _| true);
    };
    commit_now(&d);
    assert_eq!(fake.committed_with_metadata(T, 0).unwrap().metadata, "");
    fake.queue(T, 0, 1..3);
    d.turn(&fake);
    apply_until_in_flight(&d, 1);
    commit_now(&d);
    let c1 = fake.committed_with_metadata(T, 0).unwrap();
    assert_eq!(c1.offset, 0);
    assert!(!c1.metadata.is_empty(), "the map changed: committed again");
    let before = commits(&fake).len();
    commit_now(&d);
    assert_eq!(commits(&fake).len(), before, "nothing changed: no commit");
    open();
}

#[test]
fn a_zero_budget_turns_the_map_off() {
    let processor = Gated::blocking([0]);
    let open = processor.opener();
    let c = config(|c| {
        c.lifecycle.drain_timeout = std::time::Duration::from_millis(50);
        c.commits.offset_map_max_bytes = 0;
    });
    let (mut d, fake) = synced(&c, processor, &[0]);
    fake.queue(T, 0, 0..1);
    d.turn(&fake);
    fake.queue(T, 0, 1..4);
    d.turn(&fake);
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    open();
    assert_eq!(fake.committed_with_metadata(T, 0).unwrap().metadata, "");
}

/// Fails even offsets retriably (they wait for their retries, holding the
/// committable offset without occupying a worker); completes odd ones.
struct EvenRetry;

impl Processor for EvenRetry {
    fn process(&self, record: &Record) -> ProcessResult {
        if record.offset % 2 == 0 {
            return Err(crate::processor::ProcessError::retriable("even"));
        }
        Ok(Outputs::none())
    }
}

#[test]
fn a_map_over_budget_keeps_a_prefix_and_the_rest_is_redone() {
    use tidemark_offsets::OffsetMap;
    // Odd offsets complete, even ones wait for retries: one run per record, far
    // more than 24 bytes hold.
    let c = config(|c| {
        c.commits.offset_map_max_bytes = 24;
        c.ordering = crate::ordering::ProcessingOrder::Unordered;
        c.failures.retry.max_attempts = u32::MAX;
        c.failures.retry.initial_backoff = std::time::Duration::from_millis(60_000);
        c.failures.retry.max_backoff = std::time::Duration::from_millis(60_000);
    });
    let (mut d, fake) = synced(&c, EvenRetry, &[0]);
    fake.queue(T, 0, 0..200);
    d.turn(&fake);
    while d
        .engine
        .state
        .lock()
        .partitions
        .get(T, 0)
        .unwrap()
        .tracker
        .in_flight()
        > 100
        || d.engine.state.lock().pending(|_, _| true) > 0
    {
        d.engine.apply_ready(&mut d.engine.state.lock());
    }
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    let committed = fake.committed_with_metadata(T, 0).unwrap();
    assert_eq!(committed.offset, 0);
    assert!(committed.metadata.len() <= 24);
    let map = OffsetMap::decode(&committed.metadata).unwrap();
    assert!(map.end() > 1 && map.end() < 200, "a prefix: {map}");

    let end = map.end();
    let (d, redone) = redone_by_new_owner(&c, map, 200);
    let expected: Vec<i64> = (0..200).filter(|o| o % 2 == 0 || *o >= end).collect();
    assert_eq!(
        redone, expected,
        "stuck records and everything past the prefix"
    );
    assert_eq!(committable(&d, 0), Some(200));
}

#[test]
fn records_discarded_at_stop_are_never_skipped_by_the_position() {
    use super::seams::consumer::KafkaConsumer as _;
    let c = config(|_| {});
    let (mut d, fake) = synced(&c, Gated::default(), &[0]);
    fake.queue(T, 0, 0..3);
    d.turn(&fake);
    drain_all(&d);
    // Polled (the position moves to 6) but not dispatched when the stop comes.
    fake.queue(T, 0, 3..6);
    for _ in 0..3 {
        let msg = fake.poll_record().unwrap().unwrap();
        d.engine.state.lock().partitions.stage(&msg);
    }
    d.finish(&fake).unwrap();
    assert_eq!(
        fake.committed(T, 0),
        Some(3),
        "the discarded records 3..6 must be read again"
    );
}

#[test]
fn records_a_close_polled_and_dropped_are_never_skipped_by_the_position() {
    // The soak (issue 31): a member stopping gracefully had delivered partition 1 up
    // to 4,937 and seen its end of log there; then 62 new records arrived, and the
    // consumer's close — rdkafka polls the queue and drops what it gets — took
    // them, moving the position to 5,000. The revoke during the close committed
    // 5,000: 4,938..4,999 were lost. Only the position the end of log was reported
    // at may move the committable offset.
    use super::seams::consumer::KafkaConsumer as _;
    let c = config(|_| {});
    let (mut d, fake) = synced(&c, Gated::default(), &[0]);
    fake.report_eof();
    fake.queue(T, 0, 0..3);
    d.turn(&fake);
    drain_all(&d);
    d.turn(&fake);
    // New records, polled by the close and dropped: never staged.
    fake.queue(T, 0, 3..6);
    for _ in 0..3 {
        assert!(matches!(fake.poll_record(), Some(Ok(_))));
    }
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    assert_eq!(
        fake.committed(T, 0),
        Some(3),
        "3..6 were never processed: they must be read again"
    );
}

/// Turns `d` until it stops (at most `turns` times), draining what is in flight
/// between turns; returns the turns it took, or `None` when it never stopped.
fn turns_until_stop(d: &mut Driver, fake: &FakeConsumer, turns: usize) -> Option<usize> {
    for i in 0..turns {
        if d.turn(fake) == super::driver::Turn::Stop {
            return Some(i);
        }
        drain_all(d);
    }
    None
}

#[test]
fn the_idle_stop_waits_for_held_back_partitions_to_reach_their_end() {
    // Partition 0 is held back at the in-flight bound with its records running; once they
    // complete nothing is in flight and no record arrived "for the idle time" (0),
    // but 40 records are still unread: stopping then would leave them behind.
    let processor = Gated::blocking(0..10);
    let open = processor.opener();
    let seen = processor.seen.clone();
    let c = config(|c| {
        c.flow.max_in_flight_records = 10;
        c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(0));
    });
    let mut d = driver(&c, CommitTarget::Group(CommitMode::Sync), processor);
    let fake = FakeConsumer::default();
    fake.report_eof();
    assign(&d, &[0, 1]);
    fake.queue(T, 0, 0..50);
    fake.queue(T, 1, 0..0); // an empty partition: at its end at once
    assert_eq!(d.turn(&fake), super::driver::Turn::Continue);
    assert_eq!(fake.queued_len(T, 0), 40);
    open();
    assert!(
        turns_until_stop(&mut d, &fake, 1_000).is_some(),
        "never stopped"
    );
    let mut processed = seen.lock().unwrap().clone();
    processed.sort();
    assert_eq!(
        processed,
        (0..50).collect::<Vec<_>>(),
        "stopped with records unread"
    );
}

#[test]
fn the_idle_stop_waits_for_the_first_assignment_and_an_empty_one_counts() {
    let c = config(|c| c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(0)));
    let mut d = driver(&c, CommitTarget::Group(CommitMode::Sync), Gated::default());
    let fake = FakeConsumer::default();
    fake.report_eof();
    // Still joining the group (no assignment yet): not idle, however long it takes.
    for _ in 0..3 {
        assert_eq!(
            d.turn(&fake),
            super::driver::Turn::Continue,
            "stopped before joining"
        );
    }
    assign(&d, &[]); // more members than partitions: an empty assignment
    assert_eq!(d.turn(&fake), super::driver::Turn::Stop);
}

#[test]
fn after_a_lost_assignment_the_idle_stop_waits_for_the_next_assignment() {
    // Issue 31: a member cut off from the group loses its assignment; with no
    // partition left, "every assigned partition at its end" was true of an empty
    // set and the member stopped (exit 0) with most of its input unread.
    let c = config(|c| c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(0)));
    let (mut d, fake) = synced(&c, Gated::default(), &[0]);
    fake.queue(T, 0, 0..5);
    d.turn(&fake);
    drain_all(&d);
    fake.lose_assignment();
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    fake.report_eof();
    for _ in 0..3 {
        assert_eq!(
            d.turn(&fake),
            super::driver::Turn::Continue,
            "stopped while cut off from the group, holding no partition"
        );
    }
    // Back in the group: partition 0 again, read to its end, then idle.
    assign(&d, &[0]);
    fake.queue(T, 0, 5..8);
    let stopped = turns_until_stop(&mut d, &fake, 50);
    assert!(stopped.is_some(), "never idle after the new assignment");
}

/// A member that committed offset 5 of partition 0, then completed 5..12 while no
/// commit reached the broker (a network cut) and lost its assignment.
fn lost_after_completing() -> (Driver, FakeConsumer, Arc<StdMutex<Vec<i64>>>) {
    let processor = Gated::default();
    let seen = processor.seen.clone();
    let (mut d, fake) = synced(&config(|_| {}), processor, &[0]);
    fake.queue(T, 0, 0..5);
    d.turn(&fake);
    drain_all(&d);
    d.engine
        .commit_dirty(&fake, &mut d.engine.state.lock(), |_, _| true);
    assert_eq!(fake.committed(T, 0), Some(5));
    fake.queue(T, 0, 5..12);
    d.turn(&fake);
    drain_all(&d);
    fake.lose_assignment();
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    assert_eq!(
        fake.committed(T, 0),
        Some(5),
        "a lost partition commits nothing"
    );
    seen.lock().unwrap().clear();
    (d, fake, seen)
}

#[test]
fn what_was_completed_before_a_lost_assignment_is_skipped_when_it_comes_back() {
    let (mut d, fake, seen) = lost_after_completing();
    let map = d
        .engine
        .state
        .lock()
        .partitions
        .take_set_aside(T, 0, Committed::Known(Some(5)));
    let (_, map) = map.expect("set aside, the committed offset unchanged");
    assert_eq!((map.base(), map.completed()), (5, &[6..12][..]));
    d.engine.on_assign(
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
        vec![(TopicPartition::new(T, 0), map)],
    );
    fake.queue(T, 0, 5..12);
    d.turn(&fake);
    drain_all(&d);
    // Offset 5, the map's base, is processed again; 6..12 are not.
    assert_eq!(*seen.lock().unwrap(), vec![5]);
    assert_eq!(committable(&d, 0), Some(12));
}

#[test]
fn a_committed_offset_further_on_keeps_the_rest_and_one_moved_back_nothing() {
    // Committed 8 meanwhile (this member's commit sent during the cut and never
    // confirmed, or another member's progress): 9..12 are still done.
    let (d, _, _) = lost_after_completing();
    let (from, map) = d
        .engine
        .state
        .lock()
        .partitions
        .take_set_aside(T, 0, Committed::Known(Some(8)))
        .unwrap();
    assert_eq!((from, map.base(), map.completed()), (8, 8, &[9..12][..]));
    assert!(
        d.engine
            .state
            .lock()
            .partitions
            .take_set_aside(T, 0, Committed::Known(Some(8)))
            .is_none(),
        "taken"
    );
    // Moved back (a reset: process those again): nothing is skipped.
    let (d, _, _) = lost_after_completing();
    assert!(d
        .engine
        .state
        .lock()
        .partitions
        .take_set_aside(T, 0, Committed::Known(Some(3)))
        .is_none());
    // The group has no committed offset: the new assignment starts where the lost
    // one's first unconfirmed record was (5), skipping what it completed above.
    let (d, _, _) = lost_after_completing();
    let (from, map) = d
        .engine
        .state
        .lock()
        .partitions
        .take_set_aside(T, 0, Committed::Known(None))
        .unwrap();
    assert_eq!((from, map.completed()), (5, &[6..12][..]));
    // The look-up failed: the group may hold a commit of this member's whose answer
    // was lost (above 5); starting at 5 would move the committed offset back. Nothing
    // is skipped, librdkafka looks the committed offset up itself, and the state is
    // gone (the old code started at 5 here).
    let (d, _, _) = lost_after_completing();
    let mut st = d.engine.state.lock();
    assert!(st
        .partitions
        .take_set_aside(T, 0, Committed::Unknown)
        .is_none());
    assert!(
        st.partitions
            .take_set_aside(T, 0, Committed::Known(None))
            .is_none(),
        "taken"
    );
}

#[test]
fn the_idle_stop_waits_for_a_record_waiting_for_its_retry() {
    // A retriable failure with a long backoff: nothing is running, the partition is
    // at its end, but the record is not done.
    struct FailOnce(std::sync::atomic::AtomicBool);
    impl Processor for FailOnce {
        fn process(&self, _: &Record) -> ProcessResult {
            if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::processor::ProcessError::retriable("once"));
            }
            Ok(Outputs::none())
        }
    }
    let c = config(|c| {
        c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(0));
        c.failures.retry.initial_backoff = std::time::Duration::from_millis(50);
    });
    let mut d = driver(
        &c,
        CommitTarget::Group(CommitMode::Sync),
        FailOnce(Default::default()),
    );
    let fake = FakeConsumer::default();
    fake.report_eof();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..1);
    d.turn(&fake);
    drain_all(&d);
    assert!(turns_until_stop(&mut d, &fake, 10_000_000).is_some());
    assert_eq!(committable(&d, 0), Some(1), "stopped before the retry ran");
}

#[test]
fn a_record_completes_on_its_own_while_one_dispatched_with_it_is_stuck() {
    // One task (unordered: the round's records together) whose record 2 is stuck:
    // the others complete, the committable offset stops exactly at 2 and the
    // commit's offset map marks 3..6 complete, while the task is still running.
    let processor = Gated::blocking([2]);
    let open = processor.opener();
    let c = config(|c| c.ordering = crate::ordering::ProcessingOrder::Unordered);
    let (mut d, fake) = synced(&c, processor, &[0]);
    fake.queue(T, 0, 0..6);
    d.turn(&fake);
    assert_eq!(d.engine.state.lock().live.len(), 1, "one task");
    apply_until_in_flight(&d, 1);
    assert_eq!(committable(&d, 0), Some(2));
    {
        let engine = d.engine.clone();
        let mut st = engine.state.lock();
        engine.commit_dirty(&fake, &mut st, |_, _| true);
    }
    let commits = commits(&fake);
    let last = &commits.last().expect("a commit")[0];
    assert_eq!(last.offset, 2);
    let map = tidemark_offsets::OffsetMap::decode(&last.metadata).unwrap();
    assert_eq!(map.completed(), [3..6]);
    open();
    drain_all(&d);
    assert_eq!(committable(&d, 0), Some(6));
}

#[test]
fn back_pressure_takes_again_at_half_the_bound_while_a_stuck_record_runs() {
    // 10 records in flight at the bound of 10, one of them stuck: the other nine
    // complete, and records are taken again (below half the bound) without waiting
    // for the stuck one's task.
    let processor = Gated::blocking([0]);
    let open = processor.opener();
    let c = config(|c| {
        c.flow.max_in_flight_records = 10;
        c.ordering = crate::ordering::ProcessingOrder::Unordered;
    });
    let (mut d, fake) = synced(&c, processor, &[0]);
    fake.queue(T, 0, 0..50);
    d.turn(&fake);
    assert_eq!(fake.queued_len(T, 0), 40, "taken past the bound");
    apply_until_in_flight(&d, 1);
    d.turn(&fake); // below half the bound
    d.turn(&fake); // and this round takes records again
    assert!(
        fake.queued_len(T, 0) < 40,
        "nothing taken below half the bound"
    );
    open();
    drain_all(&d);
}

/// An async processor whose record at `stuck` awaits (without blocking a thread)
/// until opened.
struct AsyncGated {
    stuck: i64,
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl crate::AsyncProcessor for AsyncGated {
    async fn process(&self, record: &crate::Record) -> ProcessResult {
        while record.offset == self.stuck && !self.open.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(crate::Outputs::none())
    }
}

#[test]
fn an_async_record_completes_on_its_own_while_one_dispatched_with_it_awaits() {
    // The same as the blocking case above, through the async execution: the
    // completions come back the same way.
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let processor = AsyncGated {
        stuck: 2,
        open: open.clone(),
    };
    let c = config(|c| c.ordering = crate::ordering::ProcessingOrder::Unordered);
    let work =
        super::execution::Work::Async(Arc::new(super::execution::AsyncWork(Arc::new(processor))));
    let mut d = driver_with(&c, CommitTarget::Group(CommitMode::Sync), work);
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..6);
    d.turn(&fake);
    apply_until_in_flight(&d, 1);
    assert_eq!(committable(&d, 0), Some(2));
    open.store(true, std::sync::atomic::Ordering::Relaxed);
    drain_all(&d);
    assert_eq!(committable(&d, 0), Some(6));
}

/// An async processor with the batch form: records the size of every batch, and
/// returns no result for the record at `short_at` (if any).
#[derive(Default)]
struct AsyncBatches {
    sizes: Arc<Mutex<Vec<usize>>>,
    short_at: Option<i64>,
}

impl crate::AsyncProcessor for AsyncBatches {
    async fn process(&self, _: &crate::Record) -> ProcessResult {
        panic!("the batch form runs every record")
    }

    fn process_batch(
        &self,
        records: &[crate::Record],
    ) -> Option<impl std::future::Future<Output = Vec<ProcessResult>> + Send> {
        self.sizes.lock().push(records.len());
        let results: Vec<ProcessResult> = records
            .iter()
            .filter(|r| Some(r.offset) != self.short_at)
            .map(|_| Ok(crate::Outputs::none()))
            .collect();
        Some(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            results
        })
    }
}

fn async_driver(c: &Config, processor: AsyncBatches) -> Driver {
    let work =
        super::execution::Work::Async(Arc::new(super::execution::AsyncWork(Arc::new(processor))));
    driver_with(c, CommitTarget::Group(CommitMode::Sync), work)
}

#[test]
fn an_async_batch_runs_a_whole_layer_even_above_the_concurrency() {
    // Six records in one layer, four permits: the batch takes all four and runs.
    let processor = AsyncBatches::default();
    let sizes = processor.sizes.clone();
    let c = config(|c| {
        c.ordering = crate::ordering::ProcessingOrder::Unordered;
        c.concurrency = 4;
    });
    let mut d = async_driver(&c, processor);
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..6);
    d.turn(&fake);
    drain_all(&d);
    assert_eq!(*sizes.lock(), vec![6]);
    assert_eq!(committable(&d, 0), Some(6));
}

#[test]
fn a_record_without_a_batch_result_fails_and_stops_the_run_at_its_offset() {
    let processor = AsyncBatches {
        short_at: Some(3),
        ..AsyncBatches::default()
    };
    let c = config(|c| c.ordering = crate::ordering::ProcessingOrder::Unordered);
    let mut d = async_driver(&c, processor);
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..6);
    d.turn(&fake);
    drain_all(&d);
    assert!(d.engine.state.lock().must_stop());
    d.finish(&fake).unwrap();
    // Five results for six records: the last one (offset 5) has none.
    assert_eq!(
        fake.committed(T, 0),
        Some(5),
        "committed past the failed record"
    );
    let error = d.engine.state.lock().failures.take_error();
    match error {
        Some(Error::Processor { offset, source, .. }) => {
            assert_eq!(offset, 5);
            assert!(source.message.contains("no result"), "{}", source.message);
        }
        other => panic!("expected a processor error, got {other:?}"),
    }
}

/// Echoes each record to the sink (payload and key unchanged); fails permanently
/// at `fail_at`.
struct Echo {
    fail_at: Option<i64>,
}

impl Processor for Echo {
    fn process(&self, record: &Record) -> ProcessResult {
        if self.fail_at == Some(record.offset) {
            return Err(crate::processor::ProcessError::permanent("bad record"));
        }
        Ok(Outputs::one(
            record.key.clone(),
            record.payload.clone().unwrap_or_default(),
        ))
    }
}

fn blocking(processor: impl Processor) -> super::execution::Work {
    super::execution::Work::Blocking(Arc::new(processor))
}

#[test]
fn a_dead_letter_carries_its_coordinates_and_the_commit_passes_it() {
    let producer = FakeProducer::default();
    let sink = Sink::over(Box::new(producer.clone()), Some("out"), Some("dlq"));
    let c = config(|c| {
        c.failures.dead_letter = Some(crate::failures::DeadLetterConfig::new("dlq"));
    });
    let mut d = driver_over(
        &c,
        CommitTarget::Group(CommitMode::Sync),
        blocking(Echo { fail_at: Some(3) }),
        Some(Arc::new(sink)),
    );
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..10);
    d.turn(&fake);
    drain_all(&d);
    assert!(!d.engine.state.lock().must_stop());
    d.finish(&fake).unwrap();

    let log = producer.log();
    let dead: Vec<_> = log.visible.iter().filter(|p| p.topic == "dlq").collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = dead[0];
    assert_eq!(letter.payload.as_deref(), Some(&b"p3"[..]));
    assert_eq!(letter.header(crate::failures::HEADER_SRC_TOPIC), Some(T));
    assert_eq!(letter.header(crate::HEADER_SRC_PARTITION), Some("0"));
    assert_eq!(letter.header(crate::HEADER_SRC_OFFSET), Some("3"));
    assert!(letter
        .header(crate::failures::HEADER_ERROR)
        .is_some_and(|e| e.contains("bad record")));
    let mut outputs: Vec<i64> = log
        .visible
        .iter()
        .filter(|p| p.topic == "out")
        .map(|p| p.header(crate::HEADER_SRC_OFFSET).unwrap().parse().unwrap())
        .collect();
    outputs.sort();
    assert_eq!(outputs, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        fake.committed(T, 0),
        Some(10),
        "the dead letter is complete"
    );
}

/// An exactly-once driver echoing records to topic `out` through a fake
/// producer's transactions, and that producer.
fn exactly_once_driver() -> (Driver, FakeProducer) {
    let producer = FakeProducer::default();
    let sink = Arc::new(Sink::over(Box::new(producer.clone()), Some("out"), None));
    sink.start_transactions(Duration::from_secs(1)).unwrap();
    let c = config(|c| c.delivery = crate::config::Delivery::ExactlyOnce);
    let d = driver_over(
        &c,
        CommitTarget::Transaction(sink.clone()),
        blocking(Echo { fail_at: None }),
        Some(sink),
    );
    (d, producer)
}

#[test]
fn an_aborted_transaction_rewinds_and_only_committed_transactions_are_visible() {
    let (mut d, producer) = exactly_once_driver();
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..5);
    d.turn(&fake);
    producer.fail_commits(1);
    d.engine
        .commit_dirty(&fake, &mut d.engine.state.lock(), |_, _| true);

    // The failed commit aborted: nothing visible, the partition rewound to its
    // start under a new epoch.
    assert!(producer.log().visible.is_empty());
    assert_eq!(producer.log().aborted.len(), 5);
    assert!(fake.calls().contains(&Call::Seek(T.to_string(), 0, 0)));
    assert_eq!(
        committable(&d, 0),
        None,
        "nothing delivered since the rewind"
    );

    // The broker delivers the records again from there; this transaction commits.
    fake.queue(T, 0, 0..5);
    d.turn(&fake);
    d.engine
        .commit_dirty(&fake, &mut d.engine.state.lock(), |_, _| true);
    let log = producer.log();
    let mut visible: Vec<i64> = log
        .visible
        .iter()
        .map(|p| p.header(crate::HEADER_SRC_OFFSET).unwrap().parse().unwrap())
        .collect();
    visible.sort();
    assert_eq!(visible, [0, 1, 2, 3, 4], "each output once");
    assert_eq!(log.committed_offsets, [vec![at(0, 5)]]);
    assert_eq!(
        fake.committed(T, 0),
        None,
        "offsets go with the transaction"
    );
}

#[test]
fn a_revoke_under_exactly_once_commits_one_transaction_for_every_partition() {
    let (mut d, producer) = exactly_once_driver();
    let fake = FakeConsumer::default();
    assign(&d, &[0, 1]);
    fake.queue(T, 0, 0..3);
    fake.queue(T, 1, 0..4);
    d.turn(&fake);
    // Only partition 0 leaves, but the open transaction holds outputs of both: it
    // drains everything and commits both partitions' offsets with them.
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    let log = producer.log();
    assert_eq!(log.visible.len(), 7);
    assert!(log.open.is_empty() && log.aborted.is_empty());
    let mut offsets = log.committed_offsets.concat();
    offsets.sort();
    assert_eq!(offsets, [at(0, 3), at(1, 4)]);
    drop(log);
    let st = d.engine.state.lock();
    assert!(st.partitions.get(T, 0).is_none() && st.partitions.get(T, 1).is_some());
}

mod decorators;

/// librdkafka #5456/#5511: `send_offsets_to_transaction` can block for good. The
/// commit gives up after twice its timeout with `TransactionStuck` instead of
/// blocking the poll thread (and the run) for ever.
#[test]
fn a_transaction_commit_that_never_answers_is_reported_stuck() {
    let producer = FakeProducer::default();
    let sink = Arc::new(Sink::over(Box::new(producer.clone()), Some("out"), None));
    sink.start_transactions(Duration::from_secs(1)).unwrap();
    producer.hang_sending_offsets();
    let offsets = [crate::commit::PartitionOffset::new(T, 0, 5)];
    let err = sink
        .commit_transaction(
            &offsets,
            crate::engine::seams::sink::GroupMetadata::Fake,
            Duration::from_millis(50),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            crate::commit::CommitError::TransactionStuck { waited_ms: 100 }
        ),
        "got {err:?}"
    );
    assert!(producer.log().committed_offsets.is_empty());
}

/// A processor that logs its lifecycle hooks and how many records it had processed
/// when each ran, into the same log as the commits (through `on_commit`).
#[derive(Clone, Default)]
struct Hooked {
    log: Arc<StdMutex<Vec<String>>>,
    processed: Arc<std::sync::atomic::AtomicUsize>,
    panic_on_revoke: bool,
}

impl Processor for Hooked {
    fn process(&self, _: &Record) -> ProcessResult {
        self.processed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Outputs::none())
    }
    fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        self.note("assigned", partitions);
    }
    fn partitions_revoked(&self, partitions: &[TopicPartition]) {
        self.note("revoked", partitions);
        assert!(!self.panic_on_revoke, "flush failed");
    }
    fn partitions_lost(&self, partitions: &[TopicPartition]) {
        self.note("lost", partitions);
    }
    fn stopping(&self) {
        self.note("stopping", &[]);
    }
}

impl Hooked {
    fn note(&self, hook: &str, partitions: &[TopicPartition]) {
        let done = self.processed.load(std::sync::atomic::Ordering::SeqCst);
        let parts: Vec<String> = partitions.iter().map(ToString::to_string).collect();
        self.log
            .lock()
            .unwrap()
            .push(format!("{hook} {parts:?} after {done}"));
    }

    /// A driver over this processor whose commits land in the same log.
    fn driver(&self) -> Driver {
        let mut d = driver(
            &config(|_| {}),
            CommitTarget::Group(CommitMode::Sync),
            self.clone(),
        );
        let log = self.log.clone();
        Arc::get_mut(&mut d.engine)
            .expect("the driver owns its engine")
            .on_commit = Some(Arc::new(move |e: &CommitEvent| {
            let offsets: Vec<i64> = e.offsets.iter().map(|o| o.offset).collect();
            log.lock().unwrap().push(format!("commit {offsets:?}"));
        }));
        d
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Issue 32: assigned before any record; revoked after the partition's records
/// drained and before its final commit; lost with no commit; on stop, revoked for
/// what is still assigned, then stopping, then the final commit, and no hook after.
#[test]
fn lifecycle_hooks_run_between_drain_and_commit() {
    let p = Hooked::default();
    let mut d = p.driver();
    let fake = FakeConsumer::default();
    assign(&d, &[0, 1, 2]);
    // The revoke comes right after dispatch: the hook sees all 10 processed only
    // because the revoke drained them first.
    fake.queue(T, 0, 0..10);
    d.turn(&fake);
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    fake.queue(T, 1, 0..10);
    fake.queue(T, 2, 0..10);
    d.turn(&fake);
    drain_all(&d);
    fake.lose_assignment();
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 1)],
    );
    fake.keep_assignment();
    d.finish(&fake).unwrap();
    // Closing the consumer revokes what is left: no hook after `stopping`.
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 2)],
    );
    assert_eq!(
        p.log(),
        vec![
            format!("assigned [\"{T}:0\", \"{T}:1\", \"{T}:2\"] after 0"),
            format!("revoked [\"{T}:0\"] after 10"),
            "commit [10]".to_string(),
            format!("lost [\"{T}:1\"] after 30"),
            format!("revoked [\"{T}:2\"] after 30"),
            "stopping [] after 30".to_string(),
            "commit [10]".to_string(),
        ]
    );
}

/// A hook that panics stops the run with `Error::Hook`, naming it, and what it was
/// to flush is not committed (the next owner processes those records again).
#[test]
fn a_panicking_hook_stops_the_run_naming_it() {
    let p = Hooked {
        panic_on_revoke: true,
        ..Hooked::default()
    };
    let mut d = p.driver();
    let fake = FakeConsumer::default();
    assign(&d, &[0]);
    fake.queue(T, 0, 0..10);
    d.turn(&fake);
    d.engine.on_revoke(
        &fake,
        &mut d.engine.state.lock(),
        &[TopicPartition::new(T, 0)],
    );
    let st = d.engine.state.lock();
    assert!(
        matches!(&st.fatal, Some(Error::Hook { hook: "partitions_revoked", message }) if message.contains("flush failed")),
        "{:?}",
        st.fatal
    );
    drop(st);
    assert!(
        commits(&fake).is_empty(),
        "committed past state the hook did not flush"
    );
}
