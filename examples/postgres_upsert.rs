//! Kafka into a PostgreSQL table of your own shape, each record's effect exactly
//! once: the idempotent-consumer pattern.
//!
//! Each record (the JSON workload of `tidemark produce --keys N`: `{"id", "key",
//! "data"}`) updates the row of its key in `events_by_key`: the latest id, how many
//! records the key has had, and the offset of the last one applied — the row's
//! *version*. A batch of records goes to the database as one upsert
//! (`AsyncProcessor::process_batch`), and the upsert changes a row only when the
//! record is newer than the row's version:
//!
//! ```sql
//! INSERT INTO events_by_key AS t (key, last_id, records, src_partition, src_offset) ...
//! ON CONFLICT (key) DO UPDATE SET ..., records = t.records + 1
//!   WHERE t.src_offset < EXCLUDED.src_offset
//! ```
//!
//! **What this guarantees**: tidemark is at-least-once — after a crash or a
//! rebalance the next owner of a partition processes again the records after the
//! committed offset — and a record processed again finds its key's version at or past
//! its offset and changes nothing, so `records` counts each input exactly once.
//! This needs what the pipeline's configuration gives: `ProcessingOrder::Key` (a
//! key's records are applied one after another in offset order, and a batch never
//! holds two of one key) and keys that stay in one partition (Kafka's default
//! partitioner), so that offsets order a key's records.
//!
//! **What it does not**: side effects outside the database transaction (an email,
//! an HTTP call) happen again with the record; and a write that is not guarded by the
//! version (an `INSERT` without a key, a counter updated unconditionally) is applied
//! twice.
//!
//! Failures: a payload that is not the workload's JSON fails its record permanently
//! (the dead-letter topic, else the run stops); the database unreachable or
//! failing for another reason fails the batch retriably: tidemark retries it with
//! backoff (up to 20 attempts here, 100 ms doubling to 10 s: minutes of outage),
//! committing nothing past it, and stops at it after the last attempt.
//!
//! ```text
//! cargo run --release --example postgres_upsert -- POSTGRES_URL BROKERS INPUT GROUP
//! ```
//! Stops on Ctrl-C or SIGTERM (drain, final commit; `ShutdownHandle::stop_on_signals`)
//! or after 5 s without records.

use std::future::Future;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tidemark::{
    AsyncProcessor, Config, Outputs, Pipeline, ProcessError, ProcessResult, ProcessingOrder,
    Record, RetryPolicy,
};
use tokio_postgres::NoTls;

/// The table the example keeps: one row per key.
pub const TABLE: &str = "events_by_key";

/// Upserts records into [`TABLE`] over a small connection pool.
pub struct Upsert {
    pool: Pool,
}

impl Upsert {
    /// Connects to `url` (a libpq URL) and creates [`TABLE`] when missing.
    ///
    /// # Errors
    /// The driver's error when the database cannot be reached or the table created.
    pub async fn connect(url: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let manager = Manager::from_config(
            url.parse()?,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(4).build()?;
        pool.get()
            .await?
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (
                    key text PRIMARY KEY,
                    last_id bigint NOT NULL,
                    records bigint NOT NULL,
                    src_partition integer NOT NULL,
                    src_offset bigint NOT NULL)"
            ))
            .await?;
        Ok(Upsert { pool })
    }

    /// Applies `records` (at most one per key) in one statement; one result each.
    async fn write(&self, records: &[Record]) -> Vec<ProcessResult> {
        let mut results: Vec<ProcessResult> = Vec::with_capacity(records.len());
        let (mut keys, mut ids, mut partitions, mut offsets) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for record in records {
            match parse(record) {
                Ok((key, id)) => {
                    keys.push(key);
                    ids.push(id);
                    partitions.push(record.partition);
                    offsets.push(record.offset);
                    results.push(Ok(Outputs::none()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if keys.is_empty() {
            return results;
        }
        if let Err(e) = self.upsert(&keys, &ids, &partitions, &offsets).await {
            // Not the rows' fault (they are parsed and typed): the database is away or
            // failing; the whole batch is tried again later.
            let error = ProcessError::retriable(format!("upsert into {TABLE}: {e}"));
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(error.clone());
            }
        }
        results
    }

    async fn upsert(
        &self,
        keys: &[String],
        ids: &[i64],
        partitions: &[i32],
        offsets: &[i64],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO {TABLE} AS t (key, last_id, records, src_partition, src_offset)
                 SELECT k, i, 1, p, o FROM UNNEST($1::text[], $2::int8[], $3::int4[], $4::int8[])
                     AS u(k, i, p, o)
                 ON CONFLICT (key) DO UPDATE SET
                     last_id = EXCLUDED.last_id,
                     records = t.records + 1,
                     src_partition = EXCLUDED.src_partition,
                     src_offset = EXCLUDED.src_offset
                 WHERE t.src_offset < EXCLUDED.src_offset"
            ))
            .await?;
        client
            .execute(&statement, &[&keys, &ids, &partitions, &offsets])
            .await?;
        Ok(())
    }
}

/// The key and id of a workload record.
fn parse(record: &Record) -> Result<(String, i64), ProcessError> {
    #[derive(serde::Deserialize)]
    struct Event {
        id: i64,
        key: String,
    }
    let payload = record.payload.as_deref().unwrap_or_default();
    let event: Event = serde_json::from_slice(payload)
        .map_err(|e| ProcessError::permanent(format!("not a keyed workload record: {e}")))?;
    Ok((event.key, event.id))
}

impl AsyncProcessor for Upsert {
    async fn process(&self, record: &Record) -> ProcessResult {
        self.write(std::slice::from_ref(record))
            .await
            .pop()
            .expect("one result per record")
    }

    fn process_batch(
        &self,
        records: &[Record],
    ) -> Option<impl Future<Output = Vec<ProcessResult>> + Send> {
        Some(self.write(records))
    }
}

/// The pipeline's configuration: key order (what the version check needs), stopping
/// after `idle_ms` without records.
pub fn config(brokers: &str, group: &str, input: &str, idle_ms: u64) -> Config {
    let mut config = Config::new(brokers, group, [input]);
    config.ordering = ProcessingOrder::Key;
    config.failures.retry = RetryPolicy::attempts(20);
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(idle_ms));
    config
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, brokers, input, group] = args.as_slice() else {
        return Err("usage: postgres_upsert POSTGRES_URL BROKERS INPUT GROUP".into());
    };
    let processor = Upsert::connect(url).await?;
    let pipeline = Pipeline::new_async(config(brokers, group, input, 5_000), processor);
    // Ctrl-C or SIGTERM: drain, final commit (a second one aborts).
    pipeline.shutdown_handle().stop_on_signals()?;
    let summary = pipeline.run_async().await?;
    println!(
        "{} records in {:.1} s into {TABLE}",
        summary.records,
        summary.elapsed.as_secs_f64()
    );
    Ok(())
}
