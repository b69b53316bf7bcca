//! Peak memory and CPU time of the current process, for tests and benchmarks (Linux
//! `/proc`, POSIX `getrusage`).

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

/// CPU time (user + system) used so far by this process and by its children that
/// were waited for (`getrusage` `RUSAGE_SELF` + `RUSAGE_CHILDREN`); zero where the
/// call fails. The difference of two readings is the CPU a measurement cost, which a
/// noisy machine disturbs far less than wall time.
pub fn cpu_time() -> std::time::Duration {
    fn of(who: libc::c_int) -> std::time::Duration {
        // SAFETY: rusage is plain data; all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one rusage into the value we pass.
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return std::time::Duration::ZERO;
        }
        let tv = |t: libc::timeval| {
            std::time::Duration::from_secs(t.tv_sec as u64)
                + std::time::Duration::from_micros(t.tv_usec as u64)
        };
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}
