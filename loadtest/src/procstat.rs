//! CPU time and peak memory of a process, from `/proc` (Linux).

/// Clock ticks per second of `/proc/<pid>/stat` times. Linux fixes USER_HZ at 100 on every
/// architecture it exports to user space.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds used so far by `pid`, or `None` if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Peak resident set size of `pid` in MiB (VmHWM), or `None` if it is gone.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    status_kb(pid, "VmHWM:").map(|kb| kb / 1024.0)
}

/// Current resident set size of `pid` in MiB (VmRSS), or `None` if it is gone.
pub fn rss_mb(pid: u32) -> Option<f64> {
    status_kb(pid, "VmRSS:").map(|kb| kb / 1024.0)
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Proportional set size of `pid` in MiB (shared pages divided among their users, so the
/// sum over a group of processes sharing memory, like PostgreSQL's, counts it once), from
/// `/proc/<pid>/smaps_rollup`; `None` if it is gone or not readable.
pub fn pss_mb(pid: u32) -> Option<f64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The state letter of `pid` (`R`, `S`, `Z` for an exited child not yet reaped, …).
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.chars().next()
}

/// Every pid whose command name (`/proc/<pid>/comm`) is `comm`.
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// Whether this process runs as root (real uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(peak_rss_mb(me).is_some_and(|m| m > 0.0));
        assert!(rss_mb(me).is_some_and(|m| m > 0.0));
        assert!(pss_mb(me).is_some_and(|m| m > 0.0));
        assert!(state(me).is_some_and(|c| c.is_ascii_uppercase()));
        assert_eq!(cpu_seconds(u32::MAX), None);
        assert_eq!(rss_mb(u32::MAX), None);
        assert_eq!(state(u32::MAX), None);
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
        assert!(pids_named(comm.trim()).contains(&me));
    }
}
