//! The inbound listener for bounces and complaints, over real SMTP on 127.0.0.1: a DSN sent to
//! a message's VERP address suppresses the recipient at once when it is a hard failure and
//! after the configured number of soft bounces otherwise; an ARF complaint about one of our
//! messages suppresses its recipient; a report repeated, one naming another recipient, or
//! garbage changes nothing; the listener relays nothing, refuses oversized messages and slows
//! down a client that sends too fast.

use std::net::SocketAddr;
use std::time::Duration;

use hikyaku_api::inbound::{self, InboundSettings};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DOMAIN: &str = "bounces.acme.test";

/// A DSN for `rcpt` with `action`/`status`.
fn dsn(rcpt: &str, action: &str, status: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.test\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n\
         Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--B--\r\n"
    )
}

/// An ARF abuse report about message `hk.<campaign>.<seq>@a.test`.
fn arf(campaign: i64, seq: i64, rcpt: &str) -> String {
    format!(
        "From: fbl@isp.test\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"P\"\r\n\r\n\
         --P\r\nContent-Type: text/plain\r\n\r\nAbuse report.\r\n\r\n\
         --P\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n\
         Original-Rcpt-To: <{rcpt}>\r\n\r\n\
         --P\r\nContent-Type: message/rfc822\r\n\r\nFrom: n@a.test\r\nTo: {rcpt}\r\n\
         Message-ID: <hk.{campaign}.{seq}@a.test>\r\nSubject: s\r\n\r\nhi\r\n--P--\r\n"
    )
}

