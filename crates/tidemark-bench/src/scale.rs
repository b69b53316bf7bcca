//! `tidemark bench --scale`: how the default `Config`'s throughput and memory grow
//! with partitions (16 → 256), with members of one consumer group (1 → 3 processes
//! on one broker), and with the backlog (1× → 10× records waiting in the topic:
//! peak RSS must stay flat, bounded by the in-flight bounds, not the backlog).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tidemark_testkit::{verify, workload};

use super::report;
use super::scenarios::{self, Measurement};
use tidemark_testkit::builtin::Kind;

/// One row of the scale table.
pub struct Row {
    /// `partitions`, `members` or `backlog records`.
    pub dimension: &'static str,
    pub value: u64,
    pub m: Measurement,
}

/// What the scale runs need from the bench's set-up.
pub struct Setup<'a> {
    pub brokers: &'a str,
    /// Creates a topic with that many partitions.
    pub create: &'a dyn Fn(&str, i32) -> anyhow::Result<()>,
    pub payload_bytes: usize,
    /// Records per partitions and members run.
    pub records: u64,
    /// Records of the smaller backlog (the larger one holds 10×).
    pub backlog: u64,
    pub cpu: Kind,
}

/// Runs the three sweeps and writes `scale.md` and `scale.csv` under `out`.
pub fn run(s: &Setup<'_>, out: &Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let fill = |topic: &str, records: u64, partitions: i32| -> anyhow::Result<()> {
        (s.create)(topic, partitions)?;
        let mut w = workload::Workload::new(topic, records, partitions);
        w.payload_bytes = s.payload_bytes;
        w.keys = 1024;
        eprintln!("pre-filling {topic}: {records} records, {partitions} partitions");
        workload::produce(s.brokers, &w, |_| {})?;
        scenarios::check_nothing_dropped(s.brokers, topic, partitions)
    };
    for partitions in [16, 64, 256] {
        let topic = format!("bench-partitions-{partitions}");
        fill(&topic, s.records, partitions)?;
        for kind in [Kind::Noop, s.cpu] {
            let m = scenarios::tidemark_default(s.brokers, &topic, kind, s.records, None)?;
            report::progress(&m);
            rows.push(Row {
                dimension: "partitions",
                value: partitions as u64,
                m,
            });
        }
    }
    for members in [1, 2, 3] {
        let topic = format!("bench-members-{members}");
        fill(&topic, s.records, 16)?;
        let m = group_of(s.brokers, &topic, members, s.cpu, s.records)?;
        report::progress(&m);
        rows.push(Row {
            dimension: "members",
            value: members,
            m,
        });
    }
    // In a process of its own: the bench process's RSS keeps what pre-filling
    // the topic allocated, so its high-water mark would grow with the backlog.
    for records in [s.backlog, 10 * s.backlog] {
        let topic = format!("bench-backlog-{records}");
        fill(&topic, records, 16)?;
        for kind in [Kind::Noop, s.cpu] {
            let m = group_of(s.brokers, &topic, 1, kind, records)?;
            report::progress(&m);
            rows.push(Row {
                dimension: "backlog records",
                value: records,
                m,
            });
        }
    }
    write(out, &rows)
}

/// `members` processes of `tidemark run` (the CLI's defaults, but commits every
/// 100 ms so the end is seen promptly) in one fresh group on `topic`. Measured from
/// their start (process start-up and group joins included) until an independent
/// client sees the group's committed offsets reach `records`; peak RSS is the
/// largest member's VmHWM.
fn group_of(
    brokers: &str,
    topic: &str,
    members: u64,
    kind: Kind,
    records: u64,
) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("locating the tidemark binary")?;
    let group = format!("bench-members-{:08x}", rand::random::<u32>());
    let processor = scenarios::kind_name(kind);
    let started = Instant::now();
    let mut children: Vec<Child> = (0..members)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "run",
                    "--brokers",
                    brokers,
                    "--topic",
                    topic,
                    "--group",
                    &group,
                ])
                .args(["--processor", &processor, "--commit", "every-ms:100"])
                .args(["--exit-when-idle", "2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting a member")
        })
        .collect::<anyhow::Result<_>>()?;
    let deadline = started + Duration::from_secs(600);
    let busy = loop {
        let committed: i64 = verify::committed_offsets(brokers, &group, topic)?
            .values()
            .map(|c| c.unwrap_or(0))
            .sum();
        if committed as u64 >= records {
            break started.elapsed();
        }
        // A member idle for 2 s exits (with three members, one can run out of
        // partitions' work early): only a failure, or the whole group gone, is an
        // error.
        let exits: Vec<_> = children
            .iter_mut()
            .filter_map(|c| c.try_wait().ok().flatten())
            .collect();
        if let Some(status) = exits.iter().find(|s| !s.success()) {
            anyhow::bail!("a member failed ({status}) before the group committed {records} records (it had {committed})");
        }
        anyhow::ensure!(
            exits.len() < children.len(),
            "every member exited before the group committed {records} records (it had {committed})"
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "the group did not commit {records} records in 600 s (it had {committed})"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Members that already exited are not counted (their /proc entry is gone).
    let peak_rss_kib = children
        .iter()
        .map(|c| vm_hwm_kib(c.id()))
        .max()
        .unwrap_or(0);
    for mut child in children {
        child.wait().context("waiting for a member")?;
    }
    Ok(Measurement {
        scenario: format!("tidemark run, {members} members"),
        processor,
        records,
        busy,
        peak_rss_kib,
        ..Default::default()
    })
}

/// Peak resident set of process `pid`, KiB (`VmHWM` in /proc; 0 when unreadable).
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Prints the table and writes `scale.md` and `scale.csv`: records/s and peak RSS
/// per row, and records/s relative to the first row of the same dimension and
/// processor.
fn write(out: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut md = String::from(
        "| dimension | value | processor | records | records/s | vs first | peak RSS MiB |\n|---|---:|---|---:|---:|---:|---:|\n",
    );
    let mut csv = String::from(
        "dimension,value,processor,records,records_per_s,relative_to_first,peak_rss_mib\n",
    );
    for r in rows {
        let first = rows
            .iter()
            .find(|f| f.dimension == r.dimension && f.m.processor == r.m.processor)
            .map_or(1.0, |f| f.m.records_per_sec());
        let relative = r.m.records_per_sec() / first;
        let rss = r.m.peak_rss_kib as f64 / 1024.0;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {:.0}% | {rss:.0} |",
            r.dimension,
            r.value,
            r.m.processor,
            r.m.records,
            r.m.records_per_sec(),
            relative * 100.0
        );
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.0},{relative:.3},{rss:.1}",
            r.dimension,
            r.value,
            r.m.processor,
            r.m.records,
            r.m.records_per_sec()
        );
    }
    println!("{md}");
    std::fs::write(out.join("scale.md"), md)?;
    std::fs::write(out.join("scale.csv"), csv)?;
    println!("written: {}/scale.csv, scale.md", out.display());
    Ok(())
}
