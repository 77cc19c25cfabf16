//! Magic recipients.

use std::time::Duration;

use super::client::{body, Client};
use super::start;
use crate::sink::Profile;

/// Starts a transaction and returns the reply to `RCPT TO:<rcpt>`.
async fn rcpt_reply(c: &mut Client, rcpt: &str) -> String {
    c.send(format!("MAIL FROM:<a@s.test>\r\nRCPT TO:<{rcpt}>\r\n"))
        .await;
    assert_eq!(c.reply().await, "250 2.1.0 Ok\r\n");
    c.reply().await
}

#[tokio::test]
async fn tempfail_unknown_and_garbage_keep_the_connection() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    assert_eq!(
        rcpt_reply(&mut c, "TempFail7@x.test").await,
        "451 4.3.0 Temporary failure, try again later\r\n"
    );
    c.send("RSET\r\n").await;
    c.reply().await;
    assert_eq!(
        rcpt_reply(&mut c, "unknown.user@x.test").await,
        "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
         550 5.1.1 double-checking the recipient's email address for typos. - gsmtp\r\n"
    );
    c.send("RCPT TO:<550x@x.test>\r\nRCPT TO:<garbage@x.test>\r\nNOOP\r\n")
        .await;
    assert!(c.reply().await.starts_with("550-5.1.1"));
    assert_eq!(c.line().await, "HELLO? this is not SMTP\r\n");
    assert_eq!(c.reply().await, "250 2.0.0 Ok\r\n");
    assert_eq!(sink.stats().attempts_of("garbage@x.test"), 1);
    assert_eq!(sink.stats().accepted(), 0);
    sink.stop().await;
}

#[tokio::test]
async fn always_421_closes() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    assert_eq!(
        rcpt_reply(&mut c, "421me@x.test").await,
        "421 4.7.0 Try again later, closing connection\r\n"
    );
    assert!(c.closed().await);
    sink.stop().await;
}

#[tokio::test]
async fn defer_n_defers_the_first_n_attempts_across_connections() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    for _ in 0..2 {
        let (mut c, _) = Client::ready(addr).await;
        assert_eq!(
            rcpt_reply(&mut c, "defer2-bob@x.test").await,
            "421 4.7.0 Try again later, closing connection\r\n"
        );
        assert!(c.closed().await);
    }
    let (mut c, _) = Client::ready(addr).await;
    assert_eq!(
        rcpt_reply(&mut c, "Defer2-Bob@x.test").await,
        "250 2.1.5 Ok\r\n"
    );
    c.send(format!("DATA\r\n{}", body("deferred"))).await;
    assert!(c.reply().await.starts_with("354"));
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued"));
    let stats = sink.stats();
    assert_eq!(stats.attempts_of("defer2-bob@x.test"), 3);
    assert_eq!(stats.count_of("defer2-bob@x.test"), 1);
    sink.stop().await;
}

#[tokio::test]
async fn reset_recipient_resets_when_the_body_arrives() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<ok@x.test>\r\nRCPT TO:<reset@x.test>\r\nDATA\r\n")
        .await;
    let r = c.replies(4).await;
    assert_eq!(r[2], "250 2.1.5 Ok\r\n");
    assert!(r[3].starts_with("354"));
    c.send("Subject: x\r\n").await;
    let mut byte = [0u8; 1];
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut c.stream, &mut byte),
    )
    .await
    .unwrap();
    match got {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => assert_eq!(n, 0, "expected no reply before the reset"),
    }
    assert_eq!(sink.stats().accepted(), 0);
    sink.stop().await;
}

#[tokio::test]
async fn hang_recipient_never_gets_the_end_of_data_reply() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<hang@x.test>\r\nDATA\r\n")
        .await;
    c.replies(3).await;
    c.send(format!("{}NOOP\r\n", body("hang"))).await;
    assert!(c.silent_for(Duration::from_millis(300)).await);
    assert_eq!(sink.stats().count_of("hang@x.test"), 0);
    sink.stop().await;
}
