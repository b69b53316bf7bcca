//! `tidemark bench --postgres URL`: Kafka into PostgreSQL, rows per second. The
//! baseline is a plain sequential consumer (one `BaseConsumer`, one connection): it
//! polls a batch (up to 500 records, Kafka's `max.poll.records` default, or 5,000),
//! writes it in one statement — a multi-row `INSERT … ON CONFLICT DO NOTHING`
//! (`UNNEST` of one array per column, as the sink does) or a binary `COPY` into a
//! staging table followed by `INSERT … SELECT … ON CONFLICT DO NOTHING` — and commits
//! its offsets; then tidemark's PostgreSQL sink (`--sink postgres:…`, a no-op
//! processor) at several batch sizes and connection counts. Every row of the table
//! is the same shape (`PostgresSink`), each run into a fresh table whose row count is
//! checked; the CPU columns are this process's and the PostgreSQL server's (its
//! processes' `/proc` times, when it runs on this machine).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tidemark::{Config, Pipeline, PostgresSink, ProcessingOrder, SinkConfig};
use tidemark_testkit::memory::{peak_rss_kib, reset_peak_rss};
use tidemark_testkit::workload;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::report;
use super::scenarios::{self, Measurement};
use tidemark_testkit::builtin::{CliProcessor, Kind};

const PARTITIONS: i32 = 8;
/// The sequential consumer's poll batches: Kafka's `max.poll.records` default, and
/// ten times it.
const SEQUENTIAL_BATCHES: [usize; 2] = [500, 5_000];
/// tidemark's (rows per `INSERT`, connections).
const SINK: [(usize, usize); 5] = [(100, 4), (500, 4), (1_000, 4), (5_000, 4), (1_000, 1)];

/// How the sequential baseline writes a batch.
#[derive(Clone, Copy, Debug)]
enum Write {
    Insert,
    Copy,
}

/// One table's shape (`PostgresSink`'s), created fresh per run.
fn create_table(
    client: &tokio_postgres::Client,
    rt: &tokio::runtime::Runtime,
    table: &str,
) -> anyhow::Result<()> {
    rt.block_on(client.batch_execute(&format!(
        "CREATE TABLE {table} (src_topic text NOT NULL, src_partition integer NOT NULL, \
         src_offset bigint NOT NULL, src_output integer NOT NULL, key bytea, value bytea, \
         headers jsonb, PRIMARY KEY (src_topic, src_partition, src_offset, src_output))"
    )))?;
    Ok(())
}

/// Checks that `table` holds `records` rows, then drops it.
fn check_and_drop(
    client: &tokio_postgres::Client,
    rt: &tokio::runtime::Runtime,
    table: &str,
    records: u64,
) -> anyhow::Result<()> {
    let rows: i64 = rt
        .block_on(client.query_one(&format!("SELECT count(*) FROM {table}"), &[]))?
        .get(0);
    anyhow::ensure!(
        rows as u64 == records,
        "{table} holds {rows} rows, not {records}"
    );
    rt.block_on(client.batch_execute(&format!("DROP TABLE {table}")))?;
    Ok(())
}

/// CPU time of the PostgreSQL server's processes (`postgres` in `/proc/*/comm`):
/// user + system of the living ones and of the children they reaped. Zero when none
/// runs here.
fn server_cpu() -> Duration {
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    let tick = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ticks = 0u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim() != "postgres" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the ")" closing comm: state is field 3; utime 14, stime 15,
        // cutime 16, cstime 17.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11..15]
            .iter()
            .filter_map(|f| f.parse::<u64>().ok())
            .sum::<u64>();
    }
    Duration::from_secs_f64(ticks as f64 * tick)
}

