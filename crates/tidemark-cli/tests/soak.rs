//! The soak (issue 31): a pipeline of three `tidemark run` members on a three-node
//! Apache Kafka cluster, fed at a steady rate for `TIDEMARK_SOAK_MINUTES` (default 30)
//! while faults come every 15–30 s: a member SIGKILLed and started again, a member
//! restarted gracefully, a member frozen (SIGSTOP) past its session timeout and let go
//! (what a network cut between it and the cluster looks like to the group), a broker
//! node SIGKILLed and started again. Every 5 s it samples each member's resident
//! memory and the group's lag. At the end the feed stops, the group catches up, and
//! an independent reader checks the output: nothing lost. Prints the figures that
//! BENCHMARKS.md's "Reliability" section records.
//!
//! `TIDEMARK_SOAK_MINUTES=30 cargo test --release -p tidemark-cli --features broker-tests --test soak -- --ignored --nocapture`;
//! `TIDEMARK_SOAK_FAULTS=kill,restart,freeze,broker` (the default: all) picks the faults.
//! (`scripts/test.sh` runs it for 1 minute).

// Needs Apache Kafka or PostgreSQL: `scripts/test.sh` runs it (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::Rng;
use tidemark_testkit::{unique_name, workload, Broker, KafkaCluster};

const MEMBERS: usize = 3;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn lag(brokers: &str, group: &str, topic: &str) -> i64 {
    let Ok(ends) = tidemark::high_watermarks(brokers, topic, Duration::from_secs(10)) else {
        return -1;
    };
    ends.values().sum::<i64>() - common::committed_total(brokers, group, topic)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

#[test]
#[ignore = "a long run: TIDEMARK_SOAK_MINUTES=30 cargo test -p tidemark-cli --features broker-tests --test soak -- --ignored"]
fn soak() {
    let minutes: f64 = std::env::var("TIDEMARK_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let mut cluster = KafkaCluster::start(3).expect("a three-node Apache Kafka cluster");
    let brokers = cluster.bootstrap_servers();
    let (input, output, group) = (unique_name("in"), unique_name("out"), unique_name("soak"));
    cluster.create_topic(&input, 8).unwrap();
    cluster.create_topic(&output, 8).unwrap();
    workload::produce(&brokers, &cluster.workload(&input, 2_000, 8), |_| {}).unwrap();
    // ~50 µs of CPU a record: three members hold the offered 1,000 records/s on 2
    // cores beside a three-node cluster with room for the faults' catch-up (with
    // the chaos tests' sha256:6000 they fell behind: 150 records/s over 30 minutes).
    let member = || {
        common::Member::new(common::member_with(
            &brokers,
            &input,
            &output,
            &group,
            None,
            &["--processor", "sha256:150"],
        ))
    };
    let mut members: Vec<common::Member> = (0..MEMBERS).map(|_| member()).collect();
    // 1,000 records/s: a steady load the three members hold with room for faults.
    let feeder = common::Feeder::start(&brokers, &input, 2_000, 500, Duration::from_millis(500));

    let kinds: Vec<String> = std::env::var("TIDEMARK_SOAK_FAULTS")
        .unwrap_or_else(|_| "kill,restart,freeze,broker".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let mut rng = rand::rng();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(minutes * 60.0);
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let (mut max_rss, mut max_lag, mut samples) = (0u64, 0i64, 0u32);
    let mut next_fault = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(5));
        for m in &members {
            max_rss = max_rss.max(rss_kib(m.id()));
        }
        max_lag = max_lag.max(lag(&brokers, &group, &input));
        samples += 1;
        if Instant::now() < next_fault {
            continue;
        }
        next_fault = Instant::now() + Duration::from_secs(rng.random_range(15..30));
        let slot = rng.random_range(0..MEMBERS);
        match kinds[rng.random_range(0..kinds.len())].as_str() {
            "kill" => {
                members[slot] = member(); // the old one is SIGKILLed when dropped
                *faults.entry("member SIGKILLed").or_default() += 1;
            }
            "restart" => {
                signal(members[slot].id(), "-TERM");
                let old = std::mem::replace(&mut members[slot], member());
                assert!(old.wait().success(), "a graceful stop failed");
                *faults.entry("member restarted gracefully").or_default() += 1;
            }
            "freeze" => {
                let pid = members[slot].id();
                signal(pid, "-STOP");
                std::thread::sleep(Duration::from_secs(10));
                signal(pid, "-CONT");
                *faults.entry("member frozen 10 s").or_default() += 1;
            }
            "broker" => {
                let node = rng.random_range(1..=3);
                cluster.kill(node);
                std::thread::sleep(Duration::from_secs(5));
                cluster.start_node(node).unwrap();
                *faults.entry("broker node SIGKILLed").or_default() += 1;
            }
            other => panic!("unknown fault {other:?} in TIDEMARK_SOAK_FAULTS"),
        }
    }
    let fed = feeder.finish();
    let caught_up = Instant::now();
    while lag(&brokers, &group, &input) != 0 {
        assert!(
            caught_up.elapsed() < Duration::from_secs(300),
            "the group did not catch up within 300 s of the feed stopping"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let catch_up = caught_up.elapsed();
    for m in members {
        signal(m.id(), "-TERM");
        assert!(m.wait().success(), "a member's final stop failed");
    }
    let ends = tidemark::high_watermarks(&brokers, &input, Duration::from_secs(30)).unwrap();
    common::assert_committed_to_end(&brokers, &group, &input, &ends);
    let report = common::check_sink(&brokers, &output, &ends);
    report.assert_nothing_lost();
    let records = ends.values().sum::<i64>();
    assert!(records as u64 >= fed);
    eprintln!(
        "soak: {:.1} min, {records} records (1,000/s offered), faults {faults:?}; \
         {samples} samples: peak member RSS {} MiB, peak lag {max_lag} records, \
         caught up {:.1} s after the feed stopped; nothing lost, {} duplicates ({:.2} %)",
        started.elapsed().as_secs_f64() / 60.0,
        max_rss / 1024,
        catch_up.as_secs_f64(),
        report.duplicates,
        report.duplicates as f64 * 100.0 / records as f64
    );
}
