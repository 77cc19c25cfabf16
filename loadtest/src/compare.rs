//! `bench --compare`: the same message count and size pushed by Postfix's `smtp-source` into
//! Postfix's `smtp-sink` on this machine, as a yardstick for what plain SMTP over loopback
//! costs here, with each process's CPU read from `/proc`.
//!
//! `smtp-source` reuses each connection (`-d`), runs as many sessions as hikyaku had
//! connections (`-s`), sends `-l` bytes of body per message to a distinct recipient each
//! (`-N`), and does not pipeline; `smtp-sink` is told not to announce PIPELINING (`-p`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::Command;

use crate::procs::{free_port, monotonic_now, wait_for_port, Proc};
use crate::procstat;

/// Most messages `smtp-source` is asked for; a larger `--count` is capped (and said so).
pub const MAX_COUNT: u64 = 300_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Messages (capped at [`MAX_COUNT`]).
    pub count: u64,
    /// Body bytes per message (`smtp-source -l`).
    pub body_bytes: usize,
    /// Parallel sessions (`smtp-source -s`).
    pub sessions: u32,
    /// Give up after this long.
    pub timeout: Duration,
}

/// The yardstick's figures. Field names are read by scripts; keep them stable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareReport {
    /// Messages `smtp-source` sent.
    pub smtp_source_count: u64,
    /// Its parallel sessions.
    pub smtp_source_sessions: u32,
    /// Body bytes per message.
    pub smtp_source_body_bytes: usize,
    /// Seconds from starting `smtp-source` to its exit.
    pub smtp_source_elapsed_s: f64,
    /// Messages per minute over that time.
    pub smtp_source_per_min: f64,
    /// `smtp-source` CPU (user + system) per message, µs.
    pub smtp_source_cpu_us_per_msg: f64,
    /// `smtp-sink` CPU per message, µs.
    pub smtp_sink_cpu_us_per_msg: f64,
    /// hikyaku's steady msg/min ÷ `smtp_source_per_min`.
    pub ratio_vs_smtp_source: f64,
    /// Set when the count was capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_source_note: Option<String>,
}

impl CompareReport {
    /// Lines for the human table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "smtp-source        {n} messages, {s} sessions, {b} B: {el:.2} s, {pm:.0} msg/min\n\
             CPU per message    smtp-source {sc:.1} µs, smtp-sink {kc:.1} µs\n\
             hikyaku ÷ smtp-source  {r:.2}× (steady msg/min)\n",
            n = self.smtp_source_count,
            s = self.smtp_source_sessions,
            b = self.smtp_source_body_bytes,
            el = self.smtp_source_elapsed_s,
            pm = self.smtp_source_per_min,
            sc = self.smtp_source_cpu_us_per_msg,
            kc = self.smtp_sink_cpu_us_per_msg,
            r = self.ratio_vs_smtp_source,
        );
        if let Some(n) = &self.smtp_source_note {
            out.push_str(&format!("                   ({n})\n"));
        }
        out
    }
}

/// Where Debian puts Postfix's test programs, then the usual others.
const DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// `smtp-source` and `smtp-sink`, or an error saying how to install them.
pub fn find_tools() -> anyhow::Result<(PathBuf, PathBuf)> {
    find_tools_in(&DIRS)
}

/// [`find_tools`] looking in `dirs`.
fn find_tools_in(dirs: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        dirs.iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    match (find("smtp-source"), find("smtp-sink")) {
        (Some(source), Some(sink)) => Ok((source, sink)),
        _ => bail!(
            "--compare needs Postfix's smtp-source and smtp-sink (looked in {}); \
             install them with `apt-get install postfix`",
            dirs.join(", ")
        ),
    }
}

/// The count actually sent and the note saying so when it was capped.
pub fn capped(count: u64) -> (u64, Option<String>) {
    if count > MAX_COUNT {
        (
            MAX_COUNT,
            Some(format!(
                "smtp-source sent {MAX_COUNT} messages, not the {count} of the hikyaku run; rates compare, totals do not"
            )),
        )
    } else {
        (count, None)
    }
}

/// hikyaku's msg/min ÷ smtp-source's (0 when either is missing).
pub fn ratio(hikyaku_per_min: f64, source_per_min: f64) -> f64 {
    if hikyaku_per_min > 0.0 && source_per_min > 0.0 {
        hikyaku_per_min / source_per_min
    } else {
        0.0
    }
}

/// `smtp-sink`'s arguments: PIPELINING announced or not, room for every session, listen
/// backlog `backlog`. It never announces CHUNKING: a DATA-only server.
pub fn sink_args(addr: SocketAddr, sessions: u32, pipelining: bool, as_root: bool) -> Vec<String> {
    let mut args = Vec::new();
    if !pipelining {
        args.push("-p".to_owned());
    }
    args.extend(["-m".to_owned(), (sessions + 16).max(256).to_string()]);
    if as_root {
        // smtp-sink refuses to keep super-user privileges.
        args.extend(["-u".to_owned(), "nobody".to_owned()]);
    }
    args.push(addr.to_string());
    args.push(backlog(sessions).to_string());
    args
}

/// The listen backlog: every session may connect at once, with room to spare.
fn backlog(sessions: u32) -> u32 {
    (sessions * 4).max(1024)
}

