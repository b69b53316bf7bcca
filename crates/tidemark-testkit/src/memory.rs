//! Peak memory of the current process, for tests and benchmarks (Linux `/proc`).

/// Resets the peak-RSS counter (VmHWM) of this process, so the next
/// [`peak_rss_kib`] covers only what runs after (Linux `clear_refs`, value 5; a
/// no-op elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process since start or the last
/// [`reset_peak_rss`] (VmHWM), KiB; 0 where `/proc` is missing.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
