//! Kafka to PostgreSQL through `tidemark run --sink postgres:URL`, on Apache Kafka and
//! a real PostgreSQL server: members SIGKILLed mid-run, the database stopped and
//! restarted mid-run, rows the table refuses, an unreachable database. Each check
//! reads the table and the committed offsets as independent clients.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use tidemark_testkit::{
    unique_name, verify, workload, Broker, KafkaBroker, PostgresClient, PostgresServer,
};

/// The `--sink` arguments of a PostgreSQL sink into `table` at `url`.
fn sink(url: &str, table: &str) -> Vec<String> {
    vec![
        "--sink".into(),
        format!("postgres:{url}"),
        "--sink-table".into(),
        table.into(),
    ]
}

/// Asserts that `table` holds exactly one row per input offset below `ends` (output
/// index 0 each, as the processors here return one output per input) and no other.
fn assert_one_row_per_input(db: &PostgresClient, table: &str, ends: &BTreeMap<i32, i64>) {
    let rows = db.sink_rows(table).unwrap();
    let expected: i64 = ends.values().sum();
    let missing: Vec<(i32, i64)> = ends
        .iter()
        .flat_map(|(p, end)| (0..*end).map(move |o| (*p, o)))
        .filter(|k| !rows.contains_key(k))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "inputs without a row, e.g. {missing:?}");
    let extra: Vec<_> = rows
        .iter()
        .filter(|((p, o), n)| **n != 1 || ends.get(p).is_none_or(|end| o >= end))
        .take(10)
        .collect();
    assert!(
        extra.is_empty(),
        "rows that are not one per input: {extra:?}"
    );
    assert_eq!(rows.len() as i64, expected);
}

/// Creates `input` with 8 partitions holding `records` records; its high watermarks.
fn input_topic(broker: &KafkaBroker, input: &str, records: u64) -> BTreeMap<i32, i64> {
    let brokers = broker.bootstrap_servers();
    broker.create_topic(input, 8).unwrap();
    workload::produce(&brokers, &broker.workload(input, records, 8), |_| {}).unwrap();
    let ends = tidemark::high_watermarks(&brokers, input, Duration::from_secs(10)).unwrap();
    assert_eq!(ends.values().sum::<i64>() as u64, records);
    ends
}

/// Members SIGKILLed while records are in flight, four times, then one that runs
/// until idle: exactly one row per input, committed offsets at the high watermarks
/// (and never backwards: `kill_and_recover_sinking`).
#[test]
fn killed_members_leave_exactly_one_row_per_input() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let server = PostgresServer::shared();
    let (input, group, table) = (unique_name("in"), unique_name("pg"), unique_name("rows"));
    let table = table.replace('-', "_");
    let ends = input_topic(broker, &input, common::records(150_000));
    common::kill_and_recover_sinking(
        &brokers,
        &input,
        &sink(server.url(), &table),
        &group,
        &ends,
        common::events(4),
        8_000..12_000,
        &["--processor", "sha256:3000"],
    );
    assert_one_row_per_input(&server.client().unwrap(), &table, &ends);
}

/// PostgreSQL stopped while a member writes, and started again: while it is down no
/// committed offset passes a row that is not in the table; afterwards every input
/// has exactly one row and the committed offsets reach the high watermarks.
#[test]
fn a_database_that_goes_away_mid_run_loses_nothing_and_doubles_nothing() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let server = PostgresServer::start().unwrap();
    let (input, group, table) = (unique_name("in"), unique_name("pg"), unique_name("rows"));
    let table = table.replace('-', "_");
    let ends = input_topic(broker, &input, 60_000);
    let records: i64 = ends.values().sum();
    let mut member = common::member_sinking(
        &brokers,
        &input,
        &sink(server.url(), &table),
        &group,
        Some(5),
        &["--processor", "sha256:3000"],
    );
    while common::committed_total(&brokers, &group, &input) < records / 4 {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    // While the database is down: whatever is committed has its rows (read once it
    // is back: the rows cannot have appeared in between, the member cannot write).
    std::thread::sleep(Duration::from_secs(3));
    let committed_while_down = verify::committed_offsets(&brokers, &group, &input).unwrap();
    assert!(
        member.try_wait().unwrap().is_none(),
        "the member must wait for the database, not exit"
    );
    server.restart().unwrap();
    let db = server.client().unwrap();
    let rows = db.sink_rows(&table).unwrap();
    for (p, committed) in &committed_while_down {
        let missing: Vec<i64> = (0..committed.unwrap_or(0))
            .filter(|o| !rows.contains_key(&(*p, *o)))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "partition {p} committed to {committed:?} while the database was down, \
             without rows for {missing:?}"
        );
    }
    assert!(
        committed_while_down
            .values()
            .map(|c| c.unwrap_or(0))
            .sum::<i64>()
            < records,
        "the work must not have finished before the database went away"
    );
    let status = member.wait().unwrap();
    assert!(status.success(), "the member exited with {status}");
    common::assert_committed_to_end(&brokers, &group, &input, &ends);
    assert_one_row_per_input(&db, &table, &ends);
}

