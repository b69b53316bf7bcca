//! Network faults between `tidemark run` and Apache Kafka (issue 31), through
//! Toxiproxy (`tidemark_testkit::toxiproxy`): a cut longer than the session timeout,
//! latency on every connection with connections reset during commits, and refused
//! connections. Checked by an independent client of the output topic and of the
//! committed offsets, and through the member's `/health` and `/metrics`. One proxied
//! broker per test binary, reset (no toxic, proxy enabled) before each test.

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tidemark_testkit::toxiproxy::ProxiedKafka;
use tidemark_testkit::{unique_name, verify, workload};

/// Records produced before the cut (the member is at work on them when it comes) and
/// after it (so there is work left that only a member back in its group can do).
const BEFORE: u64 = 30_000;
const AFTER: u64 = 10_000;

static PROXIED: Mutex<Option<ProxiedKafka>> = Mutex::new(None);

/// The binary's proxied broker with no toxic and the proxy enabled.
fn proxied() -> MutexGuard<'static, Option<ProxiedKafka>> {
    let mut guard = PROXIED.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_ref() {
        None => *guard = Some(ProxiedKafka::start().expect("toxiproxy and a broker behind it")),
        Some(p) => p.reset().expect("toxiproxy resets"),
    }
    guard
}

fn produce(brokers: &str, topic: &str, records: u64, first_id: u64) {
    let w = workload::Workload {
        topic: topic.to_string(),
        records,
        partitions: 8,
        payload_bytes: 100,
        keys: 0,
        first_id,
        partition_by_id: false,
    };
    workload::produce(brokers, &w, |_| {}).unwrap();
}

/// A member cut off from the cluster for longer than its session timeout loses its
/// assignment; `--exit-when-idle` must not take the empty assignment that follows for
/// "caught up". On the old code the member exited 0 during the cut with most of its
/// input unprocessed; now it rejoins after the network heals, processes everything
/// (the records produced after the cut too), and only then exits 0.
#[test]
fn a_cut_longer_than_the_session_never_makes_the_idle_stop_exit_with_work_left() {
    let guard = proxied();
    let proxied = guard.as_ref().unwrap();
    let brokers = proxied.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("cut"));
    produce(&brokers, &input, BEFORE, 0);
    workload::ensure_topic(&brokers, &output, 8).unwrap();

    let (member, log) = member(&brokers, &input, &output, &group, 5, &[]);

    // The cut comes while the member works: once it has committed something, never
    // after it has committed everything produced so far.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = common::committed_total(&brokers, &group, &input);
        assert!(done < BEFORE as i64, "the member finished before the cut");
        if done > 1_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the member never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    proxied
        .add_toxic("latency", "latency", serde_json::json!({"latency": 200}))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    proxied.remove_toxic("latency").unwrap();
    // A blackhole twice the session timeout, then every connection reset.
    proxied
        .add_toxic("blackhole", "timeout", serde_json::json!({"timeout": 0}))
        .unwrap();
    std::thread::sleep(Duration::from_secs(12));
    proxied.remove_toxic("blackhole").unwrap();
    proxied
        .add_toxic("reset", "reset_peer", serde_json::json!({"timeout": 0}))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    proxied.remove_toxic("reset").unwrap();

    // Work that only a member back in its group can do.
    produce(&brokers, &input, AFTER, BEFORE);
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(30)).unwrap();
    assert_eq!(ends.values().sum::<i64>(), (BEFORE + AFTER) as i64);

    let (duplicates, stderr) = finish(&brokers, &input, &output, &group, &ends, member, &log);
    assert!(
        stderr.contains("assignment lost"),
        "the cut did not cost the member its assignment: the test did not test\n{stderr}"
    );
    eprintln!(
        "network cut: {} inputs, {duplicates} processed twice; {} partitions came back with what was completed before set aside",
        BEFORE + AFTER,
        stderr.matches("back after a lost assignment").count()
    );
}

/// `tidemark run` behind the proxy (at-least-once, topic sink, `--exit-when-idle
/// idle_secs`, a 6 s session) with `extra` arguments; its log goes to the returned file.
fn member(
    brokers: &str,
    input: &str,
    output: &str,
    group: &str,
    idle_secs: u32,
    extra: &[&str],
) -> (common::Member, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "run",
            "--brokers",
            brokers,
            "--topic",
            input,
            "--group",
            group,
        ])
        .args(["--processor", common::PROCESSOR, "--workers", "2"])
        .args(["--sink", &format!("topic:{output}")])
        .args(["--commit", "every-ms:200"])
        .args(["--exit-when-idle", &idle_secs.to_string()])
        .args([
            "--max-in-flight-records",
            &common::MAX_IN_FLIGHT.to_string(),
        ])
        .args([
            "--max-uncommitted-records",
            &common::MAX_IN_FLIGHT.to_string(),
        ])
        .args([
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
        ])
        .args(extra)
        .env("TIDEMARK_LOG", "warn,tidemark::engine::callbacks=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    (common::Member::new(child), log)
}