/// The sequential consumer: polls up to `batch` records, writes them with `write`
/// in one transaction, commits the consumer's position, until `records` are written.
fn sequential(
    brokers: &str,
    topic: &str,
    url: &str,
    records: u64,
    batch: usize,
    write: Write,
) -> anyhow::Result<Measurement> {
    reset_peak_rss();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut client, connection) =
        rt.block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))?;
    rt.spawn(connection);
    let table = format!("bench_seq_{:08x}", rand::random::<u32>());
    create_table(&client, &rt, &table)?;
    let config = Config::new(
        brokers,
        format!("bench-pg-{:08x}", rand::random::<u32>()),
        [topic],
    );
    let consumer: BaseConsumer =
        scenarios::client_config(config.consumer_client_properties()).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let insert = rt.block_on(client.prepare(&format!(
        "INSERT INTO {table} (src_topic, src_partition, src_offset, src_output, key, value) \
         SELECT t, p, o, 0, k, v FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::bytea[], \
         $5::bytea[]) AS u(t, p, o, k, v) ON CONFLICT DO NOTHING"
    )))?;
    if let Write::Copy = write {
        rt.block_on(client.batch_execute(
            "CREATE TEMP TABLE staging (src_topic text, src_partition integer, src_offset bigint, \
             key bytea, value bytea) ON COMMIT DELETE ROWS",
        ))?;
    }
    let (mut done, mut started) = (0u64, None);
    // (partition, offset, key, value) of each polled record.
    type Polled = (i32, i64, Option<Vec<u8>>, Vec<u8>);
    let mut polled: Vec<Polled> = Vec::with_capacity(batch);
    while done < records {
        polled.clear();
        while polled.len() < batch {
            match consumer.poll(Duration::from_millis(if polled.is_empty() {
                1_000
            } else {
                0
            })) {
                Some(m) => {
                    let m = m?;
                    started.get_or_insert_with(Instant::now);
                    polled.push((
                        m.partition(),
                        m.offset(),
                        m.key().map(<[u8]>::to_vec),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                }
                None if polled.is_empty() => continue,
                None => break,
            }
        }
        let topics: Vec<&str> = polled.iter().map(|_| topic).collect();
        let partitions: Vec<i32> = polled.iter().map(|r| r.0).collect();
        let offsets: Vec<i64> = polled.iter().map(|r| r.1).collect();
        let keys: Vec<Option<&[u8]>> = polled.iter().map(|r| r.2.as_deref()).collect();
        let values: Vec<&[u8]> = polled.iter().map(|r| &r.3[..]).collect();
        match write {
            Write::Insert => {
                rt.block_on(client.execute(&insert, &[&topics, &partitions, &offsets, &keys, &values]))?;
            }
            Write::Copy => rt.block_on(async {
                let tx = client.transaction().await?;
                let sink = tx
                    .copy_in("COPY staging FROM STDIN BINARY")
                    .await?;
                let writer = BinaryCopyInWriter::new(
                    sink,
                    &[Type::TEXT, Type::INT4, Type::INT8, Type::BYTEA, Type::BYTEA],
                );
                futures_util::pin_mut!(writer);
                for i in 0..polled.len() {
                    writer
                        .as_mut()
                        .write(&[&topics[i], &partitions[i], &offsets[i], &keys[i], &values[i]])
                        .await?;
                }
                writer.finish().await?;
                tx.execute(
                    &format!(
                        "INSERT INTO {table} (src_topic, src_partition, src_offset, src_output, key, value) \
                         SELECT src_topic, src_partition, src_offset, 0, key, value FROM staging \
                         ON CONFLICT DO NOTHING"
                    ),
                    &[],
                )
                .await?;
                tx.commit().await
            })?,
        }
        consumer.commit_consumer_state(CommitMode::Async)?;
        done += polled.len() as u64;
    }
    let busy = started.map_or(Duration::ZERO, |s| s.elapsed());
    check_and_drop(&client, &rt, &table, records)?;
    Ok(Measurement {
        scenario: format!("sequential, {write:?} per poll batch of {batch}"),
        processor: "noop".into(),
        records,
        busy,
        peak_rss_kib: peak_rss_kib(),
        ..Default::default()
    })
}

/// tidemark's PostgreSQL sink: the no-op processor, outputs into a fresh table in
/// batches of up to `batch_rows` over `connections` connections.
fn tidemark_sink(
    brokers: &str,
    topic: &str,
    url: &str,
    records: u64,
    batch_rows: usize,
    connections: usize,
) -> anyhow::Result<Measurement> {
    reset_peak_rss();
    let table = format!("bench_sink_{:08x}", rand::random::<u32>());
    let mut sink = PostgresSink::new(url, &table);
    sink.batch_rows = batch_rows;
    sink.connections = connections;
    let mut config = Config::new(
        brokers,
        format!("bench-pg-{:08x}", rand::random::<u32>()),
        [topic],
    );
    config.sink = SinkConfig::Postgres(sink);
    config.ordering = ProcessingOrder::Unordered;
    config.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    let summary = Pipeline::new(config, CliProcessor::new(Kind::Noop, None)).run()?;
    anyhow::ensure!(
        summary.records == records,
        "processed {} of {records}",
        summary.records
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (client, connection) = rt.block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))?;
    rt.spawn(connection);
    check_and_drop(&client, &rt, &table, records)?;
    Ok(Measurement {
        scenario: format!("tidemark sink, batch_rows {batch_rows}, connections {connections}"),
        processor: "noop".into(),
        records,
        busy: summary.busy,
        peak_rss_kib: peak_rss_kib(),
        ..Default::default()
    })
}

