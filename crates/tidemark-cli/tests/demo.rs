//! `tidemark demo` on the embedded cluster at sizes that used to fail: more records
//! than the mock cluster keeps per partition (5 MiB, the oldest dropped beyond it),
//! and partitions that get no record. The demo verifies every record itself and
//! exits non-zero otherwise; a size it cannot run is refused before anything runs.

use std::process::{Command, Output};

fn demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("demo")
        .args(args)
        .output()
        .expect("tidemark binary runs")
}

fn assert_verified(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("verified: all"),
        "demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 125,000 records a partition, three times what the mock cluster's log keeps.
#[test]
fn a_million_records_are_all_processed_and_committed() {
    assert_verified(&demo(&["--records", "1000000", "--rounds", "0"]));
}

/// 64 partitions and records for only 40 of them: the others have nothing to commit.
#[test]
fn partitions_without_records_are_not_failures() {
    let out = demo(&["--records", "40", "--partitions", "64", "--rounds", "0"]);
    assert_verified(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("nothing to commit").count(), 24, "{stdout}");
}

#[test]
fn a_size_it_cannot_run_is_refused_before_anything_runs() {
    let out = demo(&["--partitions", "5000"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--partitions must be between"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("mock cluster"));
}
