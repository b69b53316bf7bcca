//! The walk over a task's layers that both executions share (the worker pool's
//! `run_task` and the runtime's `run_task_async`). A task stores its lanes' chains
//! layer by layer (`scheduling::scheduler`): layer `n` is
//! `records[n * layer .. (n + 1) * layer]`, and position `j` of every layer belongs
//! to the same lane. A lane stops at its first failure: its later records are not
//! run but come back *skipped*, to be requeued behind the failed record.

use std::borrow::Cow;

use crate::record::Record;

/// The layers of one task, in order, with the lanes stopped so far.
pub(in crate::engine) struct LayerWalk<'a> {
    records: &'a [Record],
    layer: usize,
    /// Per lane (position within a layer): it failed in an earlier layer.
    stopped: Vec<bool>,
    any_stopped: bool,
    base: usize,
}

/// One layer of a task: what runs and what is skipped.
pub(in crate::engine) struct LayerStep<'a> {
    /// The task positions of the records that run, ascending.
    pub(in crate::engine) live: Vec<usize>,
    /// Those records, in the same order: borrowed from the task while no lane has
    /// stopped (the common case), copied otherwise.
    pub(in crate::engine) records: Cow<'a, [Record]>,
    /// The records of stopped lanes in this layer.
    pub(in crate::engine) skipped: Vec<Record>,
}

impl<'a> LayerWalk<'a> {
    /// The walk over `records` stored in layers of `layer` records (0 counts as 1).
    pub(in crate::engine) fn new(records: &'a [Record], layer: usize) -> Self {
        let layer = layer.max(1);
        LayerWalk {
            records,
            layer,
            stopped: vec![false; layer],
            any_stopped: false,
            base: 0,
        }
    }

    /// The next layer, `None` after the last.
    pub(in crate::engine) fn next_layer(&mut self) -> Option<LayerStep<'a>> {
        if self.base >= self.records.len() {
            return None;
        }
        let (base, end) = (self.base, (self.base + self.layer).min(self.records.len()));
        self.base = end;
        let chunk = &self.records[base..end];
        if !self.any_stopped {
            return Some(LayerStep {
                live: (base..end).collect(),
                records: Cow::Borrowed(chunk),
                skipped: Vec::new(),
            });
        }
        let (mut live, mut records, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for (j, record) in chunk.iter().enumerate() {
            if self.stopped[j] {
                skipped.push(record.clone());
            } else {
                live.push(base + j);
                records.push(record.clone());
            }
        }
        Some(LayerStep {
            live,
            records: Cow::Owned(records),
            skipped,
        })
    }

    /// The record at task position `position` failed: its lane stops.
    pub(in crate::engine) fn fail(&mut self, position: usize) {
        self.stopped[position % self.layer] = true;
        self.any_stopped = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rec(offset: i64) -> Record {
        Record {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: None,
            key: None,
            payload: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_failed_lane_skips_the_rest_of_its_chain_only() {
        // Three lanes of chains 0,3,6 / 1,4,7 / 2,5.
        let records: Vec<Record> = (0..8).map(rec).collect();
        let mut walk = LayerWalk::new(&records, 3);
        let first = walk.next_layer().unwrap();
        assert_eq!(first.live, vec![0, 1, 2]);
        assert!(matches!(first.records, Cow::Borrowed(_)));
        walk.fail(1);
        let second = walk.next_layer().unwrap();
        assert_eq!(second.live, vec![3, 5]);
        let offsets = |rs: &[Record]| rs.iter().map(|r| r.offset).collect::<Vec<_>>();
        assert_eq!(offsets(&second.records), vec![3, 5]);
        assert_eq!(offsets(&second.skipped), vec![4]);
        let third = walk.next_layer().unwrap();
        assert_eq!((third.live, offsets(&third.skipped)), (vec![6], vec![7]));
        assert!(walk.next_layer().is_none());
    }
}
