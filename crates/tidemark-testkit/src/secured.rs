//! A secured Apache Kafka node for the security tests (`scripts/kafka.sh
//! start-secured`): a SASL_SSL listener with SCRAM-SHA-512 users `admin` (a super
//! user), `alice` and `bob`; an SSL listener that requires client certificates
//! (`carol`); `StandardAuthorizer` with no ACL meaning denied, and these ACLs:
//!
//! | principal | may |
//! |---|---|
//! | alice | everything on topics and groups `alice-*`; transactional ids `tidemark-*` |
//! | carol | everything on topics and groups `carol-*` |
//! | bob | groups `bob-*`; DESCRIBE only on topics `bob-describe-*`; READ and DESCRIBE (no WRITE) on `bob-readonly-*`; everything on `bob-ok-*` |
//!
//! Topics are created by `admin` ([`SecuredKafka::admin`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tidemark::Connection;

use crate::TestkitError;

/// The environment variable naming a running secured node's directory (what
/// `scripts/kafka.sh start-secured` printed last), shared by a whole test run.
pub const SHARED_SECURED_ENV: &str = "TIDEMARK_SECURED_KAFKA_DIR";

/// A running secured node: its listeners' ports and its certificates.
#[derive(Debug)]
pub struct SecuredKafka {
    /// SASL_SSL (SCRAM-SHA-512), advertised as `localhost`.
    pub sasl_ssl_port: u16,
    /// SSL with required client certificates, advertised as `localhost`.
    pub ssl_port: u16,
    /// PLAINTEXT (every client a super user: for benchmarks only).
    pub plaintext_port: u16,
    /// `ca.pem` (trusted), `other-ca.pem` (trusted by nobody), `carol.pem`/`carol.key`.
    pub certs: PathBuf,
}

impl SecuredKafka {
    /// The node shared by the tests: `$TIDEMARK_SECURED_KAFKA_DIR` when set, else one
    /// started on first use and stopped when this process exits.
    ///
    /// # Panics
    /// When none can be started (run `scripts/kafka.sh install`; `openssl` needed).
    pub fn shared() -> &'static SecuredKafka {
        static SHARED: OnceLock<SecuredKafka> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = match std::env::var(SHARED_SECURED_ENV) {
                Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => start().expect("a secured Apache Kafka node (scripts/kafka.sh start-secured)"),
            };
            Self::read(&dir).expect("the secured node's secured.env")
        })
    }

    fn read(dir: &Path) -> Result<Self, TestkitError> {
        let text = std::fs::read_to_string(dir.join("secured.env"))
            .map_err(|e| TestkitError::Broker(format!("{}: {e}", dir.display())))?;
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| TestkitError::Broker(format!("secured.env lacks {key}")))
        };
        let port = |key: &str| -> Result<u16, TestkitError> {
            get(key)?
                .parse()
                .map_err(|_| TestkitError::Broker(format!("secured.env: bad {key}")))
        };
        Ok(SecuredKafka {
            sasl_ssl_port: port("SASL_SSL_PORT")?,
            ssl_port: port("SSL_PORT")?,
            plaintext_port: port("PLAINTEXT_PORT")?,
            certs: PathBuf::from(get("CERTS")?),
        })
    }

    /// SCRAM-SHA-512 over TLS as `user` with `password`, trusting the test CA.
    pub fn scram(&self, user: &str, password: &str) -> Connection {
        Connection::new(format!("localhost:{}", self.sasl_ssl_port))
            .with("security.protocol", "SASL_SSL")
            .with("sasl.mechanisms", "SCRAM-SHA-512")
            .with("sasl.username", user)
            .with("sasl.password", password)
            .with("ssl.ca.location", self.cert("ca.pem"))
    }

    /// The super user `admin` (creates topics, reads everything).
    pub fn admin(&self) -> Connection {
        self.scram("admin", "admin-secret")
    }

    /// mTLS as `carol` (her client certificate), trusting the test CA.
    pub fn mtls(&self) -> Connection {
        Connection::new(format!("localhost:{}", self.ssl_port))
            .with("security.protocol", "SSL")
            .with("ssl.ca.location", self.cert("ca.pem"))
            .with("ssl.certificate.location", self.cert("carol.pem"))
            .with("ssl.key.location", self.cert("carol.key"))
    }

    /// The PLAINTEXT listener.
    pub fn plaintext(&self) -> Connection {
        Connection::new(format!("127.0.0.1:{}", self.plaintext_port))
    }

    /// Path of one of the node's certificate files.
    pub fn cert(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }
}

/// Writes `connection` as a properties file (`bootstrap.servers` first), as a user
/// gives it to `--client-config`.
///
/// # Errors
/// When the file cannot be written.
pub fn write_properties(connection: &Connection, path: &Path) -> std::io::Result<()> {
    let mut text = format!("bootstrap.servers={}\n", connection.brokers);
    for (k, v) in connection.properties.iter() {
        text += &format!("{k}={v}\n");
    }
    std::fs::write(path, text)
}

/// `scripts/kafka.sh start-secured`, watched by this process; returns its directory.
fn start() -> Result<PathBuf, TestkitError> {
    let line = crate::kafka::run_script(&["start-secured".to_string()], &[])?;
    line.split_whitespace()
        .nth(4)
        .map(PathBuf::from)
        .ok_or_else(|| {
            TestkitError::Broker(format!("unexpected output of start-secured: {line:?}"))
        })
}