struct Client {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
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
    async fn reply(&mut self) -> String {
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

    async fn cmd(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        self.reply().await
    }

    /// A whole transaction; the reply to the final dot (or the first refusal).
    async fn send(&mut self, rcpt: &str, body: &str) -> String {
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

async fn listener(
    api: &TestApi,
    settings: InboundSettings,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(inbound::serve(api.state.clone(), l, settings, rx));
    (addr, tx)
}

async fn sent_campaign(api: &TestApi, list: i64) -> i64 {
    let cid = api.create_campaign(list, "hello").await;
    api.send(cid).await;
    hikyaku_api::expansion::expand(&api.state, cid)
        .await
        .expect("expand");
    cid
}

async fn suppression(api: &TestApi, email: &str) -> Option<(String, String)> {
    sqlx::query_as("SELECT reason, source FROM suppressions WHERE email_lower = $1")
        .bind(email)
        .fetch_optional(&api.state.db)
        .await
        .expect("query")
}

async fn subscriber_status(api: &TestApi, email: &str) -> String {
    let (s,): (String,) = sqlx::query_as("SELECT status FROM subscribers WHERE email_lower = $1")
        .bind(email)
        .fetch_one(&api.state.db)
        .await
        .expect("subscriber");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_suppress_their_recipients_and_nothing_else() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let l = api
        .list_with_csv(
            "email\nhard@gmail.test\ncomplainer@other.test\nsoft@yahoo.test\nkeep@gmail.test\n",
        )
        .await;
    let ids: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, email_lower FROM subscribers WHERE list_id = $1")
            .bind(l)
            .fetch_all(&api.state.db)
            .await
            .expect("ids");
    let id = |e: &str| ids.iter().find(|(_, x)| x == e).expect("subscriber").0;
    let c1 = sent_campaign(&api, l).await;

    let mut settings = InboundSettings::new(DOMAIN);
    settings.max_message_bytes = 4096;
    settings.soft.limit = 2;
    let (addr, stop) = listener(&api, settings).await;
    let mut c = Client::connect(addr).await;
    let ehlo = c.cmd("EHLO mx.test").await;
    assert!(ehlo.contains("SIZE 4096"), "{ehlo}");

    // Never a relay; our addresses only.
    for other in [
        "someone@gmail.test",
        "b-1-1@other.test",
        "postmaster@bounces.acme.test",
    ] {
        let r = c.send(other, "x\r\n").await;
        assert!(r.starts_with("550"), "{other}: {r}");
    }

    // Hard bounce → suppressed at once, recorded once.
    let hard = id("hard@gmail.test");
    let verp = format!("b-{c1}-{hard}@{DOMAIN}");
    let r = c
        .send(&verp, &dsn("hard@gmail.test", "failed", "5.1.1"))
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        suppression(&api, "hard@gmail.test").await,
        Some(("bounce".into(), "dsn".into()))
    );
    assert_eq!(subscriber_status(&api, "hard@gmail.test").await, "bounced");
    let r = c
        .send(&verp, &dsn("hard@gmail.test", "failed", "5.1.1"))
        .await;
    assert!(r.starts_with("250"), "a repeated report is taken: {r}");
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM feedback_events")
        .fetch_one(&api.state.db)
        .await
        .expect("count");
    assert_eq!(n, 1, "recorded once");

    // A DSN naming another recipient than the job's changes nothing.
    let keep = id("keep@gmail.test");
    let r = c
        .send(
            &format!("b-{c1}-{keep}@{DOMAIN}"),
            &dsn("victim@gmail.test", "failed", "5.1.1"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(suppression(&api, "keep@gmail.test").await, None);
    assert_eq!(subscriber_status(&api, "keep@gmail.test").await, "active");

    // A "DSN" that names no recipient is not taken either.
    let r = c
        .send(
            &format!("b-{c1}-{keep}@{DOMAIN}"),
            &dsn("keep@gmail.test", "failed", "5.1.1")
                .replace("Final-Recipient: rfc822; keep@gmail.test\r\n", ""),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(suppression(&api, "keep@gmail.test").await, None);

    // Bytes that are not UTF-8 where an address should be: a syntax error, not a crash.
    c.w.write_all(b"MAIL \xff\xff\xfe:<a@b>\r\n")
        .await
        .expect("write");
    let r = c.reply().await;
    assert!(r.starts_with("501"), "{r}");
    let r = c.cmd("NOOP").await;
    assert!(r.starts_with("250"), "the session lives on: {r}");

    // Garbage and auto-replies are classified and dropped.
    let r = c
        .send(
            &format!("b-{c1}-{keep}@{DOMAIN}"),
            "Subject: out of office\r\n\r\nAway.\r\n",
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(suppression(&api, "keep@gmail.test").await, None);

    // Complaint (ARF to the feedback address) → suppressed.
    let comp = id("complainer@other.test");
    let r = c
        .send(
            &format!("fbl@{DOMAIN}"),
            &arf(c1, comp, "complainer@other.test"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        suppression(&api, "complainer@other.test").await,
        Some(("complaint".into(), "arf".into()))
    );
    assert_eq!(
        subscriber_status(&api, "complainer@other.test").await,
        "complained"
    );

    // Soft bounces: the first does not suppress, the second (another campaign) does.
    let soft = id("soft@yahoo.test");
    let r = c
        .send(
            &format!("b-{c1}-{soft}@{DOMAIN}"),
            &dsn("soft@yahoo.test", "delayed", "4.2.1"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(suppression(&api, "soft@yahoo.test").await, None);
    let c2 = sent_campaign(&api, l).await;
    let r = c
        .send(
            &format!("b-{c2}-{soft}@{DOMAIN}"),
            &dsn("soft@yahoo.test", "failed", "4.4.7"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        suppression(&api, "soft@yahoo.test").await,
        Some(("soft-bounce".into(), "dsn".into()))
    );

    // Oversized: refused, and the session goes on.
    let big = "x".repeat(900) + "\r\n";
    let r = c.send(&format!("fbl@{DOMAIN}"), &big.repeat(6)).await;
    assert!(r.starts_with("552"), "{r}");
    let r = c.cmd("NOOP").await;
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("BOGUS").await;
    assert!(r.starts_with("502"), "{r}");
    let r = c.cmd(&format!("HELO {}", "h".repeat(2000))).await;
    assert!(r.starts_with("500"), "{r}");
    let r = c.cmd("QUIT").await;
    assert!(r.starts_with("221"), "{r}");
    let _ = stop.send(true);

    // A client over its rate is told to slow down.
    let mut settings = InboundSettings::new(DOMAIN);
    settings.per_ip_per_minute = 2;
    let (addr, stop) = listener(&api, settings).await;
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO mx.test").await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(c.cmd("MAIL FROM:<>").await);
        let _ = c.cmd("RSET").await;
    }
    assert!(
        replies[0].starts_with("250") && replies[1].starts_with("250"),
        "{replies:?}"
    );
    assert!(replies[2].starts_with("421"), "{replies:?}");
    let _ = stop.send(true);
}
