//! The SMTP conversation itself: pipelining, sequencing, line limits.

use std::time::Duration;

use tokio::time::Instant;

use super::client::{body, Client};
use super::{start, start_with};
use crate::sink::Profile;

#[tokio::test]
async fn ehlo_is_a_correct_multi_line_reply() {
    let (sink, addr) = start_with(Profile::plain("plain"), true).await;
    let (_c, ehlo) = Client::ready(addr).await;
    assert_eq!(
        ehlo,
        "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-SIZE 35882577\r\n250-CHUNKING\r\n250-STARTTLS\r\n\
         250 HELP\r\n"
    );
    sink.stop().await;
}

#[tokio::test]
async fn pipelined_transactions_including_the_next_mail_after_the_dot() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, ehlo) = Client::ready(addr).await;
    assert!(!ehlo.contains("STARTTLS"));

    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<bob@x.test>\r\nRCPT TO:<Carol@X.test>\r\nDATA\r\n")
        .await;
    assert_eq!(
        c.replies(4).await,
        [
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        ]
    );

    // Body, dot, and the next transaction in one packet (RFC 2920).
    c.send(format!(
        "{}MAIL FROM:<>\r\nRCPT TO:<BOB@x.test>\r\nDATA\r\n",
        body("one")
    ))
    .await;
    let r = c.replies(4).await;
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    assert_eq!(&r[1..3], ["250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n"]);
    assert!(r[3].starts_with("354 "));

    // Terminator split across writes, then QUIT.
    let second = body("two");
    let (head, tail) = second.split_at(second.len() - 3); // "...\r\n" | ".\r\n"
    let (head, dot_cr) = head.split_at(head.len() - 1);
    c.send(head).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(dot_cr).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(format!("{tail}QUIT\r\n")).await;
    let r = c.replies(2).await;
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    assert_eq!(r[1], "221 2.0.0 Bye\r\n");
    assert!(c.closed().await);

    let stats = sink.stats();
    assert_eq!(stats.accepted(), 3);
    assert_eq!(stats.distinct(), 2);
    assert_eq!(stats.duplicates(), 1);
    assert_eq!(stats.count_of("bob@x.test"), 2);
    assert_eq!(stats.count_of("carol@x.test"), 1);
    assert_eq!(stats.count_of("nobody@x.test"), 0);
    assert_eq!(stats.attempts_of("Bob@X.Test"), 2);
    assert!(stats.first_accept_ms().is_some() && stats.last_accept_ms() >= stats.first_accept_ms());
    sink.stop().await;
}

#[tokio::test]
async fn many_messages_in_one_write_are_all_answered() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    // A client that does not even wait for 354 (not RFC-conformant, but the parser copes).
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&format!(
            "MAIL FROM:<a@s.test>\r\nRCPT TO:<r{i}@x.test>\r\nDATA\r\n"
        ));
        batch.push_str(&body(&i.to_string()));
    }
    c.send(batch).await;
    let replies = c.replies(200).await;
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.starts_with("250 2.0.0 Ok: queued"))
            .count(),
        50
    );
    assert_eq!(sink.stats().accepted(), 50);
    assert_eq!(sink.stats().distinct(), 50);
    sink.stop().await;
}

#[tokio::test]
async fn sequencing_errors_and_unknown_commands() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.send("MAIL FROM:<a@s.test>\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Bad sequence of commands\r\n");
    c.send("HELO client.test\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await;
    assert_eq!(
        c.replies(3).await,
        [
            "250 sink.test\r\n",
            "503 5.5.1 Bad sequence of commands\r\n",
            "503 5.5.1 Bad sequence of commands\r\n"
        ]
    );
    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<tempfail@x.test>\r\nDATA\r\nMAIL FROM:<x@s.test>\r\n")
        .await;
    assert_eq!(
        c.replies(4).await,
        [
            "250 2.1.0 Ok\r\n",
            "451 4.3.0 Temporary failure, try again later\r\n",
            "554 5.5.1 No valid recipients\r\n",
            "503 5.5.1 Bad sequence of commands\r\n"
        ]
    );
    c.send("RSET\r\nNOOP\r\nFROB\r\nRCPT TO:<>\r\nMAIL FROM:<a@s.test>\r\n")
        .await;
    assert_eq!(
        c.replies(5).await,
        [
            "250 2.0.0 Ok\r\n",
            "250 2.0.0 Ok\r\n",
            "500 5.5.2 Syntax error\r\n",
            "501 5.5.4 Syntax error in parameters or arguments\r\n",
            "250 2.1.0 Ok\r\n"
        ]
    );
    sink.stop().await;
}

#[tokio::test]
async fn over_long_lines_get_500_and_the_session_goes_on() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    c.send(format!("NOOP {}\r\nNOOP\r\n", "x".repeat(1200)))
        .await;
    assert_eq!(
        c.replies(2).await,
        ["500 5.5.2 Line too long\r\n", "250 2.0.0 Ok\r\n"]
    );
    // A long line arriving in pieces, longer than one read.
    c.send(format!("NOOP {}", "y".repeat(70_000))).await;
    c.send("\r\nNOOP\r\n").await;
    assert_eq!(
        c.replies(2).await,
        ["500 5.5.2 Line too long\r\n", "250 2.0.0 Ok\r\n"]
    );
    sink.stop().await;
}

#[tokio::test]
async fn latency_delays_only_the_end_of_data_reply() {
    let mut profile = Profile::plain("slow");
    profile.latency = Duration::from_millis(200);
    let (sink, addr) = start(profile).await;
    let (mut c, _) = Client::ready(addr).await;
    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await;
    c.replies(3).await;
    let sent = Instant::now();
    c.send(body("slow")).await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued"));
    assert!(sent.elapsed() >= Duration::from_millis(200));
    sink.stop().await;
}

#[tokio::test]
async fn silent_profile_never_sends_a_byte() {
    let mut profile = Profile::plain("silent");
    profile.silent = true;
    let (sink, addr) = start(profile).await;
    let mut c = Client::connect(addr).await;
    c.send("EHLO client.test\r\n").await;
    assert!(c.silent_for(Duration::from_millis(300)).await);
    sink.stop().await;
}

#[tokio::test]
async fn stop_closes_open_sessions() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    sink.stop().await;
    assert!(c.closed().await);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
