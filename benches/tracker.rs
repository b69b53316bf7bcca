//! Tracker hot path: deliver + out-of-order complete, ns per record.
//!
//! `cargo bench --bench tracker`. Each iteration delivers a window of records and
//! completes them in a scrambled order (as a parallel pool would), the watermark
//! advancing as gaps close.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tidemark::offsets::{Epoch, PartitionTracker};

const WINDOW: usize = 1_000;
const ROUNDS: usize = 100;

/// A fixed scrambled completion order of `0..WINDOW` (xorshift shuffle).
fn scrambled() -> Vec<usize> {
    let mut order: Vec<usize> = (0..WINDOW).collect();
    let mut s = 0x9e3779b97f4a7c15u64;
    for i in (1..order.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    order
}

fn run(tracker: &mut PartitionTracker, order: &[usize], gap: i64) -> i64 {
    let epoch = tracker.epoch();
    let mut base = tracker.committable().unwrap_or(0);
    for _ in 0..ROUNDS {
        for i in 0..WINDOW as i64 {
            tracker.deliver(base + i * gap).unwrap();
        }
        for &i in order {
            tracker.complete(epoch, base + i as i64 * gap);
        }
        // The engine confirms a commit now and then; that is what releases memory.
        tracker.confirm_committed(tracker.committable().unwrap());
        base += WINDOW as i64 * gap;
    }
    tracker.committable().unwrap()
}

fn bench(c: &mut Criterion) {
    let order = scrambled();
    let mut group = c.benchmark_group("tracker");
    group.throughput(Throughput::Elements((WINDOW * ROUNDS) as u64));
    group.bench_function("deliver+complete contiguous, window 1000", |b| {
        b.iter_batched_ref(
            || PartitionTracker::new(Epoch(1)),
            |t| run(t, &order, 1),
            BatchSize::SmallInput,
        )
    });
    group.bench_function(
        "deliver+complete with gaps (every other offset), window 1000",
        |b| {
            b.iter_batched_ref(
                || PartitionTracker::new(Epoch(1)),
                |t| run(t, &order, 2),
                BatchSize::SmallInput,
            )
        },
    );
    let in_order: Vec<usize> = (0..WINDOW).collect();
    group.bench_function("deliver+complete in order, window 1000", |b| {
        b.iter_batched_ref(
            || PartitionTracker::new(Epoch(1)),
            |t| run(t, &in_order, 1),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
