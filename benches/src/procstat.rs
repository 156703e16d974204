//! CPU time and peak memory of another process, from `/proc` (Linux only).

use std::time::Duration;

/// Total CPU time (user + system) of every live thread of `pid`, from
/// `/proc/<pid>/task/*/schedstat` (nanosecond resolution, unlike the 10 ms ticks of
/// `/proc/<pid>/stat`). Threads that already exited are not counted; Envoy's and
/// `writ serve`'s threads live as long as the process.
pub fn cpu_time(pid: u32) -> Duration {
    let mut ns: u64 = 0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat"))
            && let Some(first) = s.split_whitespace().next()
        {
            ns += first.parse::<u64>().unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in bytes.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The 1-minute load average, for the record beside every number.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
