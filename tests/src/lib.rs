//! The shared harness of hikyaku's black-box tests: a private `redis-server` per test on a free
//! port, the project's DNS server and sink on loopback addresses, the engine in-process or as a
//! child process, and helpers to enqueue jobs and read back events and queue state.
//!
//! Each scenario is its own file under `tests/`; this crate only holds what they share.
//!
//! # Layout
//! - [`redis`]: a throwaway Redis server.
//! - [`cluster`]: a throwaway three-master Redis Cluster.
//! - [`world`]: DNS + sink + engine config for one scenario.
//! - [`queue`]: enqueuing jobs and reading events and queue depths.
//! - [`api`]: the API in-process over a fresh PostgreSQL database.
//! - [`scenario`]: the fault scenarios' zone, recipients, sinks and generated campaign.
//! - [`smtp_client`]: an SMTP client for the API's inbound listener, and DSN/ARF reports.

pub mod api;
pub mod cluster;
pub mod queue;
pub mod redis;
pub mod scenario;
pub mod smtp_client;
pub mod world;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = hikyaku_engine::clock::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` from `127.0.0.1:port` over HTTP/1.0: the body of a 200 answer, else `None`.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_owned())
}
