//! Secured clusters through the CLI (issue 30), on a secured Apache Kafka node
//! (`tidemark_testkit::secured`: SASL_SSL with SCRAM-SHA-512, SSL with client
//! certificates, ACLs): authorized users run end to end with one `--client-config`
//! file, and every refusal — a wrong password, an untrusted CA, a missing ACL on the
//! topic, the group or the sink topic — exits non-zero within the documented bound
//! with its cause named, commits nothing past what was processed, and never prints
//! the password, even at the most verbose log levels. Checked by an independent
//! client (the `admin` super user).

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tidemark::Connection;
use tidemark_testkit::secured::write_properties;
use tidemark_testkit::{unique_name, verify, workload, SecuredKafka};

const RECORDS: u64 = 4_000;

/// Input topic, output topic and group names under `user`'s ACL prefix.
fn names(user: &str) -> (String, String, String) {
    (
        unique_name(&format!("{user}-in")),
        unique_name(&format!("{user}-out")),
        unique_name(&format!("{user}-g")),
    )
}

/// The command exited 0 (else its standard error is the failure's message).
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `connection` written to a fresh properties file.
fn properties_file(connection: &Connection) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.properties");
    write_properties(connection, &path).unwrap();
    (dir, path)
}

/// Creates `topic` (as admin) and fills it with `records` records on 4 partitions;
/// returns its high watermarks.
fn input(kafka: &SecuredKafka, topic: &str, records: u64) -> BTreeMap<i32, i64> {
    let admin = kafka.admin();
    let w = workload::Workload {
        topic: topic.to_string(),
        records,
        partitions: 4,
        payload_bytes: 100,
        keys: 0,
        first_id: 0,
        partition_by_id: false,
    };
    workload::produce(&admin, &w, |_| {}).unwrap();
    tidemark::high_watermarks(&admin, topic, Duration::from_secs(10)).unwrap()
}

/// `tidemark ARGS --client-config FILE`, its output captured.
fn tidemark(args: &[&str], file: &PathBuf, envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .arg("--client-config")
        .arg(file)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `tidemark run` over `topic` in `group` with `extra` arguments, stopping when idle.
fn run(file: &PathBuf, topic: &str, group: &str, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "run",
        "--topic",
        topic,
        "--group",
        group,
        "--exit-when-idle",
        "3",
    ];
    args.extend_from_slice(extra);
    tidemark(&args, file, envs)
}

/// Every input has its output, the group committed at the high watermarks, and
/// `tidemark lag --client-config` reads a lag of 0 — all as independent clients see it.
fn assert_complete(
    kafka: &SecuredKafka,
    user_file: &PathBuf,
    input: &str,
    output: &str,
    group: &str,
    ends: &BTreeMap<i32, i64>,
) {
    let admin = kafka.admin();
    verify::sink_report(&admin, output, ends)
        .unwrap()
        .assert_nothing_lost();
    let committed = verify::committed_offsets(&admin, group, input).unwrap();
    let expected: BTreeMap<i32, Option<i64>> = ends.iter().map(|(p, e)| (*p, Some(*e))).collect();
    assert_eq!(committed, expected);
    let lag = tidemark(
        &[
            "lag", "--group", group, "--topic", input, "--output", "json",
        ],
        user_file,
        &[],
    );
    assert_ok(&lag);
    let json: serde_json::Value = serde_json::from_slice(&lag.stdout).unwrap();
    assert_eq!(json["total_lag"], 0, "{json}");
}

