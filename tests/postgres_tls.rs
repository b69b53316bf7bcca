//! The PostgreSQL sink over TLS (issue 30), against a real PostgreSQL server with
//! `ssl=on` and a certificate made by the test script, where the sink's role may
//! connect over TLS only: `sslmode=verify-full` with the right CA writes every row
//! (read by an independent client); an untrusted CA is a clear error at start that
//! names the certificate check, and nothing is consumed.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::time::Duration;

use tidemark::{
    Config, Error, Outputs, Pipeline, PostgresSink, ProcessResult, Processor, Record, SinkConfig,
};
use tidemark_testkit::{
    unique_name, workload, Broker, EmbeddedCluster, PostgresClient, PostgresServer,
};

struct Echo;

impl Processor for Echo {
    fn process(&self, record: &Record) -> ProcessResult {
        Ok(Outputs::one(
            record.key.clone(),
            record.payload.clone().unwrap_or_default(),
        ))
    }
}

/// A TLS server with the role `tidemark`, and that role's URL with `params`.
fn server() -> (PostgresServer, String) {
    let server = PostgresServer::start_tls().unwrap();
    server
        .client()
        .unwrap()
        .execute("CREATE ROLE tidemark LOGIN SUPERUSER")
        .unwrap();
    let url = server
        .url()
        .replace("postgres@127.0.0.1", "tidemark@localhost");
    (server, url)
}

fn config(cluster: &EmbeddedCluster, topic: &str, url: String, table: &str) -> Config {
    let mut c = Config::new(cluster.bootstrap_servers(), unique_name("pg"), [topic]);
    c.workers = 2;
    c.lifecycle.exit_when_idle = Some(std::time::Duration::from_millis(1_000));
    c.sink = SinkConfig::Postgres(PostgresSink::new(url, table));
    c
}

#[test]
fn verify_full_writes_every_row_over_tls() {
    let (server, url) = server();
    // The role may not connect without TLS: whatever the sink wrote went over TLS.
    assert!(PostgresClient::connect(&format!("{url}?sslmode=disable")).is_err());
    let cluster = EmbeddedCluster::start(1).unwrap();
    let topic = unique_name("in");
    cluster.create_topic(&topic, 2).unwrap();
    workload::produce(
        &cluster.bootstrap_servers(),
        &cluster.workload(&topic, 2_000, 2),
        |_| {},
    )
    .unwrap();
    let table = unique_name("rows").replace('-', "_");
    let url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        server.tls_file("ca.pem").display()
    );
    let summary = Pipeline::new(config(&cluster, &topic, url, &table), Echo)
        .run()
        .unwrap();
    assert_eq!(summary.records, 2_000);
    let rows = server
        .client()
        .unwrap()
        .query(&format!(
            "SELECT count(DISTINCT (src_partition, src_offset)) FROM {table}"
        ))
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 2_000);
}

#[test]
fn an_untrusted_certificate_is_a_clear_error_at_start() {
    let (server, url) = server();
    let cluster = EmbeddedCluster::start(1).unwrap();
    let topic = unique_name("in");
    cluster.create_topic(&topic, 1).unwrap();
    let url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        server.tls_file("other-ca.pem").display()
    );
    let started = std::time::Instant::now();
    let err = Pipeline::new(config(&cluster, &topic, url, "never"), Echo)
        .run()
        .unwrap_err();
    assert!(matches!(err, Error::Database { .. }), "{err:?}");
    let chain = format!("{:#}", anyhow_chain(&err));
    assert!(chain.contains("certificate verify failed"), "{chain}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the connect timeout bounds it"
    );
}

/// `e` and its sources joined with ": ".
fn anyhow_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out += &format!(": {s}");
        next = s.source();
    }
    out
}
