//! `tidemark lag`.

use std::time::Duration;

/// Committed offset, high watermark and lag per partition of a group on a topic.
#[derive(clap::Args)]
pub struct Args {
    /// Bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Topic.
    #[arg(long)]
    topic: String,
}

pub fn main(a: Args) -> anyhow::Result<()> {
    let rows = tidemark::consumer_lag(&a.brokers, &a.group, &a.topic, Duration::from_secs(10))?;
    print!("{}", format_lag(&a.group, &rows));
    Ok(())
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