/// Waits for the member to exit (at most 240 s), then checks as an independent
/// client: exit 0, committed offsets at the high watermarks, every input in the
/// output, duplicates within the commit-lag bound. Returns the duplicates and the log.
fn finish(
    brokers: &str,
    input: &str,
    output: &str,
    group: &str,
    ends: &std::collections::BTreeMap<i32, i64>,
    member: common::Member,
    log: &tempfile::NamedTempFile,
) -> (u64, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(member.wait()));
    let status = rx
        .recv_timeout(Duration::from_secs(240))
        .expect("the member stopped within 240 s of the network healing");
    let mut stderr = String::new();
    log.reopen().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    common::assert_committed_to_end(brokers, group, input, ends);
    let report = verify::sink_report(brokers, output, ends).unwrap();
    report.assert_nothing_lost();
    assert!(
        report.duplicates <= common::MAX_IN_FLIGHT as u64,
        "{} duplicates\n{stderr}",
        report.duplicates
    );
    (report.duplicates, stderr)
}

/// 100 ms of latency each way on every connection for the whole run, and three times
/// every connection reset while the member commits (every 200 ms) and produces: the
/// member reconnects by itself, loses nothing and stops only when caught up.
#[test]
fn latency_everywhere_and_resets_during_commits_lose_nothing() {
    let guard = proxied();
    let proxied = guard.as_ref().unwrap();
    let brokers = proxied.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("resets"));
    produce(&brokers, &input, 10_000, 0);
    workload::ensure_topic(&brokers, &output, 8).unwrap();
    proxied
        .add_toxic("latency", "latency", serde_json::json!({"latency": 100}))
        .unwrap();
    let (member, log) = member(&brokers, &input, &output, &group, 8, &[]);
    let feeder = common::Feeder::start(&brokers, &input, 10_000, 500, Duration::from_millis(500));
    let mut done = 0;
    for _ in 0..3 {
        common::wait_committed(
            &brokers,
            &group,
            &input,
            done + 1_000,
            Duration::from_secs(120),
        );
        proxied
            .add_toxic("reset", "reset_peer", serde_json::json!({"timeout": 0}))
            .unwrap();
        std::thread::sleep(Duration::from_secs(1));
        proxied.remove_toxic("reset").unwrap();
        done = common::committed_total(&brokers, &group, &input);
    }
    feeder.finish();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(30)).unwrap();
    let (duplicates, _) = finish(&brokers, &input, &output, &group, &ends, member, &log);
    eprintln!(
        "latency and resets: {} inputs, {duplicates} processed twice",
        ends.values().sum::<i64>()
    );
}

/// The proxy disabled (every connection refused) for longer than the session timeout:
/// while cut off the member says so — `/health/ready` answers 503 and
/// `tidemark_rebalance_partitions_total{event="lost"}` counts the lost partitions —
/// and once connections are accepted again it is ready again within 60 s, finishes
/// the work and exits 0.
#[test]
fn refused_connections_show_in_health_and_metrics_and_the_member_recovers() {
    let guard = proxied();
    let proxied = guard.as_ref().unwrap();
    let brokers = proxied.bootstrap_servers();
    let (input, output, group) = (
        unique_name("in"),
        unique_name("out"),
        unique_name("refused"),
    );
    produce(&brokers, &input, 10_000, 0);
    workload::ensure_topic(&brokers, &output, 8).unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (member, log) = member(
        &brokers,
        &input,
        &output,
        &group,
        8,
        &["--metrics-addr", &addr],
    );
    let feeder = common::Feeder::start(&brokers, &input, 10_000, 500, Duration::from_millis(500));
    common::wait_committed(&brokers, &group, &input, 1_000, Duration::from_secs(120));
    let ready = || common::get(port, "/health/ready").map(|(s, _)| s);
    assert_eq!(ready(), Some(200), "a working member is ready");

    proxied.set_enabled(false).unwrap();
    let cut = Instant::now();
    let mut seen_unready = false;
    while cut.elapsed() < Duration::from_secs(15) {
        seen_unready |= ready() == Some(503);
        std::thread::sleep(Duration::from_millis(200));
    }
    let lost = common::get(port, "/metrics")
        .and_then(|(_, body)| {
            body.lines()
                .find(|l| l.starts_with(r#"tidemark_rebalance_partitions_total{event="lost"}"#))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    proxied.set_enabled(true).unwrap();
    assert!(
        seen_unready,
        "/health/ready never said 503 while the member was cut off"
    );
    assert!(
        lost >= 1.0,
        "the metrics do not count the lost partitions: {lost}"
    );
    common::wait_committed(
        &brokers,
        &group,
        &input,
        common::committed_total(&brokers, &group, &input) + 1,
        Duration::from_secs(60),
    );
    let healed = Instant::now();
    while ready() != Some(200) {
        assert!(
            healed.elapsed() < Duration::from_secs(60),
            "the member was not ready again within 60 s of the network healing"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    feeder.finish();
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(30)).unwrap();
    let (duplicates, stderr) = finish(&brokers, &input, &output, &group, &ends, member, &log);
    assert!(stderr.contains("assignment lost"), "{stderr}");
    eprintln!(
        "refused connections: {} inputs, {duplicates} processed twice",
        ends.values().sum::<i64>()
    );
}
