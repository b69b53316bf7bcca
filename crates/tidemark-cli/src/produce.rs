//! `tidemark produce`.

use anyhow::Context;
use tidemark_testkit::workload::{self, Workload};

/// Produce a JSON workload such as `{"id":7,"key":"k3","data":"..."}`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
    /// Topic to produce to; created with `--partitions` partitions when missing.
    #[arg(long)]
    topic: String,
    /// Number of records.
    #[arg(long)]
    records: u64,
    /// Partitions of the topic if it must be created.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Distinct keys (`k0`..); 0 = no key, records spread round-robin.
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Id of the first record (to append to an earlier workload).
    #[arg(long, default_value_t = 0)]
    first_id: u64,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.partitions > 0, "--partitions must be at least 1");
    let w = Workload {
        topic: a.topic.clone(),
        records: a.records,
        partitions: a.partitions,
        payload_bytes: a.payload_bytes,
        keys: a.keys,
        first_id: a.first_id,
        partition_by_id: false,
    };
    let bar = crate::spinner(&format!("producing to {}", a.topic));
    let started = std::time::Instant::now();
    let connection = a.cluster.connection()?;
    workload::produce(&connection, &w, |acked| bar.set_position(acked))
        .with_context(|| format!("producing to {} at {}", a.topic, connection.brokers))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {} records to {} in {:.2} s ({:.0} records/s)",
        a.records,
        a.topic,
        secs,
        a.records as f64 / secs.max(1e-9)
    );
    Ok(())
}
