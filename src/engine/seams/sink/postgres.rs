//! The PostgreSQL sink ([`SinkConfig::Postgres`](crate::SinkConfig::Postgres)):
//! outputs become rows of one table, written in batches by a few writer tasks on a
//! runtime of their own, each batch one `INSERT … ON CONFLICT DO NOTHING` (its own
//! transaction). An output's [`Ack`] resolves only after the statement holding its
//! row has committed, so no Kafka commit passes a row that is not in the table.
//!
//! Failures: a statement that fails for any reason but the rows themselves (the
//! server gone, a connection reset, a deadlock) is retried with backoff (100 ms
//! doubling to 5 s) for as long as the run lasts — its records stay in flight, so
//! back-pressure pauses their partitions and nothing is committed past them. A batch
//! refused for its rows (SQLSTATE class 22, data exception, or 23, integrity
//! constraint) is written again row by row, and each refused row fails its input
//! permanently ([`Ack::refuse`]).

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::engine::completion::progress::Ack;
use crate::error::Error;
use crate::processor::ProcessError;
use crate::record::{OutputRecord, Record};
use crate::PostgresSink;

/// Without `connect_timeout` in the URL, how long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest wait before a failed statement is tried again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// The columns a sink table must have.
const COLUMNS: [&str; 7] = [
    "src_topic",
    "src_partition",
    "src_offset",
    "src_output",
    "key",
    "value",
    "headers",
];

/// One output on its way to the table.
struct Row {
    /// The input record (its coordinates, and what a refused row dead-letters).
    input: Record,
    /// The output's index among its input's outputs.
    index: u32,
    output: OutputRecord,
    ack: Ack,
}

