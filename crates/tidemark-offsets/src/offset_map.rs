//! The offset map: the completed offsets *above* a partition's committed offset, as a
//! compact printable string for the metadata field of Kafka's OffsetCommit (the
//! `metadata` of `OffsetAndMetadata`, at most `offset.metadata.max.bytes` = 4096
//! bytes by default on the broker), so that a partition's next owner skips work the
//! previous owner already completed (docs/DESIGN.md, "The offset map").
//!
//! # Format (version 1)
//!
//! `tdm1:` followed by unpadded URL-safe base64 (RFC 4648 §5) of:
//!
//! | field    | encoding                                                          |
//! |----------|-------------------------------------------------------------------|
//! | `base`   | unsigned LEB128: the committed offset the map belongs to          |
//! | `length` | unsigned LEB128: the map covers offsets `base .. base + length`   |
//! | `kind`   | one byte: `0` run lengths, `1` bitmap                             |
//! | payload  | run lengths: LEB128 lengths of alternating incomplete / complete runs, starting with an incomplete one (which may be empty), ending with a complete one, summing to `length`; bitmap: `ceil(length / 8)` bytes, bit `i` (LSB first) set when `base + i` is complete, unused bits zero |
//!
//! The encoder writes whichever payload is smaller. Everything at or above
//! `base + length` is *not* known complete: a new owner processes it. A string that
//! does not start with `tdm1:` or breaks any rule above is rejected with a
//! [`MapError`], never a panic.

use std::fmt;
use std::ops::Range;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The prefix of every version-1 offset map.
pub const PREFIX: &str = "tdm1:";

/// Kafka's default `offset.metadata.max.bytes` (broker configuration): the largest
/// commit metadata the group coordinator accepts, in bytes.
pub const KAFKA_METADATA_MAX_BYTES: usize = 4096;

const KIND_RUNS: u8 = 0;
const KIND_BITMAP: u8 = 1;

/// Why [`OffsetMap::decode`] rejected a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The string is not a tidemark offset map (another tool's metadata, or a future
    /// version).
    #[error("not a tidemark offset map (expected the prefix {PREFIX:?})")]
    Foreign,
    /// The text after the prefix is not unpadded URL-safe base64.
    #[error("offset map is not valid base64")]
    Base64,
    /// The bytes end before a field does.
    #[error("offset map is truncated")]
    Truncated,
    /// A field has a value no encoder writes (an unknown kind, a number that
    /// overflows, runs that do not add up to the length, set padding bits, bytes
    /// after the payload).
    #[error("offset map is malformed: {0}")]
    Malformed(&'static str),
}

/// The decoded map of one partition: which offsets in `base .. end` are complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetMap {
    base: i64,
    end: i64,
    /// Complete offsets as disjoint, ascending, non-adjacent ranges in `base..end`.
    completed: Vec<Range<i64>>,
}

/// What [`OffsetMap::encode`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The metadata string: empty when there is nothing to record (no completed
    /// offset above `base`, or a budget too small for even one run).
    pub metadata: String,
    /// The first offset the string says nothing about: completed offsets at or above
    /// it did not fit in the budget and will be processed again by a new owner.
    /// Equals `base` when `metadata` is empty.
    pub end: i64,
    /// Completed offsets left out because of the budget.
    pub dropped: u64,
}