/// `smtp-source`'s arguments.
pub fn source_args(addr: SocketAddr, count: u64, body_bytes: usize, sessions: u32) -> Vec<String> {
    [
        "-d",
        "-N",
        "-s",
        &sessions.to_string(),
        "-m",
        &count.to_string(),
        "-l",
        &body_bytes.to_string(),
        "-M",
        "bench.hikyaku.test",
        "-f",
        "news@hikyaku.test",
        "-t",
        "reader@sink.test",
        "-S",
        "Weekly news",
        &addr.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// A file in `dir` for a process's output: its path and the handle.
fn log_file(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, Stdio)> {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok((path, Stdio::from(f)))
}

/// Starts Postfix's `smtp-sink` on `addr` for `sessions` parallel sessions, announcing
/// PIPELINING or not (never CHUNKING), its messages in `dir`/`log`; returns once it listens.
pub async fn start_smtp_sink(
    addr: SocketAddr,
    sessions: u32,
    pipelining: bool,
    dir: &Path,
    log: &str,
) -> anyhow::Result<Proc> {
    let (_, sink_bin) = find_tools()?;
    let (sink_log, sink_err) = log_file(dir, log)?;
    let sink = Proc {
        name: "smtp-sink",
        child: Command::new(&sink_bin)
            .args(sink_args(addr, sessions, pipelining, procstat::is_root()))
            .stdout(Stdio::null())
            .stderr(sink_err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", sink_bin.display()))?,
    };
    if let Err(e) = wait_for_port(addr, "smtp-sink").await {
        let log = std::fs::read_to_string(&sink_log).unwrap_or_default();
        bail!("{e}: {}", log.trim());
    }
    Ok(sink)
}

/// Runs `smtp-sink` and `smtp-source`; `ratio_vs_smtp_source` is left 0 for the caller.
pub async fn run(opts: &CompareOptions, dir: &Path) -> anyhow::Result<CompareReport> {
    let (source_bin, _) = find_tools()?;
    let (count, note) = capped(opts.count);
    let sessions = opts.sessions.max(1);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let log = |name: &str| log_file(dir, name);
    let sink = start_smtp_sink(addr, sessions, false, dir, "smtp-sink.log").await?;
    let sink_cpu0 = procstat::cpu_seconds(sink.pid()).unwrap_or(0.0);

    let (source_log, source_err) = log("smtp-source.log")?;
    let t0 = monotonic_now();
    let mut source = Command::new(&source_bin)
        .args(source_args(addr, count, opts.body_bytes, sessions))
        .stdout(Stdio::null())
        .stderr(source_err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", source_bin.display()))?;
    let pid = source.id().unwrap_or(0);
    // Poll until it has exited but is not yet reaped: a zombie's /proc/<pid>/stat still holds
    // its final CPU times.
    let mut source_cpu = 0.0;
    loop {
        match procstat::state(pid) {
            Some('Z') | None => break,
            Some(_) => source_cpu = procstat::cpu_seconds(pid).unwrap_or(source_cpu),
        }
        if t0.elapsed() > opts.timeout {
            let _ = source.kill().await;
            sink.stop().await;
            bail!("smtp-source did not finish within {:?}", opts.timeout);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64().max(1e-3);
    source_cpu = procstat::cpu_seconds(pid).unwrap_or(source_cpu);
    let sink_cpu = procstat::cpu_seconds(sink.pid()).unwrap_or(0.0) - sink_cpu0;
    let status = source.wait().await.context("waiting for smtp-source")?;
    sink.stop().await;
    if !status.success() {
        let log = std::fs::read_to_string(&source_log).unwrap_or_default();
        bail!("smtp-source failed ({status}): {}", log.trim());
    }
    let per_msg = |cpu: f64| cpu * 1e6 / count.max(1) as f64;
    Ok(CompareReport {
        smtp_source_count: count,
        smtp_source_sessions: sessions,
        smtp_source_body_bytes: opts.body_bytes,
        smtp_source_elapsed_s: elapsed,
        smtp_source_per_min: count as f64 / elapsed * 60.0,
        smtp_source_cpu_us_per_msg: per_msg(source_cpu),
        smtp_sink_cpu_us_per_msg: per_msg(sink_cpu),
        ratio_vs_smtp_source: 0.0,
        smtp_source_note: note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_capped_with_a_note() {
        assert_eq!(capped(100_000), (100_000, None));
        let (n, note) = capped(1_000_000);
        assert_eq!(n, MAX_COUNT);
        assert!(note.is_some_and(|n| n.contains("1000000")));
    }

    #[test]
    fn missing_tools_say_how_to_install_them() {
        let e = find_tools_in(&["/nonexistent-hikyaku"])
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("apt-get install postfix")));
    }

    #[test]
    fn ratio_guards_zero() {
        assert_eq!(ratio(2_000_000.0, 1_000_000.0), 2.0);
        assert_eq!(ratio(2_000_000.0, 0.0), 0.0);
        assert_eq!(ratio(0.0, 5.0), 0.0);
    }

    #[test]
    fn arguments() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 2525));
        let sink = sink_args(addr, 32, false, true);
        assert_eq!(
            sink,
            ["-p", "-m", "256", "-u", "nobody", "127.0.0.1:2525", "1024"]
        );
        assert_eq!(sink_args(addr, 600, false, false)[2], "616");
        assert_eq!(
            sink_args(addr, 600, false, false)
                .last()
                .map(String::as_str),
            Some("2400")
        );
        // The engine's own run against smtp-sink: PIPELINING announced.
        assert_eq!(
            sink_args(addr, 32, true, false),
            ["-m", "256", "127.0.0.1:2525", "1024"]
        );
        let src = source_args(addr, 1000, 2048, 32).join(" ");
        assert!(src.starts_with("-d -N -s 32 -m 1000 -l 2048 "), "{src}");
        assert!(src.ends_with(" 127.0.0.1:2525"));
    }
}