/// Runs the rows over a fresh topic of `records` records (8 partitions) and writes
/// `postgres.md` and `postgres.csv` under `out`. Each row is the median of `runs`.
pub fn run(
    brokers: &str,
    create: &dyn Fn(&str, i32) -> anyhow::Result<()>,
    payload_bytes: usize,
    records: u64,
    url: &str,
    runs: usize,
    out: &Path,
) -> anyhow::Result<()> {
    let topic = format!("bench-pg-{:08x}", rand::random::<u32>());
    create(&topic, PARTITIONS)?;
    let mut w = workload::Workload::new(&topic, records, PARTITIONS);
    w.payload_bytes = payload_bytes;
    eprintln!("pre-filling {topic}: {records} records, {PARTITIONS} partitions");
    workload::produce(brokers, &w, |_| {})?;
    scenarios::check_nothing_dropped(brokers, &topic, PARTITIONS)?;

    let mut rows: Vec<Measurement> = Vec::new();
    let mut measure = |f: &mut dyn FnMut() -> anyhow::Result<Measurement>| -> anyhow::Result<()> {
        let m = scenarios::median_of(runs, || {
            let before = server_cpu();
            let mut m = f()?;
            m.server_cpu = server_cpu().saturating_sub(before);
            Ok(m)
        })?;
        report::progress(&m);
        rows.push(m);
        Ok(())
    };
    for batch in SEQUENTIAL_BATCHES {
        for write in [Write::Insert, Write::Copy] {
            measure(&mut || sequential(brokers, &topic, url, records, batch, write))
                .with_context(|| format!("sequential {write:?} {batch}"))?;
        }
    }
    for (batch_rows, connections) in SINK {
        measure(&mut || tidemark_sink(brokers, &topic, url, records, batch_rows, connections))
            .with_context(|| format!("sink {batch_rows} × {connections}"))?;
    }

    let baseline = rows[0].records_per_sec();
    let mut md = String::from(
        "| consumer | rows/s (median) | slowest–fastest | vs sequential INSERT 500 | CPU µs/row (tidemark process) | CPU µs/row (PostgreSQL server) | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut csv = String::from(
        "consumer,records,runs,rows_per_s,min_rows_per_s,max_rows_per_s,ratio_to_sequential,cpu_us_per_row,server_cpu_us_per_row,peak_rss_mib\n",
    );
    for m in &rows {
        let cpu = m.cpu_us_per_record().unwrap_or(f64::NAN);
        let server = m.server_cpu.as_secs_f64() * 1e6 / m.records as f64;
        let (runs, slowest, fastest) = m.spread.map_or((1, f64::NAN, f64::NAN), |s| {
            (s.runs, s.min_records_per_s, s.max_records_per_s)
        });
        let ratio = m.records_per_sec() / baseline;
        let rss = m.peak_rss_kib as f64 / 1024.0;
        let _ = writeln!(
            md,
            "| {} | {:.0} | {slowest:.0}–{fastest:.0} | {:.2}× | {cpu:.2} | {server:.2} | {rss:.0} |",
            m.scenario,
            m.records_per_sec(),
            ratio
        );
        let _ = writeln!(
            csv,
            "{},{},{runs},{:.0},{slowest:.0},{fastest:.0},{ratio:.3},{cpu:.3},{server:.3},{rss:.1}",
            m.scenario,
            m.records,
            m.records_per_sec()
        );
    }
    print!("{md}");
    std::fs::write(out.join("postgres.md"), md)?;
    std::fs::write(out.join("postgres.csv"), csv)?;
    println!("written: {}/postgres.md, postgres.csv", out.display());
    Ok(())
}
