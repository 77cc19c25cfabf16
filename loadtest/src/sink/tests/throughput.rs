//! Throughput check: the sink on one core against a pipelining client on another.
//! Run with `cargo test -p hikyaku-loadtest --lib --release -- --ignored --nocapture throughput`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client::body;
use super::start;
use crate::sink::{Profile, SinkStats};

/// Concurrent client connections.
const CONNECTIONS: usize = 32;
/// Messages per connection.
const MESSAGES: usize = 4000;
/// The floor the sink must sustain on one core.
const TARGET_PER_SECOND: f64 = 25_000.0;

#[test]
#[ignore = "benchmark: run in release with --ignored"]
fn sink_sustains_pipelined_2kb_messages_on_one_core() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(SocketAddr, Arc<SinkStats>)>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (sink, addr) = start(Profile::plain("bench")).await;
            ready_tx.send((addr, sink.stats())).unwrap();
            let _ = stop_rx.await;
            sink.stop().await;
        });
    });
    let (addr, stats) = ready_rx.recv().unwrap();

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = body("bench").into_bytes();
    let elapsed = client.block_on(async {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for conn in 0..CONNECTIONS {
            tasks.spawn(pipelining_client(addr, conn, body.clone()));
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        started.elapsed()
    });
    let total = (CONNECTIONS * MESSAGES) as u64;
    let rate = total as f64 / elapsed.as_secs_f64();
    eprintln!(
        "sink: {total} messages of {} bytes in {elapsed:?} = {rate:.0} msg/s",
        body.len()
    );
    assert_eq!(stats.accepted(), total);
    assert_eq!(stats.distinct(), total);
    assert_eq!(stats.duplicates(), 0);
    stop_tx.send(()).unwrap();
    server.join().unwrap();
    assert!(rate > TARGET_PER_SECOND, "{rate:.0} msg/s");
}

/// Sends [`MESSAGES`] messages the way a pipelining MTA does: envelope in one write, then
/// body + dot + next envelope in one write, one round trip per message.
async fn pipelining_client(addr: SocketAddr, conn: usize, body: Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut replies = Replies::default();
    replies.expect(&mut tcp, 1).await;
    tcp.write_all(b"EHLO bench.test\r\n").await.unwrap();
    replies.expect_ehlo(&mut tcp).await;
    let envelope = |i: usize| {
        format!("MAIL FROM:<b@s.test>\r\nRCPT TO:<r{conn}-{i}@x.test>\r\nDATA\r\n").into_bytes()
    };
    let mut out = envelope(0);
    tcp.write_all(&out).await.unwrap();
    replies.expect(&mut tcp, 3).await;
    for i in 0..MESSAGES {
        out.clear();
        out.extend_from_slice(&body);
        let last = i + 1 == MESSAGES;
        if !last {
            out.extend_from_slice(&envelope(i + 1));
        }
        tcp.write_all(&out).await.unwrap();
        replies.expect(&mut tcp, if last { 1 } else { 4 }).await;
    }
    tcp.write_all(b"QUIT\r\n").await.unwrap();
}

/// Counts reply lines without keeping them.
#[derive(Default)]
struct Replies {
    /// Lines received beyond those already expected.
    surplus: usize,
    /// Read buffer.
    buf: Vec<u8>,
}

impl Replies {
    /// Waits for `n` more single-line replies.
    async fn expect(&mut self, tcp: &mut TcpStream, n: usize) {
        if self.buf.is_empty() {
            self.buf = vec![0; 16 * 1024];
        }
        while self.surplus < n {
            let got = tcp.read(&mut self.buf).await.unwrap();
            assert!(got > 0, "sink closed");
            self.surplus += self.buf[..got].iter().filter(|&&b| b == b'\n').count();
        }
        self.surplus -= n;
    }

    /// Waits for the EHLO reply (seven lines without STARTTLS).
    async fn expect_ehlo(&mut self, tcp: &mut TcpStream) {
        self.expect(tcp, 7).await;
    }
}
