//! `tidemark run --metrics-addr` on Apache Kafka, scraped as Prometheus would and
//! parsed with a Prometheus text-format parser (`prometheus-parse`):
//!
//! - the lag of a partition equals its high watermark minus the committed offset
//!   that an independent client reads, also while back-pressure holds it back and
//!   records keep arriving (the held record stops the committed offset; at the
//!   commit-lag bound nothing more is taken; more records are produced; the gauge
//!   follows the new high watermark although none of them is polled);
//! - counters never go down between scrapes;
//! - `/health/live` and `/health/ready`: a member with no partition (one partition,
//!   two members) is live and not ready; the working member is both;
//! - `promtool check metrics` accepts the exposition (required under `CI`, skipped
//!   elsewhere when promtool is missing).

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, get, kill_child};
use tidemark_testkit::{unique_name, verify, workload, Broker, KafkaBroker};

const HELD: i64 = 10;

fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The samples of one scrape: (name, sorted labels) → value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

fn scrape(port: u16) -> Option<(String, Samples)> {
    let (status, body) = get(port, "/metrics")?;
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
    let mut samples = Samples::new();
    for s in scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        samples.insert((s.metric, labels), value);
    }
    Some((body, samples))
}

fn partition_value(samples: &Samples, name: &str, topic: &str, partition: i32) -> Option<f64> {
    let labels = vec![
        ("partition".to_string(), partition.to_string()),
        ("topic".to_string(), topic.to_string()),
    ];
    samples.get(&(name.to_string(), labels)).copied()
}

fn member(brokers: &str, topic: &str, group: &str, port: u16, hold: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args([
        "run",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--group",
        group,
    ])
    .args([
        "--processor",
        "noop",
        "--workers",
        "2",
        "--commit",
        "every-ms:100",
    ])
    // The commit-lag bound holds the partition back behind the held record.
    .args([
        "--max-in-flight-records",
        "50",
        "--max-uncommitted-records",
        "50",
    ])
    .args(["--lag-refresh-ms", "200"])
    .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
    .args([
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "heartbeat.interval.ms=500",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    if hold {
        cmd.args([
            "--test-hold",
            &format!("0:{HELD}"),
            "--ordering",
            "unordered",
        ])
        .args([
            "--max-attempts",
            "1000000000",
            "--retry-backoff-ms",
            "10:50",
        ]);
    }
    cmd.spawn().expect("tidemark binary runs")
}

#[test]
fn metrics_agree_with_an_independent_client_and_health_answers_probes() {
    let broker = KafkaBroker::shared();
    let brokers = broker.bootstrap_servers();
    let (topic, group) = (unique_name("metrics"), unique_name("g"));
    broker.create_topic(&topic, 1).unwrap();
    workload::produce(&brokers, &workload::Workload::new(&topic, 1_000, 1), |_| {}).unwrap();

    let port = free_port();
    let mut members = Members(vec![member(&brokers, &topic, &group, port, true)]);
    wait_until("the member is ready", || {
        get(port, "/health/ready").filter(|(s, _)| *s == 200)
    });
    assert_eq!(get(port, "/health/live").unwrap().0, 200);

    // The held record stops the committed offset; at the commit-lag bound (50)
    // nothing more is taken.
    let at_bound = |samples: &Samples| {
        samples.get(&("tidemark_uncommitted_records".to_string(), Vec::new())) == Some(&50.0)
    };
    wait_until("committed at the held record and at the bound", || {
        let committed = verify::committed_offsets(&brokers, &group, &topic).ok()?;
        let (_, samples) = scrape(port)?;
        (committed[&0] == Some(HELD) && at_bound(&samples)).then_some(())
    });
    let (_, before) = scrape(port).unwrap();
    // Records keep arriving while nothing is fetched: the lag must follow.
    workload::produce(&brokers, &workload::Workload::new(&topic, 500, 1), |_| {}).unwrap();
    let high_watermark = verify::high_watermarks(&brokers, &topic).unwrap()[&0];
    let (exposition, after) = wait_until("the lag gauge follows the high watermark", || {
        let committed = verify::committed_offsets(&brokers, &group, &topic).ok()?[&0]?;
        let (body, samples) = scrape(port)?;
        let lag = partition_value(&samples, "tidemark_consumer_lag_records", &topic, 0)?;
        (lag == (high_watermark - committed) as f64).then_some((body, samples))
    });
    assert!(
        at_bound(&after),
        "the lag was checked while the partition was held back"
    );
    let polled = |s: &Samples| {
        s.get(&("tidemark_records_polled_total".to_string(), Vec::new()))
            .copied()
    };
    assert_eq!(
        polled(&after),
        polled(&before),
        "records were taken past the commit-lag bound"
    );
    assert_eq!(
        partition_value(&after, "tidemark_high_watermark", &topic, 0),
        Some(high_watermark as f64)
    );
    // Counters are monotonic.
    for ((name, labels), v) in &before {
        if name.ends_with("_total") {
            let now = after[&(name.clone(), labels.clone())];
            assert!(now >= *v, "{name}{labels:?} went down: {v} -> {now}");
        }
    }
    assert!(after
        .keys()
        .any(|(n, _)| n == "tidemark_records_completed_total"));
    promtool_check(&exposition);

    // A second member of the group gets no partition: live, not ready.
    let idle_port = free_port();
    members
        .0
        .push(member(&brokers, &topic, &group, idle_port, false));
    wait_until("the second member is live", || {
        get(idle_port, "/health/live").filter(|(s, _)| *s == 200)
    });
    std::thread::sleep(Duration::from_secs(3)); // room for a (wrong) assignment
    assert_eq!(get(idle_port, "/health/ready").unwrap().0, 503);
}

/// Members killed when the test ends, passed or not.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for child in &mut self.0 {
            kill_child(child);
        }
    }
}

/// `promtool check metrics` over the exposition, when promtool is installed
/// (required under `CI`).
fn promtool_check(exposition: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing (scripts/test.sh installs it)"
        );
        eprintln!("promtool missing: exposition check skipped");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
