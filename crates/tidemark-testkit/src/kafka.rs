//! Apache Kafka (single node, KRaft) on free loopback ports, through
//! `scripts/kafka.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::{Broker, TestkitError};

/// Environment variable naming the `bootstrap.servers` of an Apache Kafka broker that
/// the whole test run shares (`scripts/test.sh` starts one and sets it).
pub const SHARED_BROKERS_ENV: &str = "TIDEMARK_KAFKA_BROKERS";

/// The project's `scripts/kafka.sh` (install, start, stop).
pub fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka.sh")
}

/// An Apache Kafka 4.x broker: one combined broker+controller on loopback, started by
/// `scripts/kafka.sh start` (a fresh KRaft log dir, replication factor 1 for the
/// internal topics, `group.initial.rebalance.delay.ms=0`).
///
/// [`KafkaBroker::shared`] is the one most tests use; [`KafkaBroker::start`] gives a
/// test a broker of its own that it may [`stop`](Self::stop) and
/// [`restart`](Self::restart).
pub struct KafkaBroker {
    bootstrap: String,
    /// `None` for a broker this value did not start (the run's shared one).
    process: Option<BrokerProcess>,
}

struct BrokerProcess {
    pid: Option<u32>,
    dir: PathBuf,
}

impl KafkaBroker {
    /// The broker shared by the tests: `$TIDEMARK_KAFKA_BROKERS` when set, else one
    /// started on first use for this test process and stopped when the process
    /// exits. Tests sharing it use their own topics and groups ([`unique_name`]).
    ///
    /// # Panics
    /// When no broker can be started (run `scripts/kafka.sh install`): the test
    /// cannot run.
    pub fn shared() -> &'static KafkaBroker {
        static SHARED: OnceLock<KafkaBroker> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var(SHARED_BROKERS_ENV) {
            Ok(bootstrap) if !bootstrap.is_empty() => {
                let broker = KafkaBroker {
                    bootstrap,
                    process: None,
                };
                broker
                    .wait_ready(Duration::from_secs(60))
                    .expect("the shared Apache Kafka broker answers");
                broker
            }
            _ => Self::start().expect("an Apache Kafka broker (scripts/kafka.sh install)"),
        })
    }

    /// Starts a broker of its own (fresh log dir, free ports) and waits until it
    /// serves metadata; it stops when the value is dropped or this process exits.
    ///
    /// # Errors
    /// [`TestkitError::Broker`] when the script fails (Kafka not installed, Java
    /// missing, the broker exits); [`TestkitError::Timeout`] when it does not serve
    /// metadata within 60 s.
    pub fn start() -> Result<Self, TestkitError> {
        let (port, pid, dir) = run_start(None, None)?;
        let broker = KafkaBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            process: Some(BrokerProcess {
                pid: Some(pid),
                dir,
            }),
        };
        broker.wait_ready(Duration::from_secs(60))?;
        Ok(broker)
    }

    /// Starts a broker of its own whose clients are told to connect to
    /// `127.0.0.1:advertised_port` (a proxy in front of it, e.g. Toxiproxy) while it
    /// reaches itself directly; returns it (its bootstrap address is the proxy's)
    /// and the port it listens on for clients. Not waited for: the proxy may not
    /// forward yet.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_behind(advertised_port: u16) -> Result<(Self, u16), TestkitError> {
        let (port, pid, dir) = run_start(None, Some(advertised_port))?;
        let broker = KafkaBroker {
            bootstrap: format!("127.0.0.1:{advertised_port}"),
            process: Some(BrokerProcess {
                pid: Some(pid),
                dir,
            }),
        };
        Ok((broker, port))
    }

    /// Waits until the broker serves metadata and its group coordinator answers
    /// (through its advertised address).
    ///
    /// # Errors
    /// [`TestkitError::Timeout`] when it does not within `limit`.
    pub fn ready(&self, limit: Duration) -> Result<(), TestkitError> {
        self.wait_ready(limit)
    }

    /// Stops the broker gracefully (SIGTERM; its log dir stays for
    /// [`restart`](Self::restart)).
    ///
    /// # Panics
    /// On the run's shared broker, which this value does not own.
    pub fn stop(&mut self) {
        let process = self.process.as_mut().expect("only an owned broker stops");
        if let Some(pid) = process.pid.take() {
            stop_pid(pid);
        }
    }

    /// Starts a stopped broker again with the same log dir and ports.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    ///
    /// # Panics
    /// On the run's shared broker, or while the broker still runs.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let process = self
            .process
            .as_mut()
            .expect("only an owned broker restarts");
        assert!(
            process.pid.is_none(),
            "stop the broker before restarting it"
        );
        let (_, pid, _) = run_start(Some(&process.dir), None)?;
        process.pid = Some(pid);
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), TestkitError> {
        wait_ready(&self.bootstrap, limit)
    }
}