#[test]
fn scram_over_tls_runs_end_to_end_with_one_properties_file() {
    let kafka = SecuredKafka::shared();
    let (input_topic, output, group) = names("alice");
    let (_dir, file) = properties_file(&kafka.scram("alice", "alice-secret"));
    // alice produces her own input through the CLI.
    let produced = tidemark(
        &[
            "produce",
            "--topic",
            &input_topic,
            "--records",
            &RECORDS.to_string(),
            "--partitions",
            "4",
        ],
        &file,
        &[],
    );
    assert_ok(&produced);
    let ends =
        tidemark::high_watermarks(&kafka.admin(), &input_topic, Duration::from_secs(10)).unwrap();
    assert_eq!(ends.values().sum::<i64>(), RECORDS as i64);
    let sink = format!("topic:{output}");
    let out = run(&file, &input_topic, &group, &["--sink", &sink], &[]);
    assert_ok(&out);
    assert_complete(kafka, &file, &input_topic, &output, &group, &ends);
}

#[test]
fn a_java_style_properties_file_with_a_password_from_the_environment_works() {
    let kafka = SecuredKafka::shared();
    let (input_topic, output, group) = names("alice");
    let ends = input(kafka, &input_topic, RECORDS);
    // The file Kafka's own tools take with --command-config, the password in the
    // environment (KIP-887's ${env:NAME}).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("java.properties");
    std::fs::write(
        &file,
        format!(
            "# as for kafka-console-consumer --command-config\n\
             bootstrap.servers=localhost:{}\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"alice\" password=\"${{env:ALICE_PASSWORD}}\";\n\
             ssl.truststore.type=PEM\nssl.truststore.location={}\n",
            kafka.sasl_ssl_port,
            kafka.cert("ca.pem")
        ),
    )
    .unwrap();
    let sink = format!("topic:{output}");
    let out = run(
        &file,
        &input_topic,
        &group,
        &["--sink", &sink],
        &[("ALICE_PASSWORD", "alice-secret")],
    );
    assert_ok(&out);
    verify::sink_report(&kafka.admin(), &output, &ends)
        .unwrap()
        .assert_nothing_lost();
}

#[test]
fn mtls_runs_end_to_end() {
    let kafka = SecuredKafka::shared();
    let (input_topic, output, group) = names("carol");
    let ends = input(kafka, &input_topic, RECORDS);
    let (_dir, file) = properties_file(&kafka.mtls());
    let sink = format!("topic:{output}");
    let out = run(&file, &input_topic, &group, &["--sink", &sink], &[]);
    assert_ok(&out);
    assert_complete(kafka, &file, &input_topic, &output, &group, &ends);
}

#[test]
fn exactly_once_over_scram_with_a_transactional_id_acl() {
    let kafka = SecuredKafka::shared();
    let (input_topic, output, group) = names("alice");
    let ends = input(kafka, &input_topic, RECORDS);
    let (_dir, file) = properties_file(&kafka.scram("alice", "alice-secret"));
    let sink = format!("topic:{output}");
    let out = run(
        &file,
        &input_topic,
        &group,
        &["--sink", &sink, "--delivery", "exactly-once"],
        &[],
    );
    assert_ok(&out);
    let report = verify::sink_report(&kafka.admin(), &output, &ends).unwrap();
    report.assert_nothing_lost();
    assert_eq!(report.duplicates, 0, "exactly-once: each output once");
    let committed = verify::committed_offsets(&kafka.admin(), &group, &input_topic).unwrap();
    assert!(
        committed.iter().all(|(p, c)| *c == Some(ends[p])),
        "{committed:?}"
    );
}

