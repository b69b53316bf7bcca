//! Helpers of the chaos tests: `tidemark run` members as child processes, a watcher
//! of committed offsets, and the check of the sink topic.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tidemark_testkit::verify;

/// Size of a chaos run: `TIDEMARK_CHAOS_RECORDS` (default `default`).
pub fn records(default: u64) -> u64 {
    std::env::var("TIDEMARK_CHAOS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Number of chaos events: `TIDEMARK_CHAOS_EVENTS` (default `default`).
pub fn events(default: usize) -> usize {
    std::env::var("TIDEMARK_CHAOS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The in-flight and commit-lag bounds every member runs with
/// (`--max-in-flight-records`, `--max-uncommitted-records`): the commit-lag one is the
/// duplicate bound per kill.
pub const MAX_IN_FLIGHT: usize = 2_000;

/// The group members' processor: slow enough (about 3,000 records/s on 2 cores) that
/// the chaos events land while records are in flight (Apache Kafka itself moves far
/// more than that).
pub const PROCESSOR: &str = "sha256:6000";

/// Records committed so far by `group` on `topic`, summed over partitions.
pub fn committed_total(brokers: &str, group: &str, topic: &str) -> i64 {
    verify::committed_offsets(brokers, group, topic)
        .unwrap()
        .values()
        .map(|c| c.unwrap_or(0))
        .sum()
}

/// Starts `tidemark run` as a member of `group`, consuming `input`, producing to
/// `output`.
pub fn member(
    brokers: &str,
    input: &str,
    output: &str,
    group: &str,
    idle_secs: Option<u32>,
) -> Child {
    member_with(brokers, input, output, group, idle_secs, &[])
}

/// [`member`] with extra `tidemark run` arguments.
pub fn member_with(
    brokers: &str,
    input: &str,
    output: &str,
    group: &str,
    idle_secs: Option<u32>,
    extra: &[&str],
) -> Child {
    let sink = ["--sink".to_string(), format!("topic:{output}")];
    member_sinking(brokers, input, &sink, group, idle_secs, extra)
}

/// [`member_with`] whose outputs go where the `sink` arguments say (`--sink …` and
/// its companions).
pub fn member_sinking(
    brokers: &str,
    input: &str,
    sink: &[String],
    group: &str,
    idle_secs: Option<u32>,
    extra: &[&str],
) -> Child {
    member_command(brokers, input, sink, group, idle_secs, extra)
        .spawn()
        .expect("tidemark binary runs")
}

/// The command [`member_sinking`] runs (its standard error inherited), to change
/// before spawning.
pub fn member_command(
    brokers: &str,
    input: &str,
    sink: &[String],
    group: &str,
    idle_secs: Option<u32>,
    extra: &[&str],
) -> Command {
    // TIDEMARK_BIN: a copy of the binary, so a long run (the soak) is not rebuilt
    // under its feet.
    let bin =
        std::env::var("TIDEMARK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tidemark").into());
    let mut cmd = Command::new(bin);
    cmd.args([
        "run",
        "--brokers",
        brokers,
        "--topic",
        input,
        "--group",
        group,
    ])
    .args(["--workers", "2"])
    .args(sink)
    .args(["--commit", "every-ms:200"])
    .args(["--max-in-flight-records", &MAX_IN_FLIGHT.to_string()])
    .args(["--max-uncommitted-records", &MAX_IN_FLIGHT.to_string()])
    .args(["--drain-timeout-ms", "5000"])
    .args([
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "heartbeat.interval.ms=500",
    ])
    .args(["-X", "max.poll.interval.ms=20000"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    if let Some(s) = idle_secs {
        cmd.args(["--exit-when-idle", &s.to_string()]);
    }
    // PROCESSOR unless `extra` names its own.
    if !extra.contains(&"--processor") {
        cmd.args(["--processor", PROCESSOR]);
    }
    cmd.args(extra);
    cmd
}

/// Starts `tidemark run` as a free consumer of `assign` (`TOPIC:P,...`) keeping its
/// offsets in the file `store`, producing to `output`.
pub fn free_member(
    brokers: &str,
    assign: &str,
    store: &std::path::Path,
    output: &str,
    idle_secs: Option<u32>,
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(["run", "--brokers", brokers, "--assign", assign])
        .arg("--offset-store")
        .arg(format!("file:{}", store.display()))
        .args(["--processor", "sha256:20", "--workers", "2"])
        .args(["--sink", &format!("topic:{output}")])
        .args(["--commit", "every-ms:200"])
        .args(["--max-in-flight-records", &MAX_IN_FLIGHT.to_string()])
        .args(["--max-uncommitted-records", &MAX_IN_FLIGHT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(s) = idle_secs {
        cmd.args(["--exit-when-idle", &s.to_string()]);
    }
    cmd.spawn().expect("tidemark binary runs")
}

/// Asks a member to leave gracefully (SIGTERM) and waits for it; asserts exit 0.
pub fn stop_gracefully(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful stop exited with {exit}");
}

/// Kills a member (SIGKILL: no drain, no commit, no leave).
pub fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Watches the committed offsets of `group` on `topic` every 100 ms; `finish`
/// returns every backwards move seen.
pub struct CommitWatcher {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<String>>,
}

impl CommitWatcher {
    pub fn start(brokers: &str, group: &str, topic: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (b, g, t, s) = (
            brokers.to_string(),
            group.to_string(),
            topic.to_string(),
            stop.clone(),
        );
        let handle = std::thread::spawn(move || {
            let mut last: BTreeMap<i32, i64> = BTreeMap::new();
            let mut backwards = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok(now) = verify::committed_offsets(&b, &g, &t) {
                    for (p, c) in now {
                        let Some(c) = c else { continue };
                        let prev = last.entry(p).or_insert(c);
                        if c < *prev {
                            backwards.push(format!("partition {p}: {prev} -> {c}"));
                        }
                        *prev = c;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            backwards
        });
        CommitWatcher { stop, handle }
    }

    pub fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

pub use tidemark_testkit::verify::SinkReport;

/// Reads `output` back and matches it against every input offset below `ends`.
pub fn check_sink(brokers: &str, output: &str, ends: &BTreeMap<i32, i64>) -> SinkReport {
    verify::sink_report(brokers, output, ends).unwrap()
}

/// SIGKILLs a running child and reaps it, keeping the handle.
pub fn kill_child(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Asserts that `group`'s committed offsets on `input` equal the high watermarks
/// `ends`, as an independent client sees them (lag 0).
pub fn assert_committed_to_end(brokers: &str, group: &str, input: &str, ends: &BTreeMap<i32, i64>) {
    let committed = verify::committed_offsets(brokers, group, input).unwrap();
    for (p, end) in ends {
        assert_eq!(
            committed[p],
            Some(*end),
            "partition {p} not committed to its end"
        );
    }
}

/// The crash chaos both delivery modes share: `kills` members of `group` started
/// with `extra` arguments, each SIGKILLed once it has committed a random 2–5 % of the
/// input itself (waiting at most three times `alive_ms.end` for that), then one that
/// runs until idle. Asserts every kill hit work in progress, the last member
/// exits 0, committed offsets never went backwards and end at `ends`; returns what
/// the sink holds.
#[allow(clippy::too_many_arguments)]
pub fn kill_and_recover(
    brokers: &str,
    input: &str,
    output: &str,
    group: &str,
    ends: &BTreeMap<i32, i64>,
    kills: usize,
    alive_ms: std::ops::Range<u64>,
    extra: &[&str],
) -> SinkReport {
    let sink = ["--sink".to_string(), format!("topic:{output}")];
    kill_and_recover_sinking(brokers, input, &sink, group, ends, kills, alive_ms, extra);
    check_sink(brokers, output, ends)
}

/// [`kill_and_recover`] with the members' outputs where the `sink` arguments say;
/// the caller checks the sink.
#[allow(clippy::too_many_arguments)]
pub fn kill_and_recover_sinking(
    brokers: &str,
    input: &str,
    sink: &[String],
    group: &str,
    ends: &BTreeMap<i32, i64>,
    kills: usize,
    alive_ms: std::ops::Range<u64>,
    extra: &[&str],
) {
    use rand::Rng;
    let records: i64 = ends.values().sum();
    let watcher = CommitWatcher::start(brokers, group, input);
    let mut rng = rand::rng();
    // Each member is killed once it has made progress of its own — a random share
    // of the input committed since it started (1/50 to 1/20) — so every kill lands
    // on a member at work, on a fast machine or a slow one (issue 31: a fixed alive
    // time let a fast async member finish everything before its kill). `alive_ms`
    // bounds the wait for that progress, three times over (a member behind a killed
    // one's session timeout waits about 6 s for its partitions).
    let most = Duration::from_millis(alive_ms.end * 3);
    let mut hits = 0;
    for _ in 0..kills {
        let child = member_sinking(brokers, input, sink, group, None, extra);
        let step = rng.random_range(records / 50..records / 20).max(1);
        let from = committed_total(brokers, group, input);
        let started = std::time::Instant::now();
        let mut now = from;
        while now < from + step && started.elapsed() < most {
            std::thread::sleep(Duration::from_millis(50));
            now = committed_total(brokers, group, input);
        }
        kill(child);
        if now > from && now < records {
            hits += 1;
        }
    }
    assert_eq!(
        hits, kills,
        "a kill landed on a member that was not at work"
    );
    let during = committed_total(brokers, group, input);
    assert!(
        during < records,
        "the chaos left no work for the last member"
    );
    let mut last = member_sinking(brokers, input, sink, group, Some(8), extra);
    let status = last.wait().unwrap();
    assert!(status.success(), "final run exited with {status}");
    let backwards = watcher.finish();
    assert!(
        backwards.is_empty(),
        "committed offsets went backwards: {backwards:?}"
    );
    assert_committed_to_end(brokers, group, input, ends);
}

/// Produces `batch` records to `topic` (8 partitions) every `every` on a thread of
/// its own until [`finish`](Feeder::finish): work that keeps arriving while a fault
/// lands, so the fault always hits a member at work however fast it is.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl Feeder {
    /// Starts feeding after `first_id` records already produced.
    pub fn start(brokers: &str, topic: &str, first_id: u64, batch: u64, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (b, t, s) = (brokers.to_string(), topic.to_string(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut next = first_id;
            while !s.load(Ordering::Relaxed) {
                let w = tidemark_testkit::workload::Workload {
                    first_id: next,
                    ..tidemark_testkit::workload::Workload::new(t.clone(), batch, 8)
                };
                // A batch the cluster refuses mid-fault is tried again (the input
                // offsets it did get are checked like any other).
                if tidemark_testkit::workload::produce(&b, &w, |_| {}).is_ok() {
                    next += batch;
                }
                std::thread::sleep(every);
            }
            next
        });
        Feeder { stop, handle }
    }

    /// Stops feeding; returns the id after the last record produced.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Waits until `group` has committed at least `at_least` records of `topic`; panics
/// after `limit` (a bound on the wait).
pub fn wait_committed(brokers: &str, group: &str, topic: &str, at_least: i64, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while committed_total(brokers, group, topic) < at_least {
        assert!(
            std::time::Instant::now() < deadline,
            "{group} did not commit {at_least} records of {topic} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A member that is SIGKILLed when dropped unless it was waited for: a test that
/// fails midway leaves no `tidemark run` behind.
pub struct Member(Option<Child>);

impl Member {
    pub fn new(child: Child) -> Self {
        Member(Some(child))
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the member to exit.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port (for `--metrics-addr`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port`: (status, body), or `None` when nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}