impl Broker for KafkaBroker {
    fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(BrokerProcess {
            pid: Some(pid),
            dir,
        }) = self.process.take()
        {
            stop_pid(pid);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `scripts/kafka.sh start [DIR]`, watched by this process; returns port, pid, dir.
fn run_start(
    dir: Option<&Path>,
    advertised_port: Option<u16>,
) -> Result<(u16, u32, PathBuf), TestkitError> {
    let mut args = vec!["start".to_string()];
    args.extend(dir.map(|d| d.display().to_string()));
    let port = advertised_port.map(|p| p.to_string());
    let envs: Vec<(&str, &str)> = port
        .iter()
        .map(|p| ("KAFKA_ADVERTISED_PORT", p.as_str()))
        .collect();
    let line = run_script(&args, &envs)?;
    let mut fields = line.split_whitespace();
    let parsed = (|| {
        let port = fields.next()?.parse().ok()?;
        let pid = fields.next()?.parse().ok()?;
        let dir = PathBuf::from(fields.next()?);
        Some((port, pid, dir))
    })();
    parsed.ok_or_else(|| TestkitError::Broker(format!("unexpected output of start: {line:?}")))
}

/// Runs `scripts/kafka.sh ARGS` with `envs`, watched by this process (a broker it
/// starts stops when this process exits); its standard output.
///
/// # Errors
/// [`TestkitError::Broker`] when the script cannot run or exits non-zero.
pub(crate) fn run_script(args: &[String], envs: &[(&str, &str)]) -> Result<String, TestkitError> {
    let out = Command::new("bash")
        .arg(kafka_script())
        .args(args)
        .envs(envs.iter().copied())
        .env("KAFKA_WATCH_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| TestkitError::Broker(format!("cannot run scripts/kafka.sh: {e}")))?;
    if !out.status.success() {
        return Err(TestkitError::Broker(format!(
            "scripts/kafka.sh {} exited with {} (installed? scripts/kafka.sh install)",
            args.join(" "),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn stop_pid(pid: u32) {
    let _ = Command::new("bash")
        .arg(kafka_script())
        .args(["stop", &pid.to_string()])
        .status();
}

/// `prefix` with a random suffix: a topic or group name no other test uses on a
/// shared broker.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Waits until `bootstrap` serves metadata and its group coordinator answers
/// OffsetFetch: a fresh broker creates `__consumer_offsets` on the first
/// FindCoordinator and answers NOT_COORDINATOR until then, which librdkafka's
/// `committed_offsets` does not retry.
pub(crate) fn wait_ready(bootstrap: &str, limit: Duration) -> Result<(), TestkitError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tidemark-testkit-probe")
        .create()
        .map_err(TestkitError::kafka("metadata client"))?;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let ready = consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok_and(|m| !m.brokers().is_empty())
            && consumer
                .committed_offsets(rdkafka::TopicPartitionList::new(), Duration::from_secs(2))
                .is_ok();
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(TestkitError::Timeout(format!(
        "kafka at {bootstrap} not serving metadata"
    )))
}
