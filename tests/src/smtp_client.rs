//! A plain SMTP client for tests that speak to the API's inbound listener, and the reports
//! they send it (DSN, ARF).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The MAC tag the service gives job (`campaign`, `seq`) under the token `secret`, as the
/// engine writes it into the job's VERP address and Message-ID.
pub fn job_tag(secret: &[u8], campaign: i64, seq: i64) -> String {
    use hikyaku_queue_schema::ids;
    let key = ids::campaign_key(secret, campaign as u64);
    let t = ids::Tagger::new(&key).expect("key").tag(seq as u64);
    String::from_utf8(t.to_vec()).expect("hex")
}

/// A DSN for `rcpt` with `action`/`status` (RFC 3464, as a receiving MTA writes it).
pub fn dsn(rcpt: &str, action: &str, status: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.test\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n\
         Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--B--\r\n"
    )
}

/// An ARF abuse report about the message with Message-ID `<message_id>`, naming `rcpt` as the
/// original recipient when given (feedback loops often redact it).
pub fn arf(message_id: &str, rcpt: Option<&str>) -> String {
    let original = rcpt.map_or(String::new(), |r| format!("Original-Rcpt-To: <{r}>\r\n"));
    let to = rcpt.unwrap_or("redacted@isp.test");
    format!(
        "From: fbl@isp.test\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"P\"\r\n\r\n\
         --P\r\nContent-Type: text/plain\r\n\r\nAbuse report.\r\n\r\n\
         --P\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n\
         {original}\r\n\
         --P\r\nContent-Type: message/rfc822\r\n\r\nFrom: n@a.test\r\nTo: {to}\r\n\
         Message-ID: <{message_id}>\r\nSubject: s\r\n\r\nhi\r\n--P--\r\n"
    )
}

/// One SMTP client session.
#[derive(Debug)]
pub struct Client {
    /// Replies.
    pub r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    /// Commands.
    pub w: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    /// Connects and reads the greeting (which must be 220).
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (r, w) = s.into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220"), "{greeting}");
        c
    }

    /// One reply, multi-line replies joined.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
                .await
                .expect("reply in time")
                .expect("read");
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Sends one command line and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        self.reply().await
    }

    /// A whole transaction; the reply to the final dot (or the first refusal).
    pub async fn send(&mut self, rcpt: &str, body: &str) -> String {
        let r = self.cmd("MAIL FROM:<>").await;
        if !r.starts_with("250") {
            return r;
        }
        let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        if !r.starts_with("250") {
            let _ = self.cmd("RSET").await;
            return r;
        }
        let r = self.cmd("DATA").await;
        assert!(r.starts_with("354"), "{r}");
        let mut data = String::new();
        for line in body.split_inclusive("\r\n") {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
        }
        data.push_str(".\r\n");
        self.w.write_all(data.as_bytes()).await.expect("write");
        self.reply().await
    }
}