/// A table whose CHECK constraint refuses some rows: those inputs go to the
/// dead-letter topic with PostgreSQL's message, every other input has its row.
#[test]
fn rows_the_table_refuses_go_to_the_dead_letter_topic() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let server = PostgresServer::shared();
    let (input, group, dlq, table) = (
        unique_name("in"),
        unique_name("pg"),
        unique_name("dlq"),
        unique_name("rows").replace('-', "_"),
    );
    let ends = input_topic(broker, &input, 8_000);
    let db = server.client().unwrap();
    db.execute(&format!(
        "CREATE TABLE {table} (src_topic text NOT NULL, src_partition integer NOT NULL, \
         src_offset bigint NOT NULL, src_output integer NOT NULL, key bytea, value bytea, \
         headers jsonb, PRIMARY KEY (src_topic, src_partition, src_offset, src_output), \
         CONSTRAINT no_sevens CHECK (src_offset % 100 <> 7))"
    ))
    .unwrap();
    let status = common::member_sinking(
        &brokers,
        &input,
        &sink(server.url(), &table),
        &group,
        Some(3),
        &["--processor", "noop", "--dead-letter-topic", &dlq],
    )
    .wait()
    .unwrap();
    assert!(status.success(), "exited with {status}");
    common::assert_committed_to_end(&brokers, &group, &input, &ends);

    let refused: BTreeMap<(i32, i64), ()> = ends
        .iter()
        .flat_map(|(p, end)| {
            (0..*end)
                .filter(|o| o % 100 == 7)
                .map(move |o| ((*p, o), ()))
        })
        .collect();
    let dlq_ends = verify::high_watermarks(&brokers, &dlq).unwrap();
    let letters = verify::read_topic(
        &brokers,
        &dlq,
        &dlq_ends,
        "read_committed",
        Duration::from_secs(60),
    )
    .unwrap();
    let mut lettered = BTreeMap::new();
    for l in &letters {
        let (p, o) = l.source().expect("source coordinates in the headers");
        let error = l.header(tidemark::HEADER_ERROR).unwrap();
        assert!(error.contains("no_sevens"), "{error}");
        lettered.insert((p, o), ());
    }
    assert_eq!(
        lettered, refused,
        "the dead-letter topic must hold exactly the refused rows"
    );
    let rows = db.sink_rows(&table).unwrap();
    let expected: BTreeMap<(i32, i64), i64> = ends
        .iter()
        .flat_map(|(p, end)| {
            (0..*end)
                .filter(|o| o % 100 != 7)
                .map(move |o| ((*p, o), 1))
        })
        .collect();
    assert_eq!(
        rows, expected,
        "every other input must have exactly one row"
    );
}

/// A database nobody listens for: `run` exits non-zero before consuming anything,
/// saying which server it could not reach.
#[test]
fn an_unreachable_database_fails_run_with_a_clear_error() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (input, group) = (unique_name("in"), unique_name("pg"));
    input_topic(broker, &input, 100);
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "run",
            "--brokers",
            &brokers,
            "--topic",
            &input,
            "--group",
            &group,
        ])
        .args(sink(
            &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
            "rows",
        ))
        .args(["--exit-when-idle", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run must fail: {stderr}");
    assert!(
        stderr.contains("PostgreSQL sink")
            && stderr.contains(&format!("127.0.0.1:{port}/postgres")),
        "the error must name the sink and the server: {stderr}"
    );
    let committed = verify::committed_offsets(&brokers, &group, &input).unwrap();
    assert!(
        committed.values().all(|c| c.is_none()),
        "nothing may be committed: {committed:?}"
    );
}
