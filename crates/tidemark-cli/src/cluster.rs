//! How the CLI's commands reach the cluster: `--brokers` and `--client-config FILE`,
//! one [`Connection`] for every client a command makes.

use tidemark::{Connection, Properties};

/// The cluster a command talks to.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Bootstrap servers (`host:port[,host:port]`); optional when --client-config
    /// sets `bootstrap.servers`.
    #[arg(long, required_unless_present = "client_config")]
    brokers: Option<String>,
    /// A properties file (`key=value` lines, `#` comments) applied to every client
    /// the command makes — the consumer, the sink and dead-letter producer, lag and
    /// topic look-ups: security.protocol, sasl.*, ssl.* (librdkafka's names; Java's
    /// `sasl.jaas.config` for PLAIN/SCRAM is understood too). The same file Kafka's
    /// own tools take with --command-config. Values may read `${env:NAME}`, so a
    /// password need not be on the command line nor in the file. See
    /// docs/SECURITY.md.
    #[arg(long, value_name = "FILE")]
    client_config: Option<std::path::PathBuf>,
}

impl ClusterArgs {
    /// The connection: the file's properties, with `--brokers` (when given) as the
    /// bootstrap servers.
    pub fn connection(&self) -> anyhow::Result<Connection> {
        let properties = match &self.client_config {
            Some(path) => Properties::from_file(path)?,
            None => Properties::new(),
        };
        let mut connection = Connection::new("").with_properties(properties);
        if let Some(brokers) = &self.brokers {
            connection.brokers = brokers.clone();
        }
        anyhow::ensure!(
            !connection.brokers.is_empty(),
            "no bootstrap servers: give --brokers or set bootstrap.servers in --client-config"
        );
        Ok(connection)
    }
}
