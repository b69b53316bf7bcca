//! `tidemark lag`.

use std::time::Duration;

/// Committed offset, high watermark and lag per partition of a group on a topic.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: crate::cluster::ClusterArgs,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Topic.
    #[arg(long)]
    topic: String,
    /// Refresh every SECS seconds until interrupted (the table is redrawn in place
    /// on a terminal; with `--output json`, one JSON document per line).
    #[arg(long, value_name = "SECS")]
    watch: Option<f64>,
    /// `table` (like `kafka-consumer-groups.sh --describe`) or `json`.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

/// How `tidemark lag` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let redraw = a.output == Output::Table && std::io::stdout().is_terminal();
    let connection = a.cluster.connection()?;
    loop {
        let rows =
            tidemark::consumer_lag(&connection, &a.group, &a.topic, Duration::from_secs(10))?;
        let text = match a.output {
            Output::Table => format_lag(&a.group, &rows),
            Output::Json => format!("{}\n", json_lag(&a.group, &rows)),
        };
        if redraw && a.watch.is_some() {
            // Clear the screen and home the cursor (ANSI), then draw.
            print!("\x1b[2J\x1b[H");
        }
        print!("{text}");
        let Some(secs) = a.watch else {
            return Ok(());
        };
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.1)));
    }
}

/// One JSON document: the group, each partition's offsets and lag, and the total.
pub fn json_lag(group: &str, rows: &[tidemark::PartitionLag]) -> serde_json::Value {
    let partitions: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "topic": r.topic,
                "partition": r.partition,
                "committed_offset": r.committed,
                "high_watermark": r.high_watermark,
                "low_watermark": r.low_watermark,
                "lag": r.lag(),
            })
        })
        .collect();
    serde_json::json!({
        "group": group,
        "partitions": partitions,
        "total_lag": rows.iter().map(|r| r.lag()).sum::<i64>(),
    })
}

/// The table `kafka-consumer-groups --describe` shows, plus a total line.
pub fn format_lag(group: &str, rows: &[tidemark::PartitionLag]) -> String {
    let mut out = format!(
        "{:<20} {:<20} {:>9} {:>16} {:>16} {:>10}\n",
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
    );
    for r in rows {
        let committed = r.committed.map_or("-".to_string(), |c| c.to_string());
        out += &format!(
            "{:<20} {:<20} {:>9} {:>16} {:>16} {:>10}\n",
            group,
            r.topic,
            r.partition,
            committed,
            r.high_watermark,
            r.lag()
        );
    }
    out += &format!("TOTAL LAG {}\n", rows.iter().map(|r| r.lag()).sum::<i64>());
    out
}
