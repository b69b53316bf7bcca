//! Properties of the offset-map codec: it round-trips any completion set, never
//! exceeds its byte budget, keeps a prefix (never marks an offset complete that was
//! not), and rejects any other string without panicking.

use std::collections::BTreeSet;
use std::ops::Range;

use proptest::prelude::*;
use tidemark_offsets::{Epoch, OffsetMap, PartitionTracker};

/// Disjoint, ascending, non-adjacent ranges above `base`, built from gap/length pairs.
fn ranges(base: i64, pairs: &[(u16, u16)]) -> Vec<Range<i64>> {
    let mut at = base + 1;
    let mut out = Vec::new();
    for (gap, len) in pairs {
        let start = at + i64::from(*gap) + if out.is_empty() { 0 } else { 1 };
        let end = start + 1 + i64::from(*len);
        out.push(start..end);
        at = end;
    }
    out
}

fn set(ranges: &[Range<i64>]) -> BTreeSet<i64> {
    ranges.iter().flat_map(|r| r.clone()).collect()
}

proptest! {
    #[test]
    fn round_trip_with_room(base in 0i64..1 << 50, pairs in prop::collection::vec((0u16..300, 0u16..300), 0..60)) {
        let completed = ranges(base, &pairs);
        let e = OffsetMap::encode(base, completed.clone(), usize::MAX);
        prop_assert_eq!(e.dropped, 0);
        if completed.is_empty() {
            prop_assert_eq!(e.metadata, "");
        } else {
            let m = OffsetMap::decode(&e.metadata).unwrap();
            prop_assert_eq!(m.base(), base);
            prop_assert_eq!(m.completed(), completed.as_slice());
            prop_assert_eq!(m.end(), completed.last().unwrap().end);
            prop_assert!(e.metadata.is_ascii());
        }
    }

    #[test]
    fn budget_is_never_exceeded_and_keeps_a_prefix(
        base in 0i64..1 << 40,
        pairs in prop::collection::vec((0u16..50, 0u16..20), 1..400),
        budget in 0usize..600,
    ) {
        let completed = ranges(base, &pairs);
        let e = OffsetMap::encode(base, completed.clone(), budget);
        prop_assert!(e.metadata.len() <= budget);
        let all = set(&completed);
        if e.metadata.is_empty() {
            prop_assert_eq!(e.end, base);
            prop_assert_eq!(e.dropped, all.len() as u64);
        } else {
            let m = OffsetMap::decode(&e.metadata).unwrap();
            let kept = set(m.completed());
            // A prefix: exactly the complete offsets below the end.
            let below: BTreeSet<i64> = all.range(..m.end()).copied().collect();
            prop_assert_eq!(&kept, &below);
            prop_assert_eq!(e.end, m.end());
            prop_assert_eq!(e.dropped, (all.len() - kept.len()) as u64);
            // Nothing marked complete that was not.
            for o in base..m.end() {
                prop_assert_eq!(m.contains(o), all.contains(&o));
            }
        }
    }

    #[test]
    fn decoding_arbitrary_strings_never_panics(s in ".{0,64}") {
        let _ = OffsetMap::decode(&s);
        let _ = OffsetMap::decode(&format!("tdm1:{s}"));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        use base64::Engine as _;
        let text = format!("tdm1:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
        if let Ok(m) = OffsetMap::decode(&text) {
            // Whatever decodes is a well-formed map.
            prop_assert!(m.base() <= m.end());
            for w in m.completed().windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            for r in m.completed() {
                prop_assert!(r.start < r.end && m.base() <= r.start && r.end <= m.end());
            }
        }
    }

    /// The tracker's ranges, encoded at its committable offset, mark exactly the
    /// completed delivered offsets above it.
    #[test]
    fn tracker_ranges_encode_its_completions(
        delivered in prop::collection::btree_set(0i64..2000, 1..300),
        done_mask in prop::collection::vec(any::<bool>(), 300),
    ) {
        let e1 = Epoch(1);
        let mut t = PartitionTracker::new(e1);
        let offsets: Vec<i64> = delivered.into_iter().collect();
        for o in &offsets {
            t.deliver(*o).unwrap();
        }
        for (o, done) in offsets.iter().zip(&done_mask) {
            if *done {
                t.complete(e1, *o);
            }
        }
        let base = t.committable().unwrap();
        let e = OffsetMap::encode(base, t.completed_ranges(), usize::MAX);
        let map = (!e.metadata.is_empty()).then(|| OffsetMap::decode(&e.metadata).unwrap());
        for (o, done) in offsets.iter().zip(&done_mask) {
            let marked = map.as_ref().is_some_and(|m| m.contains(*o));
            if *o > base {
                prop_assert_eq!(marked, *done, "offset {}", o);
            } else {
                prop_assert!(!marked);
            }
        }
    }
}
