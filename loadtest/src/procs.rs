//! Child processes of the benchmark and the demo: start, wait for a port, stop gracefully.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::process::Child;

/// A free port on 127.0.0.1 (free when checked).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port free on every address of `ips` at once (each bound and released to check).
pub fn free_port_on(ips: &[Ipv4Addr]) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        if ips.iter().all(|ip| StdListener::bind((*ip, port)).is_ok()) {
            return Ok(port);
        }
    }
    bail!("no port is free on all of {ips:?}")
}

/// A child process with a name for messages.
#[derive(Debug)]
pub struct Proc {
    /// Name for messages.
    pub name: &'static str,
    /// The process.
    pub child: Child,
}

impl Proc {
    /// Its pid (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(name = self.name, "did not stop on SIGTERM; killing");
            let _ = self.child.kill().await;
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("{what} did not start listening on {addr}")
}

/// The driver's own stopwatch (it measures other processes, not engine logic).
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> Instant {
    Instant::now()
}

/// Starts a fresh `redis-server` (nothing persisted, files under `dir`) and returns it with its
/// URL once it accepts connections.
pub async fn start_redis(bin: &str, dir: &std::path::Path) -> anyhow::Result<(Proc, String)> {
    use anyhow::Context;
    let port = free_port()?;
    let child = tokio::process::Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), "redis-server").await?;
    Ok((
        Proc {
            name: "redis-server",
            child,
        },
        format!("redis://127.0.0.1:{port}"),
    ))
}

/// Starts the sink as its own process (`loadtest_bin sink`) on `smtp_port`, with its stats at
/// `stats`, once both listen.
pub async fn start_sink(
    loadtest_bin: &std::path::Path,
    smtp_port: u16,
    stats: SocketAddr,
    starttls: bool,
) -> anyhow::Result<Proc> {
    start_sink_listening(
        loadtest_bin,
        &[format!("127.0.0.1:{smtp_port}")],
        stats,
        starttls,
    )
    .await
}

/// Starts the sink as its own process with one `--listen` per entry of `listens`
/// (`ADDR[=KIND[,opt…]]`) and its stats at `stats`, once every listener accepts; offering
/// STARTTLS (a self-signed certificate) when `starttls`.
pub async fn start_sink_listening(
    loadtest_bin: &std::path::Path,
    listens: &[String],
    stats: SocketAddr,
    starttls: bool,
) -> anyhow::Result<Proc> {
    use anyhow::Context;
    let mut cmd = tokio::process::Command::new(loadtest_bin);
    cmd.arg("sink");
    if starttls {
        cmd.arg("--starttls");
    }
    for l in listens {
        cmd.arg("--listen").arg(l);
    }
    let child = cmd
        .arg("--stats")
        .arg(stats.to_string())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the sink")?;
    wait_for_port(stats, "sink stats").await?;
    for l in listens {
        let addr = l.split_once('=').map_or(l.as_str(), |(a, _)| a);
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("sink listen address {addr:?}"))?;
        wait_for_port(addr, "sink").await?;
    }
    Ok(Proc {
        name: "sink",
        child,
    })
}

/// Starts `hikyaku-engine --config cfg` (warnings only on stderr).
pub fn start_engine(bin: &std::path::Path, cfg: &std::path::Path) -> anyhow::Result<Proc> {
    use anyhow::Context;
    Ok(Proc {
        name: "engine",
        child: tokio::process::Command::new(bin)
            .arg("--config")
            .arg(cfg)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    })
}
