//! A CPU-bound pipeline: each record's payload is hashed with a chain of SHA-256
//! rounds and the hex digest produced to an output topic.
//!
//! ```text
//! cargo run --release --example sha256_pipeline -- BROKERS INPUT OUTPUT GROUP
//! ```
//! Stops on Ctrl-C or SIGTERM (drain, final commit; `ShutdownHandle::stop_on_signals`)
//! or after 5 s without records.

use sha2::{Digest, Sha256};
use tidemark::{Config, Outputs, Pipeline, ProcessResult, Processor, Record, SinkConfig};

struct Sha256Chain {
    rounds: u32,
}

impl Processor for Sha256Chain {
    fn process(&self, record: &Record) -> ProcessResult {
        let mut digest: [u8; 32] =
            Sha256::digest(record.payload.as_deref().unwrap_or_default()).into();
        for _ in 1..self.rounds {
            digest = Sha256::digest(digest).into();
        }
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Outputs::one(record.key.clone(), hex.into_bytes()))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, input, output, group] = args.as_slice() else {
        return Err("usage: sha256_pipeline BROKERS INPUT OUTPUT GROUP".into());
    };
    let mut config = Config::new(brokers, group, [input]);
    config.sink = SinkConfig::Topic {
        topic: output.clone(),
    };
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(5_000));
    let pipeline = Pipeline::new(config, Sha256Chain { rounds: 100 }).on_commit(|event| {
        if let Err(e) = &event.result {
            eprintln!("commit failed: {e}");
        }
    });
    // Ctrl-C or SIGTERM: drain, final commit (a second one aborts).
    pipeline.shutdown_handle().stop_on_signals()?;
    let summary = pipeline.run()?;
    println!(
        "{} records, {:.0} records/s",
        summary.records,
        summary.records_per_sec()
    );
    Ok(())
}
