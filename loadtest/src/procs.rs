//! Child processes of the benchmark and the demo: start, wait for a port, stop gracefully.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::process::Child;

/// A free port on 127.0.0.1 (free when checked).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