impl OffsetMap {
    /// Encodes the completed offsets above `base` (the committed offset: the next
    /// offset to read, itself incomplete) in at most `budget_bytes` bytes of
    /// metadata.
    ///
    /// `completed`: disjoint ascending ranges of complete offsets, each above
    /// `base`; ranges at or below `base` are ignored. When the whole set does not
    /// fit, the longest prefix of whole ranges that fits is encoded (never part
    /// of a range: ending inside a run of complete offsets saves nothing worth the
    /// bytes) and [`Encoded::end`] says where it stops — records above it are
    /// redone by a new owner, none is skipped wrongly.
    ///
    /// Time: O(ranges); memory: O(ranges) plus the output.
    pub fn encode(
        base: i64,
        completed: impl IntoIterator<Item = Range<i64>>,
        budget_bytes: usize,
    ) -> Encoded {
        let empty = |dropped| Encoded {
            metadata: String::new(),
            end: base,
            dropped,
        };
        if base < 0 {
            return empty(0);
        }
        // Run lengths: (incomplete, complete) pairs, and the RLE payload bytes up
        // to each pair.
        let mut pairs: Vec<(u64, u64)> = Vec::new();
        let mut run_bytes: Vec<usize> = Vec::new();
        let mut cursor = base;
        let mut total = 0usize;
        let mut count = 0u64;
        for r in completed {
            let start = r.start.max(cursor).max(base + 1);
            if r.end <= start {
                continue;
            }
            let gap = (start - cursor) as u64;
            let len = (r.end - start) as u64;
            count += len;
            cursor = r.end;
            match (gap, pairs.last_mut(), run_bytes.last_mut()) {
                // Adjacent to the previous range: one run.
                (0, Some(last), Some(bytes)) => {
                    total = total - leb_len(last.1) + leb_len(last.1 + len);
                    last.1 += len;
                    *bytes = total;
                }
                _ => {
                    total += leb_len(gap) + leb_len(len);
                    pairs.push((gap, len));
                    run_bytes.push(total);
                }
            }
        }
        if pairs.is_empty() {
            return empty(0);
        }
        // The encoded size of the prefix ending with pair k only grows with k; find
        // the largest k that fits.
        let size_of = |k: usize| -> (usize, u8) {
            let end: u64 = pairs[..=k].iter().map(|(g, l)| g + l).sum();
            let bitmap = end.div_ceil(8) as usize;
            let (payload, kind) = if bitmap < run_bytes[k] {
                (bitmap, KIND_BITMAP)
            } else {
                (run_bytes[k], KIND_RUNS)
            };
            let raw = leb_len(base as u64) + leb_len(end) + 1 + payload;
            (PREFIX.len() + (raw * 4).div_ceil(3), kind)
        };
        let fits = |k: usize| size_of(k).0 <= budget_bytes;
        if !fits(0) {
            return empty(count);
        }
        let (mut lo, mut hi) = (0usize, pairs.len() - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let k = lo;
        let kept = &pairs[..=k];
        let length: u64 = kept.iter().map(|(g, l)| g + l).sum();
        let kept_count: u64 = kept.iter().map(|(_, l)| l).sum();
        let (_, kind) = size_of(k);
        let mut raw = Vec::with_capacity(20 + run_bytes[k]);
        put_leb(&mut raw, base as u64);
        put_leb(&mut raw, length);
        raw.push(kind);
        if kind == KIND_RUNS {
            for (gap, len) in kept {
                put_leb(&mut raw, *gap);
                put_leb(&mut raw, *len);
            }
        } else {
            let mut bits = vec![0u8; length.div_ceil(8) as usize];
            let mut at = 0u64;
            for (gap, len) in kept {
                at += gap;
                for i in at..at + len {
                    bits[(i / 8) as usize] |= 1 << (i % 8);
                }
                at += len;
            }
            raw.extend_from_slice(&bits);
        }
        let mut metadata = String::with_capacity(PREFIX.len() + (raw.len() * 4).div_ceil(3));
        metadata.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&raw, &mut metadata);
        debug_assert!(metadata.len() <= budget_bytes);
        Encoded {
            metadata,
            end: base + length as i64,
            dropped: count - kept_count,
        }
    }

    /// Decodes a metadata string written by [`encode`](Self::encode).
    ///
    /// # Errors
    /// [`MapError::Foreign`] when `metadata` is not a tidemark map (e.g. another
    /// tool's metadata), [`MapError::Base64`], [`MapError::Truncated`] or
    /// [`MapError::Malformed`] when it is damaged. Never panics, whatever the input.
    pub fn decode(metadata: &str) -> Result<OffsetMap, MapError> {
        let body = metadata.strip_prefix(PREFIX).ok_or(MapError::Foreign)?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| MapError::Base64)?;
        let mut input = raw.as_slice();
        let base = take_leb(&mut input)?;
        let length = take_leb(&mut input)?;
        let base = i64::try_from(base).map_err(|_| MapError::Malformed("base out of range"))?;
        let end = i64::try_from(length)
            .ok()
            .and_then(|l| base.checked_add(l))
            .ok_or(MapError::Malformed("length out of range"))?;
        let (&kind, mut payload) = input.split_first().ok_or(MapError::Truncated)?;
        let mut completed = Vec::new();
        match kind {
            KIND_RUNS => {
                let mut at = base;
                while !payload.is_empty() {
                    let gap = take_leb(&mut payload)?;
                    let len = take_leb(&mut payload)?;
                    if len == 0 || (gap == 0 && !completed.is_empty()) {
                        return Err(MapError::Malformed("empty run"));
                    }
                    let start = add(at, gap)?;
                    let stop = add(start, len)?;
                    if stop > end {
                        return Err(MapError::Malformed("runs exceed the length"));
                    }
                    completed.push(start..stop);
                    at = stop;
                }
                if at != end {
                    return Err(MapError::Malformed("runs do not add up to the length"));
                }
            }
            KIND_BITMAP => {
                if payload.len() as u64 != length.div_ceil(8) {
                    return Err(MapError::Malformed("bitmap size differs from the length"));
                }
                let used = length % 8;
                if used != 0 && payload[payload.len() - 1] >> used != 0 {
                    return Err(MapError::Malformed("bits set past the length"));
                }
                let mut open: Option<i64> = None;
                for (i, byte) in payload.iter().enumerate() {
                    for bit in 0..8 {
                        let offset = base + (i * 8 + bit) as i64;
                        match (byte >> bit & 1 == 1, open) {
                            (true, None) => open = Some(offset),
                            (false, Some(start)) => {
                                completed.push(start..offset);
                                open = None;
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(start) = open {
                    completed.push(start..end);
                }
                payload = &[];
            }
            _ => return Err(MapError::Malformed("unknown kind")),
        }
        if !payload.is_empty() {
            return Err(MapError::Malformed("bytes after the payload"));
        }
        Ok(OffsetMap {
            base,
            end,
            completed,
        })
    }

    /// The committed offset this map belongs to: it is only valid with a committed
    /// offset equal to it.
    pub fn base(&self) -> i64 {
        self.base
    }

    /// The first offset the map says nothing about.
    pub fn end(&self) -> i64 {
        self.end
    }

    /// The complete offsets, as disjoint ascending ranges.
    pub fn completed(&self) -> &[Range<i64>] {
        &self.completed
    }

    /// How many offsets the map marks complete.
    pub fn completed_count(&self) -> u64 {
        self.completed
            .iter()
            .map(|r| (r.end - r.start) as u64)
            .sum()
    }

    /// True when the map marks `offset` complete. O(log ranges).
    pub fn contains(&self, offset: i64) -> bool {
        let i = self.completed.partition_point(|r| r.end <= offset);
        self.completed.get(i).is_some_and(|r| r.start <= offset)
    }
}

impl fmt::Display for OffsetMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} complete in {}..{}",
            self.completed_count(),
            self.base,
            self.end
        )
    }
}

