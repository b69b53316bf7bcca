//! `tidemark bench --sleep-sweep`: workers on blocking work. Every record's
//! `process` sleeps (`sleep:MICROS`, a blocking call simulated), unordered, on 8
//! partitions, with 2, 64, 256 and 1,024 workers; the rate must not fall as workers
//! grow (issue 20: with rayon's pool 1,024 workers fell to 4.7 k records/s).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use tidemark::{CommitPolicy, ProcessingOrder};
use tidemark_testkit::workload;

use super::report;
use super::scenarios::{self, Measurement};
use tidemark_testkit::builtin::Kind;

/// Workers of the sweep.
const WORKERS: [usize; 4] = [2, 64, 256, 1024];
/// Partitions of each sweep topic.
const PARTITIONS: i32 = 8;

/// Records of the run with `workers` workers: about two seconds of the ideal rate
/// (`workers` records per `micros`), at least 4,000, at most 400,000.
fn records_for(workers: usize, micros: u64) -> u64 {
    let ideal_per_s = workers as f64 * 1e6 / micros.max(1) as f64;
    ((ideal_per_s * 2.0) as u64).clamp(4_000, 400_000)
}

/// Runs the sweep on `brokers` and writes `sleep.md` and `sleep.csv` under `out`.
/// Topics are `bench-sleep-W-<random>`, created here.
pub fn run(
    brokers: &str,
    create: &dyn Fn(&str, i32) -> anyhow::Result<()>,
    payload_bytes: usize,
    micros: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let mut rows: Vec<(usize, Measurement)> = Vec::new();
    for workers in WORKERS {
        let records = records_for(workers, micros);
        let topic = format!("bench-sleep-{workers}-{:08x}", rand::random::<u32>());
        create(&topic, PARTITIONS)?;
        let mut w = workload::Workload::new(&topic, records, PARTITIONS);
        w.payload_bytes = payload_bytes;
        eprintln!("pre-filling {topic}: {records} records, {PARTITIONS} partitions");
        workload::produce(brokers, &w, |_| {})?;
        scenarios::check_nothing_dropped(brokers, &topic, PARTITIONS)?;
        let m = scenarios::with_cpu(|| {
            scenarios::tidemark(
                brokers,
                &topic,
                Kind::Sleep { micros },
                workers,
                CommitPolicy::EveryMs(1_000),
                ProcessingOrder::Unordered,
                &format!("{workers} workers, unordered"),
                records,
            )
        })
        .with_context(|| format!("{workers} workers"))?;
        anyhow::ensure!(
            m.records == records,
            "{workers} workers processed {} of {records} records",
            m.records
        );
        report::progress(&m);
        rows.push((workers, m));
    }
    let mut md = format!(
        "| workers | records | records/s | ideal (workers / {micros} µs) | of ideal | CPU µs/record | workers busy | peak RSS MiB |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let mut csv = String::from(
        "workers,records,records_per_s,ideal_records_per_s,cpu_us_per_record,workers_busy,peak_rss_mib\n",
    );
    for (workers, m) in &rows {
        let ideal = *workers as f64 * 1e6 / micros.max(1) as f64;
        let cpu = m.cpu_us_per_record().unwrap_or(f64::NAN);
        let busy = m.workers_busy.unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "| {workers} | {} | {:.0} | {ideal:.0} | {:.0}% | {cpu:.2} | {:.0}% | {:.0} |",
            m.records,
            m.records_per_sec(),
            100.0 * m.records_per_sec() / ideal,
            busy * 100.0,
            m.peak_rss_kib as f64 / 1024.0
        );
        let _ = writeln!(
            csv,
            "{workers},{},{:.0},{ideal:.0},{cpu:.3},{busy:.3},{:.1}",
            m.records,
            m.records_per_sec(),
            m.peak_rss_kib as f64 / 1024.0
        );
    }
    print!("{md}");
    std::fs::write(out.join("sleep.md"), md)?;
    std::fs::write(out.join("sleep.csv"), csv)?;
    println!("written: {}/sleep.md, sleep.csv", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_is_about_two_ideal_seconds_within_bounds() {
        assert_eq!(records_for(2, 1_000), 4_000);
        assert_eq!(records_for(64, 1_000), 128_000);
        assert_eq!(records_for(1024, 1_000), 400_000);
    }
}
