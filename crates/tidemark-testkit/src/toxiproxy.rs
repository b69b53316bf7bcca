//! Network faults between clients and a broker: Shopify's Toxiproxy
//! (`scripts/toxiproxy.sh install` builds it) in front of an Apache Kafka node
//! whose clients are told to connect through it ([`KafkaBroker::start_behind`]),
//! while the broker reaches itself directly. Faults are Toxiproxy's *toxics*, set
//! through its HTTP API: latency, a blackhole (`timeout` with timeout 0: data is
//! swallowed until the toxic is removed), connection resets, or the proxy disabled
//! (connections refused).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kafka::KafkaBroker;
use crate::TestkitError;

/// A broker behind a running Toxiproxy; both stop when dropped.
pub struct ProxiedKafka {
    /// The broker; its bootstrap address is the proxy's.
    pub broker: KafkaBroker,
    proxy: Child,
    api: String,
    http: reqwest::blocking::Client,
}

/// The proxy's name in Toxiproxy.
const PROXY: &str = "kafka";

/// The project's `scripts/toxiproxy.sh`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/toxiproxy.sh")
}

fn free_port() -> Result<u16, TestkitError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| TestkitError::Broker(e.to_string()))?;
    Ok(l.local_addr()
        .map_err(|e| TestkitError::Broker(e.to_string()))?
        .port())
}

impl ProxiedKafka {
    /// Builds Toxiproxy when missing, starts it on a free loopback port, starts a
    /// broker advertised at the proxy's listen port, and waits until the broker
    /// answers through the proxy.
    ///
    /// # Errors
    /// [`TestkitError::Broker`] when Toxiproxy cannot be built or started or the
    /// broker cannot; [`TestkitError::Timeout`] when the broker does not answer
    /// through the proxy within 60 s.
    pub fn start() -> Result<Self, TestkitError> {
        let out = Command::new("bash")
            .arg(script())
            .arg("install")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| TestkitError::Broker(format!("scripts/toxiproxy.sh: {e}")))?;
        if !out.status.success() {
            return Err(TestkitError::Broker(
                "scripts/toxiproxy.sh install failed".into(),
            ));
        }
        let server = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (api_port, listen_port) = (free_port()?, free_port()?);
        let proxy = Command::new(&server)
            .args(["-host", "127.0.0.1", "-port", &api_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestkitError::Broker(format!("starting {server}: {e}")))?;
        // A test binary keeps its proxy in a static, never dropped: a watcher stops
        // the server once this process is gone (as `KAFKA_WATCH_PID` does for brokers).
        let watch = format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {server} 2>/dev/null; do sleep 1; done; kill {server} 2>/dev/null",
            me = std::process::id(),
            server = proxy.id()
        );
        let _ = Command::new("bash")
            .args(["-c", &watch])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let (broker, broker_port) = KafkaBroker::start_behind(listen_port)?;
        let proxied = ProxiedKafka {
            broker,
            proxy,
            api: format!("http://127.0.0.1:{api_port}"),
            http: reqwest::blocking::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let created = proxied.call(
                reqwest::Method::POST,
                "/proxies",
                serde_json::json!({
                    "name": PROXY,
                    "listen": format!("127.0.0.1:{listen_port}"),
                    "upstream": format!("127.0.0.1:{broker_port}"),
                    "enabled": true,
                }),
            );
            match created {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(e),
            }
        }
        proxied.broker.ready(Duration::from_secs(60))?;
        Ok(proxied)
    }

    /// `bootstrap.servers` for clients: the proxy.
    pub fn bootstrap_servers(&self) -> String {
        use crate::Broker;
        self.broker.bootstrap_servers()
    }

    /// Adds the toxic `name` of `kind` (`latency`, `timeout`, `reset_peer`, …) with
    /// `attributes`, on both directions.
    ///
    /// # Errors
    /// When Toxiproxy refuses it.
    pub fn add_toxic(
        &self,
        name: &str,
        kind: &str,
        attributes: serde_json::Value,
    ) -> Result<(), TestkitError> {
        for stream in ["upstream", "downstream"] {
            self.call(
                reqwest::Method::POST,
                &format!("/proxies/{PROXY}/toxics"),
                serde_json::json!({
                    "name": format!("{name}-{stream}"),
                    "type": kind,
                    "stream": stream,
                    "toxicity": 1.0,
                    "attributes": attributes,
                }),
            )?;
        }
        Ok(())
    }

    /// Removes the toxic `name` (both directions).
    ///
    /// # Errors
    /// When Toxiproxy refuses it (no such toxic).
    pub fn remove_toxic(&self, name: &str) -> Result<(), TestkitError> {
        for stream in ["upstream", "downstream"] {
            self.call(
                reqwest::Method::DELETE,
                &format!("/proxies/{PROXY}/toxics/{name}-{stream}"),
                serde_json::Value::Null,
            )?;
        }
        Ok(())
    }

    /// Enables or disables the proxy (disabled: connections are refused and the
    /// open ones closed).
    ///
    /// # Errors
    /// When Toxiproxy refuses it.
    pub fn set_enabled(&self, enabled: bool) -> Result<(), TestkitError> {
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{PROXY}"),
            serde_json::json!({ "enabled": enabled }),
        )
    }

    /// Enables the proxy and removes every toxic (Toxiproxy's `POST /reset`): the
    /// state a test starts from.
    ///
    /// # Errors
    /// When Toxiproxy refuses it.
    pub fn reset(&self) -> Result<(), TestkitError> {
        self.call(reqwest::Method::POST, "/reset", serde_json::Value::Null)
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(), TestkitError> {
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if !body.is_null() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .map_err(|e| TestkitError::Broker(format!("toxiproxy {path}: {e}")))?;
        if !response.status().is_success() {
            return Err(TestkitError::Broker(format!(
                "toxiproxy {path}: {} {}",
                response.status(),
                response.text().unwrap_or_default()
            )));
        }
        Ok(())
    }
}

impl Drop for ProxiedKafka {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
    }
}