/// A refused run: non-zero exit within `bound`, its last line naming `cause`, no
/// secret anywhere in its output at the most verbose levels (tidemark's trace and
/// librdkafka's `debug=all`), and nothing committed past what was processed (no
/// output was ever acknowledged, so nothing at all beyond offset 0).
fn refused(
    file: &PathBuf,
    topic: &str,
    group: &str,
    extra: &[&str],
    secret: &str,
    cause: &str,
    bound: Duration,
) {
    let kafka = SecuredKafka::shared();
    let mut args = vec!["-X", "debug=all"];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let out = run(file, topic, group, &args, &[("TIDEMARK_LOG", "trace")]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stderr.lines().last().unwrap_or("");
    assert!(!out.status.success(), "a refused run exited 0");
    assert!(
        last.starts_with("error: the cluster refused this client: ") && last.contains(cause),
        "{last}"
    );
    assert!(
        took < bound,
        "refused after {took:?}, the bound is {bound:?}"
    );
    assert!(stderr.lines().count() > 100, "the verbose logs were on");
    assert!(
        !stderr.contains(secret) && !stdout.contains(secret),
        "the secret was printed"
    );
    let committed = verify::committed_offsets(&kafka.admin(), group, topic).unwrap();
    assert!(
        committed.values().all(|c| c.unwrap_or(0) == 0),
        "{committed:?}"
    );
}

/// The documented bound of an authentication or TLS refusal: start-up's 10 s (or
/// `refusal_timeout`, 10 s) plus the 500 ms the error events are given, with room
/// for a slow machine; under 30 s as the documentation promises.
const SLOW_REFUSAL: Duration = Duration::from_secs(30);

#[test]
fn a_wrong_password_is_an_authentication_error() {
    let kafka = SecuredKafka::shared();
    let topic = unique_name("alice-in");
    input(kafka, &topic, 100);
    let (_dir, file) = properties_file(&kafka.scram("alice", "Wrong-Passw0rd-42"));
    refused(
        &file,
        &topic,
        &unique_name("alice-g"),
        &[],
        "Wrong-Passw0rd-42",
        "authentication failed",
        SLOW_REFUSAL,
    );
}

#[test]
fn an_untrusted_broker_certificate_is_a_tls_error() {
    let kafka = SecuredKafka::shared();
    let topic = unique_name("alice-in");
    input(kafka, &topic, 100);
    let connection = kafka
        .scram("alice", "alice-secret")
        .with("ssl.ca.location", kafka.cert("other-ca.pem"));
    let (_dir, file) = properties_file(&connection);
    refused(
        &file,
        &topic,
        &unique_name("alice-g"),
        &[],
        "alice-secret",
        "TLS handshake failed",
        SLOW_REFUSAL,
    );
}

#[test]
fn no_read_on_the_topic_is_an_authorization_error_naming_it() {
    let kafka = SecuredKafka::shared();
    let topic = unique_name("bob-describe");
    input(kafka, &topic, 100);
    let (_dir, file) = properties_file(&kafka.scram("bob", "bob-secret"));
    let cause = format!("not authorized: READ on topic {topic}");
    refused(
        &file,
        &topic,
        &unique_name("bob-g"),
        &[],
        "bob-secret",
        &cause,
        SLOW_REFUSAL,
    );
}

#[test]
fn no_read_on_the_group_is_an_authorization_error_naming_it() {
    let kafka = SecuredKafka::shared();
    let topic = unique_name("bob-ok-in");
    input(kafka, &topic, 100);
    let group = unique_name("nogroup");
    let (_dir, file) = properties_file(&kafka.scram("bob", "bob-secret"));
    let cause = format!("not authorized: READ on group {group}");
    refused(
        &file,
        &topic,
        &group,
        &[],
        "bob-secret",
        &cause,
        SLOW_REFUSAL,
    );
}

#[test]
fn no_write_on_the_sink_topic_is_an_authorization_error_naming_it() {
    let kafka = SecuredKafka::shared();
    let topic = unique_name("bob-ok-in");
    input(kafka, &topic, 100);
    let output = unique_name("bob-readonly-out");
    tidemark::ensure_topic(&kafka.admin(), &output, 4, 1).unwrap();
    let (_dir, file) = properties_file(&kafka.scram("bob", "bob-secret"));
    let sink = format!("topic:{output}");
    let cause = format!("not authorized: WRITE on topic {output}");
    refused(
        &file,
        &topic,
        &unique_name("bob-g"),
        &["--sink", &sink],
        "bob-secret",
        &cause,
        SLOW_REFUSAL,
    );
    assert_eq!(
        verify::high_watermarks(&kafka.admin(), &output)
            .unwrap()
            .values()
            .sum::<i64>(),
        0
    );
}
