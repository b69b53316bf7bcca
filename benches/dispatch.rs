//! Dispatch hot path on the worker side: a polled batch of one partition through
//! the default `Processor::process_batch` with a no-op processor, ns per record.
//! Outside the engine's pool the default runs the records in order on the calling
//! thread, so this is what the default body costs a record (panic guard, result
//! slot, claim) before any user work, without the fan-out to helpers.
//!
//! `cargo bench --bench dispatch`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidemark::{Outputs, ProcessResult, Processor, Record};

struct Noop;

impl Processor for Noop {
    fn process(&self, _: &Record) -> ProcessResult {
        Ok(Outputs::none())
    }
}

fn batch(n: usize) -> Vec<Record> {
    let topic: Arc<str> = Arc::from("bench");
    (0..n)
        .map(|i| Record::new(topic.clone(), 0, i as i64).with_payload(vec![b'x'; 100]))
        .collect()
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    for n in [125, 2_000] {
        let records = batch(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("process_batch noop, {n} records"), |b| {
            b.iter(|| Noop.process_batch(tidemark::Batch::new(&records)))
        });
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