/// Writes outputs into a PostgreSQL table; dropping it abandons what is not written.
pub(crate) struct PostgresWriter {
    rows: UnboundedSender<Row>,
    /// Rows sent and not yet acknowledged (for [`flush`](Self::flush)).
    unwritten: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl PostgresWriter {
    /// Connects to `sink.url`, creates the table when it is missing, checks its
    /// columns and starts `sink.connections` writers.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL libpq's syntax refuses; [`Error::Database`] when
    /// the server does not answer within the connect timeout, refuses the login, or
    /// the table cannot be created or lacks a column.
    pub(crate) fn start(sink: &PostgresSink) -> Result<Self, Error> {
        let (url, tls) = super::postgres_tls::connector(&sink.url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| Error::Config(format!("sink.url: not a libpq connection string: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let server = describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tidemark-postgres")
            .enable_all()
            .build()
            .map_err(|e| database(format!("starting the writer runtime for {server}"), e))?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(sink.connections)
            .build()
            .map_err(|e| database(format!("building the connection pool for {server}"), e))?;
        let table = quote(&sink.table);
        runtime.block_on(prepare_table(&pool, &table, &sink.table, &server))?;
        let (rows, receiver) = unbounded_channel();
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let unwritten = Arc::new(AtomicUsize::new(0));
        let insert = Arc::new(insert_statement(&table));
        for _ in 0..sink.connections {
            runtime.spawn(write_batches(
                pool.clone(),
                insert.clone(),
                receiver.clone(),
                sink.batch_rows,
                unwritten.clone(),
            ));
        }
        tracing::info!(%server, table = %sink.table, connections = sink.connections, "PostgreSQL sink ready");
        Ok(PostgresWriter {
            rows,
            unwritten,
            runtime: Some(runtime),
        })
    }

    /// Queues `output` (the `index`-th of `input`); `ack` resolves once its row is
    /// committed (or refused). Never blocks.
    pub(crate) fn send(&self, input: &Record, index: usize, output: OutputRecord, ack: Ack) {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        let row = Row {
            input: input.clone(),
            index: index as u32,
            output,
            ack,
        };
        if let Err(lost) = self.rows.send(row) {
            // The writers are gone only when the runtime is: the run is over, and the
            // record, never complete, is processed again by the next owner.
            self.unwritten.fetch_sub(1, Ordering::AcqRel);
            drop(lost);
        }
    }

    /// Waits up to `timeout` until every row sent is committed or refused.
    pub(crate) fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.unwritten.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                tracing::warn!(
                    rows = self.unwritten.load(Ordering::Acquire),
                    "PostgreSQL sink flush did not finish: those records are processed again by the next owner"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for PostgresWriter {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `host:port/database` of `config`, for messages (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

fn database(context: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Database {
        context,
        source: Box::new(e),
    }
}

/// `name` or `schema.name` (already validated) as quoted identifiers.
fn quote(table: &str) -> String {
    table
        .split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// Creates the table when missing (under an advisory lock: concurrent
/// `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL's catalog) and checks that it
/// has every column.
async fn prepare_table(pool: &Pool, table: &str, name: &str, server: &str) -> Result<(), Error> {
    let fail = |what: &str, e: PoolError| database(format!("{what} ({server}, table {name})"), e);
    let mut client = pool.get().await.map_err(|e| fail("connecting", e))?;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            src_topic text NOT NULL,
            src_partition integer NOT NULL,
            src_offset bigint NOT NULL,
            src_output integer NOT NULL,
            key bytea,
            value bytea,
            headers jsonb,
            PRIMARY KEY (src_topic, src_partition, src_offset, src_output))"
    );
    let transaction = client
        .transaction()
        .await
        .map_err(|e| fail("creating the table", e.into()))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&table])
        .await
        .map_err(|e| fail("creating the table", e.into()))?;
    transaction
        .batch_execute(&create)
        .await
        .map_err(|e| fail("creating the table", e.into()))?;
    transaction
        .commit()
        .await
        .map_err(|e| fail("creating the table", e.into()))?;
    let present: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .await
        .map_err(|e| fail("reading the table's columns", e.into()))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| !present.iter().any(|p| p == c))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Database {
            context: format!("table {name} ({server}) lacks the columns {missing:?}"),
            source: "see PostgresSink for the table's shape".into(),
        });
    }
    Ok(())
}

/// One multi-row insert: one array per column, unnested.
fn insert_statement(table: &str) -> String {
    format!(
        "INSERT INTO {table} (src_topic, src_partition, src_offset, src_output, key, value, headers) \
         SELECT t, p, o, i, k, v, h::jsonb FROM UNNEST($1::text[], $2::int4[], $3::int8[], \
         $4::int4[], $5::bytea[], $6::bytea[], $7::text[]) AS u(t, p, o, i, k, v, h) \
         ON CONFLICT DO NOTHING"
    )
}

/// One writer: takes what is queued (up to `batch_rows`, at least one row, waiting
/// for it) and writes it, until the sink is dropped.
async fn write_batches(
    pool: Pool,
    insert: Arc<String>,
    rows: Arc<tokio::sync::Mutex<UnboundedReceiver<Row>>>,
    batch_rows: usize,
    unwritten: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(batch_rows);
    loop {
        {
            let mut rows = rows.lock().await;
            if rows.recv_many(&mut batch, batch_rows).await == 0 {
                return;
            }
        }
        let n = batch.len();
        write(&pool, &insert, &mut batch).await;
        unwritten.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Writes `batch` (emptying it), retrying what is not the rows' fault; refused rows
/// are written one by one so that only the refused ones fail.
async fn write(pool: &Pool, insert: &str, batch: &mut Vec<Row>) {
    match insert_retrying(pool, insert, batch).await {
        Ok(()) => batch.drain(..).for_each(|row| row.ack.resolve(Ok(()))),
        Err(_) => {
            for row in batch.drain(..) {
                match insert_retrying(pool, insert, std::slice::from_ref(&row)).await {
                    Ok(()) => row.ack.resolve(Ok(())),
                    Err(e) => {
                        let reason = reason(&e);
                        tracing::debug!(topic = %row.input.topic, partition = row.input.partition, offset = row.input.offset, %reason, "PostgreSQL refused the row");
                        let error = ProcessError::permanent(format!(
                            "PostgreSQL refused the row: {reason}"
                        ));
                        row.ack.refuse(row.input, error);
                    }
                }
            }
        }
    }
}

/// Inserts `rows` in one statement, retrying with backoff until it commits; the
/// error when the server refuses the rows themselves (SQLSTATE class 22 or 23).
async fn insert_retrying(
    pool: &Pool,
    insert: &str,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    let mut wait = BACKOFF.0;
    loop {
        let error = match insert_once(pool, insert, rows).await {
            Ok(()) => return Ok(()),
            Err(PoolError::Backend(e)) if refuses_rows(&e) => return Err(e),
            Err(e) => e,
        };
        let error = match &error {
            PoolError::Backend(e) => reason(e),
            other => other.to_string(),
        };
        tracing::warn!(rows = rows.len(), error = %error, retry_in_ms = wait.as_millis() as u64, "PostgreSQL write failed: retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(BACKOFF.1);
    }
}

/// The server's message and SQLSTATE, else the driver's error.
fn reason(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(
        || e.to_string(),
        |d| format!("{} (SQLSTATE {})", d.message(), d.code().code()),
    )
}

/// True when the server refused the statement for its rows' values.
fn refuses_rows(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

async fn insert_once(pool: &Pool, insert: &str, rows: &[Row]) -> Result<(), PoolError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(insert).await?;
    let topics: Vec<&str> = rows.iter().map(|r| &*r.input.topic).collect();
    let partitions: Vec<i32> = rows.iter().map(|r| r.input.partition).collect();
    let offsets: Vec<i64> = rows.iter().map(|r| r.input.offset).collect();
    let indexes: Vec<i32> = rows.iter().map(|r| r.index as i32).collect();
    let keys: Vec<Option<&[u8]>> = rows.iter().map(|r| r.output.key.as_deref()).collect();
    let values: Vec<&[u8]> = rows.iter().map(|r| &r.output.payload[..]).collect();
    let headers: Vec<Option<String>> = rows.iter().map(|r| headers_json(&r.output)).collect();
    client
        .execute(
            &statement,
            &[
                &topics,
                &partitions,
                &offsets,
                &indexes,
                &keys,
                &values,
                &headers,
            ],
        )
        .await?;
    Ok(())
}

/// The output's headers as a JSON array of `{"key", "value"}` (a value that is not
/// UTF-8 as `\x`-prefixed hex); `None` when it has none.
fn headers_json(output: &OutputRecord) -> Option<String> {
    if output.headers.is_empty() {
        return None;
    }
    let headers: Vec<serde_json::Value> = output
        .headers
        .iter()
        .map(|h| {
            let value = h.value.as_deref().map(|v| match std::str::from_utf8(v) {
                Ok(text) => text.to_string(),
                Err(_) => {
                    let mut hex = String::with_capacity(2 + 2 * v.len());
                    hex.push_str("\\x");
                    for b in v {
                        hex.push_str(&format!("{b:02x}"));
                    }
                    hex
                }
            });
            serde_json::json!({ "key": h.key, "value": value })
        })
        .collect();
    Some(serde_json::Value::Array(headers).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_part_by_part() {
        assert_eq!(quote("rows"), "\"rows\"");
        assert_eq!(quote("audit.Rows"), "\"audit\".\"Rows\"");
    }

    #[test]
    fn the_server_is_described_without_the_password() {
        let c = tokio_postgres::Config::from_str("postgresql://u:secret@db.example:6543/orders")
            .unwrap();
        assert_eq!(describe(&c), "db.example:6543/orders");
    }

    #[test]
    fn headers_keep_utf8_values_and_hex_the_rest() {
        let output = OutputRecord {
            key: None,
            payload: Default::default(),
            headers: vec![
                crate::Header {
                    key: "a".into(),
                    value: Some(b"text".to_vec()),
                },
                crate::Header {
                    key: "b".into(),
                    value: Some(vec![0xff, 0x00]),
                },
                crate::Header {
                    key: "c".into(),
                    value: None,
                },
            ],
        };
        assert_eq!(
            headers_json(&output).unwrap(),
            r#"[{"key":"a","value":"text"},{"key":"b","value":"\\xff00"},{"key":"c","value":null}]"#
        );
    }
}
