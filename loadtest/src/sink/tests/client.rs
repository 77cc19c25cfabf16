//! A tiny SMTP test client that reads whole (multi-line) replies.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for anything before failing.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A buffered client over any stream (TCP or TLS).
pub struct Client<S = TcpStream> {
    /// The connection.
    pub stream: S,
    /// Bytes received but not yet returned.
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    /// Connects without reading the greeting.
    pub async fn connect(addr: SocketAddr) -> Self {
        Client::over(TcpStream::connect(addr).await.unwrap())
    }

    /// Connects, checks the greeting, sends EHLO and returns the EHLO reply.
    pub async fn ready(addr: SocketAddr) -> (Self, String) {
        let mut c = Client::connect(addr).await;
        assert_eq!(c.reply().await, "220 sink.test ESMTP hikyaku-sink\r\n");
        c.send("EHLO client.test\r\n").await;
        let ehlo = c.reply().await;
        assert!(ehlo.starts_with("250-sink.test\r\n"), "{ehlo}");
        (c, ehlo)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Wraps an established stream.
    pub fn over(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `text` in one write call.
    pub async fn send(&mut self, text: impl AsRef<[u8]>) {
        self.stream.write_all(text.as_ref()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Reads one line (with its CRLF).
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.line_inner())
            .await
            .expect("timed out waiting for a reply line")
    }

    /// Reads one complete reply: lines until one whose fourth byte is not `-`.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let line = self.line().await;
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Reads `n` replies and returns them.
    pub async fn replies(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.reply().await);
        }
        out
    }

    /// True if the peer closed (EOF or reset) without sending more bytes.
    pub async fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(PATIENCE, self.stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    /// True if nothing at all arrives within `wait` (the connection stays open and silent).
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        self.buf.is_empty()
            && tokio::time::timeout(wait, self.stream.read(&mut byte))
                .await
                .is_err()
    }

    async fn line_inner(&mut self) -> String {
        loop {
            if let Some(eol) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=eol).collect();
                return String::from_utf8(line).unwrap();
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed; had {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A 2 KB message body with its terminating dot, including a dot-stuffed line.
pub fn body(tag: &str) -> String {
    let mut text = format!("From: a@s.test\r\nSubject: {tag}\r\n\r\n");
    for i in 0..28 {
        text.push_str(&format!(
            "line {i:02} of the body, padded to roughly eighty columns xxxxxxxxxxxxxx\r\n"
        ));
    }
    text.push_str("..a line starting with a dot\r\n.\r\n");
    text
}
