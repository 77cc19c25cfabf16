//! A minimal HTTP/1.1 endpoint serving the stats as JSON, for scripts and dashboards.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::stats::SinkStats;

/// Largest request head read; anything longer gets 431.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /stats` (the JSON of [`SinkStats::to_json`]) on `listener` until `shutdown`
/// completes; every response closes its connection.
pub async fn serve_stats(
    listener: TcpListener,
    stats: Arc<SinkStats>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    clients.spawn(answer(tcp, Arc::clone(&stats)));
                }
                Err(error) => {
                    tracing::warn!(%error, "stats accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    clients.shutdown().await;
}

/// Reads one request head and answers it.
async fn answer(mut tcp: TcpStream, stats: Arc<SinkStats>) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut tcp)).await {
        Ok(Head::Complete(head)) => head,
        Ok(Head::TooLarge) => {
            respond(
                &mut tcp,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )
            .await;
            return;
        }
        Ok(Head::Closed) | Err(_) => return,
    };
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/stats") => {
            let body = stats.to_json().to_string();
            respond(&mut tcp, "200 OK", "application/json", body.as_bytes()).await;
        }
        (b"GET", _) => respond(&mut tcp, "404 Not Found", "text/plain", b"not found\n").await,
        _ => {
            respond(
                &mut tcp,
                "405 Method Not Allowed",
                "text/plain",
                b"GET only\n",
            )
            .await;
        }
    }
}

/// The outcome of reading a request head.
enum Head {
    /// The head up to and including its blank line.
    Complete(Vec<u8>),
    /// The head exceeded [`MAX_HEAD`].
    TooLarge,
    /// The client closed or failed before finishing the head.
    Closed,
}

/// Reads until the blank line ending the request head.
async fn read_head(tcp: &mut TcpStream) -> Head {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => n,
        };
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Head::Complete(head);
        }
        if head.len() > MAX_HEAD {
            return Head::TooLarge;
        }
    }
}

/// Writes a complete response and closes.
async fn respond(tcp: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if tcp.write_all(head.as_bytes()).await.is_ok() && tcp.write_all(body).await.is_ok() {
        let _ = tcp.shutdown().await;
    }
}
