//! Property tests of the watermark rule against a brute-force model.

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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![3 => Just(0u8), 1 => 1u8..20].prop_map(|gap| Op::Deliver { gap }),
        4 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Stale { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// For random delivered sets with gaps and random completion orders, the committable
    /// offset equals the model, never decreases, and never passes an incomplete offset.
    #[test]
    fn committable_follows_the_watermark_rule(
        start in 0i64..1_000_000,
        ops in proptest::collection::vec(op(), 0..400),
    ) {
        let mut tracker = PartitionTracker::new(E);
        let mut delivered = BTreeSet::new();
        let mut completed = BTreeSet::new();
        let mut next = start;
        let mut last: Option<i64> = None;

        for op in ops {
            match op {
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
            last = now;
        }
    }

    /// Memory follows what is in flight, not the offset range: once everything is
    /// complete nothing is held, however large the gaps.
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
        prop_assert_eq!(tracker.tracked(), 0);
        prop_assert_eq!(tracker.committable(), Some(o + 1));
    }
}
