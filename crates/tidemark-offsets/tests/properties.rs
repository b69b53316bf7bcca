//! Property tests of the committable-offset rule (the highest contiguous completed offset + 1) against a brute-force model.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tidemark_offsets::{Completion, Epoch, PartitionTracker};

const E: Epoch = Epoch(3);

/// The model: committable = lowest incomplete delivered offset, else highest delivered + 1.
fn model(delivered: &BTreeSet<i64>, completed: &BTreeSet<i64>) -> Option<i64> {
    delivered
        .difference(completed)
        .next()
        .copied()
        .or_else(|| delivered.iter().next_back().map(|h| h + 1))
}

#[derive(Debug, Clone)]
enum Op {
    /// Deliver the next offset after a gap of this many never-delivered offsets.
    Deliver { gap: u8 },
    /// Complete the n-th (mod count) currently incomplete offset.
    Complete { pick: usize },
    /// A completion from a stale epoch for the n-th incomplete offset.
    Stale { pick: usize },
    /// The coordinator confirms a commit of the current committable offset.
    Confirm,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![3 => Just(0u8), 1 => 1u8..20].prop_map(|gap| Op::Deliver { gap }),
        4 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Stale { pick }),
        1 => Just(Op::Confirm),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// For random delivered sets with gaps and random completion orders, the committable
    /// offset equals the model, never decreases, and never passes an incomplete offset.
    #[test]
    fn committable_follows_the_contiguous_completion_rule(
        start in 0i64..1_000_000,
        ops in proptest::collection::vec(op(), 0..400),
    ) {
        let mut tracker = PartitionTracker::new(E);
        let mut delivered = BTreeSet::new();
        let mut completed = BTreeSet::new();
        let mut next = start;
        let mut last: Option<i64> = None;
        let mut confirmed: Option<i64> = None;

        for op in ops {
            match op {
                Op::Confirm => {
                    if let Some(c) = tracker.committable() {
                        tracker.confirm_committed(c);
                        confirmed = Some(c);
                    }
                }
                Op::Deliver { gap } => {
                    next += gap as i64;
                    tracker.deliver(next).unwrap();
                    delivered.insert(next);
                    next += 1;
                }
                Op::Complete { pick } | Op::Stale { pick } => {
                    let incomplete: Vec<i64> = delivered.difference(&completed).copied().collect();
                    if incomplete.is_empty() {
                        continue;
                    }
                    let offset = incomplete[pick % incomplete.len()];
                    if let Op::Stale { .. } = op {
                        prop_assert_eq!(tracker.complete(Epoch(2), offset), Completion::StaleEpoch);
                    } else {
                        prop_assert_eq!(tracker.complete(E, offset), Completion::Completed);
                        completed.insert(offset);
                    }
                }
            }
            let now = tracker.committable();
            prop_assert_eq!(now, model(&delivered, &completed));
            prop_assert!(now >= last, "committable went back from {:?} to {:?}", last, now);
            if let Some(c) = now {
                for o in delivered.difference(&completed) {
                    prop_assert!(c <= *o, "committable {} passes incomplete offset {}", c, o);
                }
            }
            prop_assert_eq!(tracker.in_flight(), delivered.len() - completed.len());
            let uncommitted = delivered.iter().filter(|o| confirmed.is_none_or(|c| **o >= c)).count();
            prop_assert_eq!(tracker.uncommitted(), uncommitted);
            let above = completed.iter().filter(|o| now.is_some_and(|c| **o >= c)).count();
            prop_assert_eq!(tracker.completed_above_committable(), above);
            last = now;
        }
    }

    /// Memory follows what is uncommitted, not the offset range: once everything is
    /// complete and committed nothing is held, however large the gaps.
    #[test]
    fn nothing_is_held_once_all_complete(
        gaps in proptest::collection::vec(0i64..1_000_000, 1..200),
        seed in any::<u64>(),
    ) {
        let mut tracker = PartitionTracker::new(E);
        let mut offsets = Vec::new();
        let mut o = 0;
        for g in gaps {
            o += g + 1;
            tracker.deliver(o).unwrap();
            offsets.push(o);
        }
        // a deterministic shuffle from the seed
        let mut s = seed | 1;
        for i in (1..offsets.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            offsets.swap(i, (s % (i as u64 + 1)) as usize);
        }
        for off in &offsets {
            tracker.complete(E, *off);
        }
        prop_assert_eq!(tracker.committable(), Some(o + 1));
        tracker.confirm_committed(o + 1);
        prop_assert_eq!(tracker.uncommitted(), 0);
    }
}

proptest! {
    /// Re-fetching from an earlier position (rewind) then completing everything ends
    /// at the highest offset + 1, and the committable offset never goes back.
    #[test]
    fn rewinds_never_move_the_committable_offset_back(
        steps in proptest::collection::vec((1usize..50, 0usize..60, any::<u64>()), 1..30),
    ) {
        let mut tracker = PartitionTracker::new(E);
        let mut next = 0i64;
        let mut last = None;
        let mut outstanding: Vec<i64> = Vec::new();
        for (deliver, back, seed) in steps {
            let from = (next - back as i64).max(0);
            if from < next {
                tracker.rewind(from);
                outstanding.retain(|o| *o < from);
                next = from;
            }
            for _ in 0..deliver {
                tracker.deliver(next).unwrap();
                outstanding.push(next);
                next += 1;
            }
            // complete a pseudo-random half
            let mut s = seed | 1;
            outstanding.retain(|o| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                if s % 2 == 0 { tracker.complete(E, *o); false } else { true }
            });
            let now = tracker.committable();
            prop_assert!(now >= last, "committable went back from {:?} to {:?}", last, now);
            last = now;
        }
        for o in outstanding {
            tracker.complete(E, o);
        }
        prop_assert_eq!(tracker.committable(), Some(next.max(last.unwrap_or(0))));
        prop_assert_eq!(tracker.in_flight(), 0);
    }
}
