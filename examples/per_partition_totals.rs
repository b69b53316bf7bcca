//! Per-partition state with the lifecycle hooks: a running total of the input's
//! payload bytes per partition, built when a partition is assigned and written out
//! when it is revoked or the pipeline stops — after the partition's records drained
//! and before the commit that covers them, so a total written here never misses a
//! record that the commit says is done. A lost assignment drops its totals (another
//! member owns those records now and will count them again from the committed
//! offset).
//!
//! ```text
//! cargo run --release --example per_partition_totals -- BROKERS INPUT GROUP
//! ```
//! Writes one line per flush to standard output: `TOPIC:PARTITION records bytes`.
//! Stops on Ctrl-C or SIGTERM (drain, flush, final commit) or after 5 s without
//! records.

use std::collections::HashMap;
use std::sync::Mutex;

use tidemark::{Config, Outputs, Pipeline, ProcessResult, Processor, Record, TopicPartition};

/// Records and payload bytes seen per partition since it was assigned.
#[derive(Default)]
struct Totals {
    by_partition: Mutex<HashMap<TopicPartition, (u64, u64)>>,
}

impl Totals {
    /// Writes out and forgets the totals of `partitions` (a real application writes
    /// them to its store here, synchronously: the commit follows).
    fn flush(&self, partitions: &[TopicPartition]) {
        let mut totals = self.by_partition.lock().unwrap();
        for tp in partitions {
            if let Some((records, bytes)) = totals.remove(tp) {
                println!("{tp} {records} {bytes}");
            }
        }
    }
}

impl Processor for Totals {
    fn process(&self, record: &Record) -> ProcessResult {
        let tp = TopicPartition::new(record.topic.clone(), record.partition);
        let bytes = record.payload.as_deref().map_or(0, <[u8]>::len) as u64;
        let mut totals = self.by_partition.lock().unwrap();
        let entry = totals.entry(tp).or_default();
        entry.0 += 1;
        entry.1 += bytes;
        Ok(Outputs::none())
    }

    fn partitions_assigned(&self, partitions: &[TopicPartition]) {
        let mut totals = self.by_partition.lock().unwrap();
        for tp in partitions {
            totals.insert(tp.clone(), (0, 0));
        }
    }

    fn partitions_revoked(&self, partitions: &[TopicPartition]) {
        self.flush(partitions);
    }

    fn partitions_lost(&self, partitions: &[TopicPartition]) {
        let mut totals = self.by_partition.lock().unwrap();
        for tp in partitions {
            totals.remove(tp);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, input, group] = args.as_slice() else {
        return Err("usage: per_partition_totals BROKERS INPUT GROUP".into());
    };
    let mut config = Config::new(brokers, group, [input]);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(5_000));
    let pipeline = Pipeline::new(config, Totals::default());
    pipeline.shutdown_handle().stop_on_signals()?;
    let summary = pipeline.run()?;
    eprintln!("{} records", summary.records);
    Ok(())
}
