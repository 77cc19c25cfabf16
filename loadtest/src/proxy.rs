//! A TCP proxy for fault scenarios: it delays every byte by a fixed time in each direction (a
//! long network path, as `tc netem delay` would on a real interface, without needing the
//! privileges netem needs), and can be switched *down*: every open connection is cut and new
//! ones are closed as soon as they are accepted (a server or network outage), until switched up.
//!
//! Delay is latency, not a bandwidth cap: bytes read are stamped and written `delay` later by a
//! separate task per direction, so a pipelining client keeps its window full across the path.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running proxy; stops (cutting its connections) when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    down: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` and forwards each connection to `upstream`, `delay` each way.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        delay: Duration,
    ) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (down, watch_down) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, upstream, delay, watch_down));
        Ok(Proxy { addr, down, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Down: cuts every open connection and closes new ones at once. Up: forwards again.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down.send_replace(true);
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    delay: Duration,
    down: watch::Receiver<bool>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *down.borrow() {
            drop(client);
            continue;
        }
        let down = down.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let there = tokio::spawn(pump(cr, sw, delay, down.clone()));
            let back = tokio::spawn(pump(sr, cw, delay, down));
            let _ = tokio::join!(there, back);
        });
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read; ends at end of stream (passed
/// on, also delayed), on an error, or when the proxy goes down (the connection is cut).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    mut down: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now() + delay, Vec::new()));
                    return;
                }
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if bytes.is_empty() || to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let cut = async move {
        let _ = down.wait_for(|d| *d).await;
    };
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        _ = cut => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn delays_both_ways_and_cuts_when_down() {
        let echo = echo_server().await;
        let delay = Duration::from_millis(60);
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), echo, delay)
            .await
            .unwrap();
        let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let start = Instant::now();
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let rtt = start.elapsed();
        assert!(rtt >= delay * 2, "round trip {rtt:?} includes both delays");

        proxy.set_down(true);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "an open connection is cut");
        let mut again = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), again.read(&mut got))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "a new connection is closed at once while down");

        proxy.set_down(false);
        let mut c = TcpStream::connect(proxy.local_addr()).await.unwrap();
        c.write_all(b"back").await.unwrap();
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
    }
}