fn add(at: i64, n: u64) -> Result<i64, MapError> {
    i64::try_from(n)
        .ok()
        .and_then(|n| at.checked_add(n))
        .ok_or(MapError::Malformed("offset out of range"))
}

fn leb_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_leb(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_leb(input: &mut &[u8]) -> Result<u64, MapError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or(MapError::Truncated)?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(MapError::Malformed("number overflows 64 bits"));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(MapError::Malformed("number overflows 64 bits"))
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // ranges of offsets, meant as one element
mod tests {
    use super::*;

    #[test]
    fn round_trip_picks_the_smaller_payload() {
        // Few long runs: run lengths win.
        let e = OffsetMap::encode(100, [105..200, 300..301], 4096);
        let m = OffsetMap::decode(&e.metadata).unwrap();
        assert_eq!((m.base(), m.end()), (100, 301));
        assert_eq!(m.completed(), &[105..200, 300..301]);
        assert!(!m.contains(100) && m.contains(105) && !m.contains(200) && m.contains(300));
        assert_eq!(e.dropped, 0);
        // Every other offset: a bitmap is smaller than 2 bytes per offset.
        let alternate: Vec<_> = (0..200).map(|i| 1 + 2 * i..2 + 2 * i).collect();
        let e = OffsetMap::encode(0, alternate.clone(), 4096);
        let m = OffsetMap::decode(&e.metadata).unwrap();
        assert_eq!(m.completed(), alternate.as_slice());
        assert!(e.metadata.len() < 100, "{}", e.metadata.len());
    }

    #[test]
    fn nothing_above_base_is_empty() {
        let e = OffsetMap::encode(10, [3..10], 4096);
        assert_eq!(e.metadata, "");
        assert_eq!(e.end, 10);
        // A range that starts at the base starts above it (the base is incomplete).
        let e = OffsetMap::encode(10, [10..12], 4096);
        assert_eq!(
            OffsetMap::decode(&e.metadata).unwrap().completed(),
            &[11..12]
        );
    }

    #[test]
    fn budget_keeps_a_prefix_of_whole_ranges() {
        let ranges: Vec<_> = (0..1000).map(|i| 10 * i + 5..10 * i + 8).collect();
        let e = OffsetMap::encode(0, ranges.clone(), 64);
        assert!(e.metadata.len() <= 64);
        let m = OffsetMap::decode(&e.metadata).unwrap();
        let kept = m.completed().len();
        assert!(kept > 0 && kept < 1000);
        assert_eq!(m.completed(), &ranges[..kept]);
        assert_eq!(m.end(), ranges[kept - 1].end);
        assert_eq!(e.end, m.end());
        assert_eq!(e.dropped, 3 * (1000 - kept as u64));
        assert_eq!(OffsetMap::encode(0, ranges, 8).metadata, "");
    }

    #[test]
    fn foreign_and_damaged_strings_are_errors() {
        assert_eq!(OffsetMap::decode(""), Err(MapError::Foreign));
        assert_eq!(OffsetMap::decode("my app v2"), Err(MapError::Foreign));
        assert_eq!(OffsetMap::decode("tdm1:!!"), Err(MapError::Base64));
        assert_eq!(OffsetMap::decode("tdm1:"), Err(MapError::Truncated));
        let good = OffsetMap::encode(7, [9..12], 4096).metadata;
        let mut raw = URL_SAFE_NO_PAD.decode(&good[PREFIX.len()..]).unwrap();
        raw.push(1);
        let extra = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
        assert!(matches!(
            OffsetMap::decode(&extra),
            Err(MapError::Malformed(_))
        ));
    }
}
