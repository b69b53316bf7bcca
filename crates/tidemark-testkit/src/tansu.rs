//! A Tansu broker (a Kafka-compatible broker written in Rust) on a free loopback port.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::{Broker, TestkitError};

/// Where the `tansu` binary is: `$TANSU_BIN`, else `tansu` on `PATH`, else
/// `~/.cargo/bin/tansu` (where `scripts/tansu.sh install` puts it).
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = PathBuf::from(home).join(".cargo/bin/tansu");
        p.is_file().then_some(p)
    })
}

/// A running Tansu broker with in-memory storage, stopped (killed) on drop.
///
/// Started as `tansu broker --storage-engine memory://tansu/ --listener-url
/// tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT`. Tansu 0.6.0
/// quirks (DESIGN.md): no commit metadata is returned, commits are not fenced by
/// generation, and a group (re)join takes about 3 s. Found here, with its in-memory
/// storage: a Fetch from an offset inside a record batch returns only the batches
/// that *start* at or after it, so the rest of that batch is skipped (a consumer
/// resuming from a mid-batch commit, or after pause/resume, silently loses records);
/// and ListOffsets(latest) answers the most recent batch's base offset + 1. Tests
/// therefore produce one record per batch to Tansu (`Workload::batch_records`), and
/// `tidemark::high_watermarks` confirms the end with a fetch.
pub struct TansuBroker {
    child: Child,
    port: u16,
}

impl TansuBroker {
    /// Starts a broker on a free loopback port and waits (up to 30 s) until it serves
    /// metadata.
    ///
    /// # Errors
    /// [`TestkitError::Tansu`] when the binary is missing (run `scripts/tansu.sh
    /// install`) or the process exits; [`TestkitError::Timeout`] when it does not
    /// answer in time.
    pub fn start() -> Result<Self, TestkitError> {
        let bin = tansu_binary().ok_or_else(|| {
            TestkitError::Tansu(
                "binary not found ($TANSU_BIN, PATH, ~/.cargo/bin): run scripts/tansu.sh install"
                    .into(),
            )
        })?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| TestkitError::Tansu(format!("cannot run {}: {e}", bin.display())))?;
        let mut broker = TansuBroker { child, port };
        broker.wait_ready(Duration::from_secs(30))?;
        Ok(broker)
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| TestkitError::Tansu(e.to_string()))?
            {
                return Err(TestkitError::Tansu(format!("broker exited: {status}")));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", self.bootstrap_servers())
                    .create()
                    .map_err(TestkitError::kafka("metadata client"))?;
                if consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok()
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(TestkitError::Timeout(format!(
            "tansu on port {} not ready",
            self.port
        )))
    }
}

impl Broker for TansuBroker {
    fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One: a fetch inside a multi-record batch loses the rest of it (see above).
    fn max_batch_records(&self) -> Option<usize> {
        Some(1)
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| TestkitError::Tansu(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| TestkitError::Tansu(e.to_string()))
}
