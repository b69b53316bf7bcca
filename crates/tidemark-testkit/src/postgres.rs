//! A PostgreSQL server for the PostgreSQL sink's tests, started by
//! `scripts/postgres.sh` (a fresh data directory, a free loopback port, trust
//! authentication for loopback), and a blocking client to check what is in its
//! tables as an independent reader.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::TestkitError;

/// Environment variable naming the run's shared PostgreSQL server (a libpq URL), set
/// by `scripts/test.sh`.
pub const SHARED_POSTGRES_ENV: &str = "TIDEMARK_POSTGRES_URL";

/// The project's `scripts/postgres.sh` (install, start, stop, restart).
pub fn postgres_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
}

/// A PostgreSQL server: the run's shared one, or one of this value's own (stopped
/// and deleted when it is dropped or this process exits).
pub struct PostgresServer {
    url: String,
    /// The data directory of a server this value owns.
    dir: Option<PathBuf>,
}

impl PostgresServer {
    /// The server shared by the tests: `$TIDEMARK_POSTGRES_URL` when set, else one
    /// started on first use for this test process. Tests sharing it use tables of
    /// their own ([`unique_name`](crate::unique_name)).
    ///
    /// # Panics
    /// When no server can be started (run `scripts/postgres.sh install`).
    pub fn shared() -> &'static PostgresServer {
        static SHARED: OnceLock<PostgresServer> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var(SHARED_POSTGRES_ENV) {
            Ok(url) if !url.is_empty() => PostgresServer { url, dir: None },
            _ => Self::start().expect("a PostgreSQL server (scripts/postgres.sh install)"),
        })
    }

    /// Starts a server of its own; it stops when the value is dropped or this
    /// process exits.
    ///
    /// # Errors
    /// [`TestkitError::Database`] when the script fails (PostgreSQL not installed,
    /// initdb or the server failing).
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(&[])
    }

    /// `scripts/postgres.sh start` with `envs`; the server it printed.
    fn start_with(envs: &[(&str, &str)]) -> Result<Self, TestkitError> {
        let line = script_with(&["start"], envs)?;
        let mut fields = line.split_whitespace();
        let (Some(port), Some(_pid), Some(dir)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(TestkitError::Database(format!(
                "unexpected output of start: {line:?}"
            )));
        };
        Ok(PostgresServer {
            url: format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
            dir: Some(PathBuf::from(dir)),
        })
    }

    /// Starts a server of its own with TLS on (`PG_TLS=1 scripts/postgres.sh start`):
    /// its certificate for `localhost` is signed by the CA [`tls_file`](Self::tls_file)
    /// `("ca.pem")` (`"other-ca.pem"` is trusted by nobody), and the role `tidemark`
    /// (which the caller creates) may connect over TLS only; `postgres` as before.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_tls() -> Result<Self, TestkitError> {
        Self::start_with(&[("PG_TLS", "1")])
    }

    /// A file of a TLS server's `tls` folder (`ca.pem`, `other-ca.pem`).
    ///
    /// # Panics
    /// On the shared server (not this value's).
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.dir
            .as_ref()
            .expect("an owned server")
            .join("tls")
            .join(name)
    }

    /// The libpq URL of the server (user `postgres`, database `postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (fast shutdown: open connections are closed); its data
    /// stays for [`restart`](Self::restart).
    ///
    /// # Panics
    /// On the shared server, which this value does not own.
    pub fn stop(&self) {
        let dir = self.dir.as_ref().expect("only an owned server stops");
        let _ = script(&["stop", &dir.display().to_string()]);
    }

    /// Starts a stopped server again, same port and data.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn restart(&self) -> Result<(), TestkitError> {
        let dir = self.dir.as_ref().expect("only an owned server restarts");
        script(&["restart", &dir.display().to_string()]).map(|_| ())
    }

    /// A client of the server, for checks.
    ///
    /// # Errors
    /// [`TestkitError::Database`] when it cannot connect.
    pub fn client(&self) -> Result<PostgresClient, TestkitError> {
        PostgresClient::connect(&self.url)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = script(&["stop", &dir.display().to_string()]);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `scripts/postgres.sh ARGS` (the server watched by this process); its stdout.
fn script(args: &[&str]) -> Result<String, TestkitError> {
    script_with(args, &[])
}

/// [`script`] with more environment variables.
fn script_with(args: &[&str], envs: &[(&str, &str)]) -> Result<String, TestkitError> {
    let out = Command::new("bash")
        .arg(postgres_script())
        .args(args)
        .envs(envs.iter().copied())
        .env("PG_WATCH_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| TestkitError::Database(format!("cannot run scripts/postgres.sh: {e}")))?;
    if !out.status.success() {
        return Err(TestkitError::Database(format!(
            "scripts/postgres.sh {} exited with {} (installed? scripts/postgres.sh install)",
            args.join(" "),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A blocking PostgreSQL client (tokio-postgres on a runtime of its own).
pub struct PostgresClient {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl PostgresClient {
    /// Connects to `url`.
    ///
    /// # Errors
    /// [`TestkitError::Database`] when the server does not accept the connection.
    pub fn connect(url: &str) -> Result<Self, TestkitError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestkitError::Database(format!("runtime: {e}")))?;
        let (client, connection) = runtime
            .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
            .map_err(|e| TestkitError::Database(format!("connecting to {url}: {e}")))?;
        runtime.spawn(connection);
        Ok(PostgresClient { runtime, client })
    }

    /// Runs `sql` (one or more statements, no parameters).
    ///
    /// # Errors
    /// [`TestkitError::Database`] with the server's message.
    pub fn execute(&self, sql: &str) -> Result<(), TestkitError> {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| TestkitError::Database(format!("{sql}: {e}")))
    }

    /// The rows of `sql`.
    ///
    /// # Errors
    /// [`TestkitError::Database`] with the server's message.
    pub fn query(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>, TestkitError> {
        self.runtime
            .block_on(self.client.query(sql, &[]))
            .map_err(|e| TestkitError::Database(format!("{sql}: {e}")))
    }

    /// The `(src_partition, src_offset)` of every row of a sink table, and how many
    /// rows each has (more than one is a duplicate).
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub fn sink_rows(
        &self,
        table: &str,
    ) -> Result<std::collections::BTreeMap<(i32, i64), i64>, TestkitError> {
        let rows = self.query(&format!(
            "SELECT src_partition, src_offset, count(*) FROM {table} GROUP BY 1, 2"
        ))?;
        Ok(rows
            .iter()
            .map(|r| ((r.get::<_, i32>(0), r.get::<_, i64>(1)), r.get::<_, i64>(2)))
            .collect())
    }
}
