use super::*;
use tokio::io::{duplex, AsyncBufReadExt, BufReader};

fn timeouts() -> Timeouts {
    Timeouts {
        command: Duration::from_millis(500),
        data: Duration::from_millis(500),
        ..Timeouts::default()
    }
}

/// A scripted server: for each received line, `respond` returns what to write back.
fn server(
    script: impl Fn(&str, &mut bool) -> Option<String> + Send + 'static,
) -> tokio::io::DuplexStream {
    let (client, server) = duplex(1 << 16);
    tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(server);
        let mut lines = BufReader::new(r).lines();
        let _ = w.write_all(b"220 test ESMTP\r\n").await;
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(out) = script(&line, &mut in_data) {
                if w.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    client
}

fn good(line: &str, in_data: &mut bool) -> Option<String> {
    if *in_data {
        if line == "." {
            *in_data = false;
            return Some("250 2.0.0 Ok: queued\r\n".into());
        }
        return None;
    }
    Some(match line.split(' ').next().unwrap_or("") {
        "EHLO" => "250-test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000\r\n".into(),
        "MAIL" | "RSET" => "250 2.1.0 Ok\r\n".into(),
        "RCPT" if line.contains("unknown") => "550 5.1.1 no such user\r\n".into(),
        "RCPT" => "250 2.1.5 Ok\r\n".into(),
        "DATA" => {
            *in_data = true;
            "354 go\r\n".into()
        }
        _ => "500 what\r\n".into(),
    })
}

/// SMTPUTF8 only where negotiated, SIZE respected: such messages are refused here, nothing
/// of them reaches the server (it would answer 500 to anything unexpected), and the
/// session goes on.
#[tokio::test]
async fn unnegotiated_smtputf8_and_oversize_messages_never_reach_the_server() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let mut c = SmtpClient::new(
        server(move |line, in_data| {
            if let Ok(mut l) = log.lock() {
                l.push(line.to_owned());
            }
            good(line, in_data)
        }),
        timeouts(),
    );
    c.greeting().await.expect("greeting");
    let caps = c.ehlo("me.test").await.expect("ehlo");
    assert!(!caps.smtputf8);
    let small = b"Subject: hi\r\n\r\nbody\r\n".to_vec();
    let big = vec![b'x'; 1001];
    // Under the server's SIZE (1000) but over the site's own limit.
    let middle = vec![b'x'; 600];
    c.limit_size(Some(500));
    for (to, body, code) in [
        ("\u{592a}\u{90ce}@x.test", &small, 553),
        ("a@x.test", &big, 552),
        ("a@x.test", &middle, 552),
        ("a@x.test", &small, 250),
    ] {
        let env = Envelope {
            from: "bounce@me.test",
            to,
            eight_bit: false,
        };
        let r = c.send(&env, body).await.expect("send");
        assert_eq!(r.code, code, "{to}: {r:?}");
        if code != 250 {
            assert!(r.text.contains("not sent"), "{r:?}");
        }
        if body.len() == 600 {
            assert!(r.text.contains("site's size limit of 500"), "{r:?}");
        }
    }
    c.quit().await;
    let seen = seen.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        !seen
            .iter()
            .any(|l| l.contains('\u{592a}') || l.contains("xxxx")),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|l| l.starts_with("MAIL")).count(), 1);
}

#[tokio::test]
async fn pipelined_session_reuses_the_connection() {
    let mut c = SmtpClient::new(server(good), timeouts());
    c.greeting().await.expect("greeting");
    let caps = c.ehlo("me.test").await.expect("ehlo");
    assert!(caps.pipelining && caps.eight_bit_mime);
    assert_eq!(caps.size, Some(1000));
    for to in ["a@x.test", "unknown@x.test", "b@x.test"] {
        let env = Envelope {
            from: "bounce@me.test",
            to,
            eight_bit: true,
        };
        let r = c
            .send(&env, b"Subject: hi\r\n\r\nbody\r\n")
            .await
            .expect("send");
        if to.starts_with("unknown") {
            assert_eq!(r.code, 550);
            // DATA was refused as well; the next send must start with RSET.
        } else {
            assert_eq!(r.code, 250, "{to}");
        }
    }
    c.quit().await;
}

#[tokio::test]
async fn garbage_and_silence_are_errors() {
    let mut c = SmtpClient::new(
        server(|line, _| {
            line.starts_with("EHLO")
                .then(|| "HELLO? not smtp\r\n".into())
        }),
        timeouts(),
    );
    c.greeting().await.expect("greeting");
    assert!(matches!(c.ehlo("me").await, Err(SmtpError::Garbage { .. })));

    let mut c = SmtpClient::new(server(|_, _| None), timeouts());
    c.greeting().await.expect("greeting");
    let mut t = timeouts();
    t.ehlo = Duration::from_millis(50);
    c.timeouts = t;
    assert!(matches!(
        c.ehlo("me").await,
        Err(SmtpError::Timeout { phase: "ehlo" })
    ));
}

#[tokio::test]
async fn a_421_ends_the_session() {
    let script = |line: &str, d: &mut bool| {
        if line.starts_with("RCPT") {
            return Some("421 4.7.0 closing\r\n".into());
        }
        good(line, d)
    };
    let mut c = SmtpClient::new(server(script), timeouts());
    c.greeting().await.expect("greeting");
    c.ehlo("me").await.expect("ehlo");
    let env = Envelope {
        from: "f@me",
        to: "t@x",
        eight_bit: false,
    };
    let err = c.send(&env, b"x\r\n").await.expect_err("421");
    assert!(matches!(err, SmtpError::Refused { ref reply, .. } if reply.code == 421));
}

#[tokio::test]
async fn a_421_to_mail_is_reported_even_when_the_server_hangs_up() {
    // The server answers MAIL with 421 and closes: the RCPT and DATA replies never come.
    let (client, server) = duplex(1 << 16);
    tokio::spawn(async move {
        let (r, mut w) = tokio::io::split(server);
        let mut lines = BufReader::new(r).lines();
        let _ = w.write_all(b"220 x\r\n").await;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("EHLO") {
                let _ = w.write_all(b"250-x\r\n250 PIPELINING\r\n").await;
            } else if line.starts_with("MAIL") {
                let _ = w
                    .write_all(
                        b"421 Max message per connection reached, closing transmission channel\r\n",
                    )
                    .await;
                return;
            }
        }
    });
    let mut c = SmtpClient::new(client, timeouts());
    c.greeting().await.expect("greeting");
    c.ehlo("me").await.expect("ehlo");
    let env = Envelope {
        from: "f@me",
        to: "t@x",
        eight_bit: false,
    };
    let err = c.send(&env, b"x\r\n").await.expect_err("421");
    assert!(err.before_transaction(), "{err}");
    assert!(matches!(err, SmtpError::Refused { ref reply, .. } if reply.code == 421));
}

#[tokio::test]
async fn a_positive_reply_to_data_without_354_is_not_a_delivery() {
    let script = |line: &str, d: &mut bool| {
        if line == "DATA" {
            return Some("250 sure\r\n".into());
        }
        good(line, d)
    };
    let mut c = SmtpClient::new(server(script), timeouts());
    c.greeting().await.expect("greeting");
    c.ehlo("me").await.expect("ehlo");
    let env = Envelope {
        from: "f@me",
        to: "t@x",
        eight_bit: false,
    };
    let err = c.send(&env, b"x\r\n").await.expect_err("protocol error");
    assert!(matches!(err, SmtpError::Garbage { .. }));
}

/// A BDAT-speaking server: reads commands and chunks as bytes, answers each command with
/// `reply(command)`, and records what it saw (commands, and each LAST chunk's content).
fn bdat_server(
    reply: impl Fn(&str) -> Option<String> + Send + 'static,
) -> (
    tokio::io::DuplexStream,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let (client, mut server) = duplex(1 << 16);
    tokio::spawn(async move {
        let _ = server.write_all(b"220 test ESMTP\r\n").await;
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // One command line, or a whole BDAT chunk.
            let line_end = buf.windows(2).position(|w| w == b"\r\n");
            let Some(end) = line_end else {
                match server.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut used = end + 2;
            if let Some(rest) = line.strip_prefix("BDAT ") {
                let n: usize = rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                while buf.len() < used + n {
                    match server.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let content = String::from_utf8_lossy(&buf[used..used + n]).into_owned();
                log.lock().expect("log").push(format!("content:{content}"));
                used += n;
            }
            buf.drain(..used);
            log.lock().expect("log").push(line.clone());
            let out = if line.starts_with("EHLO") {
                Some("250-test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n".into())
            } else {
                reply(&line)
            };
            if let Some(out) = out {
                if server.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    });
    (client, seen)
}

fn bdat_good(line: &str) -> Option<String> {
    Some(match line.split(' ').next().unwrap_or("") {
        "RSET" | "MAIL" => "250 2.0.0 Ok\r\n".into(),
        "RCPT" if line.contains("unknown") => "550 5.1.1 no such user\r\n".into(),
        "RCPT" => "250 2.1.5 Ok\r\n".into(),
        "BDAT" => "250 2.0.0 queued\r\n".into(),
        _ => "500 what\r\n".into(),
    })
}

#[tokio::test]
async fn whole_messages_pipeline_with_bdat() {
    // The server refuses BDAT after a refused RCPT, as RFC 3030 has it.
    let refused_rcpt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = refused_rcpt.clone();
    let (stream, seen) = bdat_server(move |line| {
        use std::sync::atomic::Ordering;
        if line.starts_with("RCPT") && line.contains("unknown") {
            flag.store(true, Ordering::SeqCst);
        }
        if line.starts_with("BDAT") && flag.swap(false, Ordering::SeqCst) {
            return Some("554 5.5.1 No valid recipients\r\n".into());
        }
        bdat_good(line)
    });
    let mut c = SmtpClient::new(stream, timeouts());
    c.greeting().await.expect("greeting");
    let caps = c.ehlo("me").await.expect("ehlo");
    assert!(caps.chunking && c.can_pipeline_messages());
    for to in ["a@x.test", "unknown@x.test", "b@x.test"] {
        let env = Envelope {
            from: "bounce@me.test",
            to,
            eight_bit: false,
        };
        c.queue_message(&env, b"Subject: hi\r\n\r\n.not stuffed\r\n");
    }
    assert_eq!(c.pending(), 3);
    c.flush().await.expect("flush");
    let codes: Vec<u16> = [
        c.message_result().await.expect("1").code,
        c.message_result().await.expect("2").code,
        c.message_result().await.expect("3").code,
    ]
    .into();
    assert_eq!(codes, [250, 550, 250]);
    assert_eq!(c.pending(), 0);
    let seen = seen.lock().expect("seen").clone();
    // Messages behind unanswered ones start with RSET; the content goes as it is.
    assert_eq!(seen.iter().filter(|l| *l == "RSET").count(), 2, "{seen:?}");
    assert!(seen[0].starts_with("EHLO"));
    assert_eq!(seen[1], "MAIL FROM:<bounce@me.test>");
    assert!(seen.contains(&"content:Subject: hi\r\n\r\n.not stuffed\r\n".to_owned()));
    assert!(seen.contains(&"BDAT 29 LAST".to_owned()), "{seen:?}");

    // After the window drained cleanly, the next message needs no RSET.
    let env = Envelope {
        from: "bounce@me.test",
        to: "c@x.test",
        eight_bit: false,
    };
    c.queue_message(&env, b"x\r\n");
    c.flush().await.expect("flush");
    assert_eq!(c.pending(), 1);
    assert_eq!(c.message_result().await.expect("4").code, 250);
}

#[tokio::test]
async fn a_421_in_a_window_ends_the_session_at_that_message() {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let n = count.clone();
    let (stream, _) = bdat_server(move |line| {
        if line.starts_with("BDAT") && n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            return Some("421 4.7.0 Max message per connection reached\r\n".into());
        }
        bdat_good(line)
    });
    let mut c = SmtpClient::new(stream, timeouts());
    c.greeting().await.expect("greeting");
    c.ehlo("me").await.expect("ehlo");
    let env = Envelope {
        from: "f@me",
        to: "t@x",
        eight_bit: false,
    };
    for _ in 0..3 {
        c.queue_message(&env, b"x\r\n");
    }
    c.flush().await.expect("flush");
    assert_eq!(c.message_result().await.expect("first").code, 250);
    let err = c.message_result().await.expect_err("421");
    assert!(matches!(err, SmtpError::Refused { ref reply, .. } if reply.code == 421));
    assert!(!err.before_transaction(), "the message itself was sent");
}

#[tokio::test]
async fn a_reply_sent_before_the_server_hung_up_survives_the_failed_write() {
    let (client, mut server) = duplex(1 << 16);
    let peer = tokio::spawn(async move {
        let mut r = BufReader::new(&mut server);
        let mut line = String::new();
        let _ = r.get_mut().write_all(b"220 test\r\n").await;
        let _ = r.read_line(&mut line).await;
        let _ = r
            .get_mut()
            .write_all(b"250-test\r\n250 PIPELINING\r\n")
            .await;
        // Throttled: the server says why and hangs up before the next transaction.
        let _ = r
            .get_mut()
            .write_all(b"421 4.7.28 Unusual rate of mail, closing\r\n")
            .await;
    });
    let mut c = SmtpClient::new(client, timeouts());
    c.greeting().await.expect("greeting");
    c.ehlo("me").await.expect("ehlo");
    peer.await.expect("peer done, connection closed");
    let env = Envelope {
        from: "f@me",
        to: "t@x",
        eight_bit: false,
    };
    let err = c.send(&env, b"x\r\n").await.expect_err("session over");
    assert!(
        matches!(err, SmtpError::Refused { ref reply, .. } if reply.code == 421 && reply.text.contains("4.7.28")),
        "the 421 reaches the reply rules: {err:?}"
    );
    assert!(
        err.before_transaction(),
        "no transaction of this message began"
    );
}

/// A DATA-only server that answers each read's lines together once it has handled them
/// all (as Postfix does with PIPELINING), logging every read.
fn data_only_server() -> (
    tokio::io::DuplexStream,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let reads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = reads.clone();
    let (client, mut server) = duplex(1 << 16);
    tokio::spawn(async move {
        let _ = server.write_all(b"220 test ESMTP\r\n").await;
        let (mut in_data, mut rcpt_ok) = (false, false);
        let mut partial = String::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = match server.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
            log.lock().expect("log").push(text.clone());
            partial.push_str(&text);
            let mut out = String::new();
            while let Some(end) = partial.find("\r\n") {
                let line: String = partial.drain(..end + 2).collect();
                let line = line.trim_end();
                if in_data {
                    if line == "." {
                        in_data = false;
                        out.push_str("250 2.0.0 Ok: queued\r\n");
                    }
                    continue;
                }
                out.push_str(match line.split(' ').next().unwrap_or("") {
                    "EHLO" => "250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                    "MAIL" | "RSET" => {
                        rcpt_ok = false;
                        "250 2.1.0 Ok\r\n"
                    }
                    "RCPT" if line.contains("unknown") => "550 5.1.1 no such user\r\n",
                    "RCPT" => {
                        rcpt_ok = true;
                        "250 2.1.5 Ok\r\n"
                    }
                    "DATA" if rcpt_ok => {
                        in_data = true;
                        "354 go\r\n"
                    }
                    "DATA" => "554 5.5.1 No valid recipients\r\n",
                    _ => "500 what\r\n",
                });
            }
            if !out.is_empty() && server.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    (client, reads)
}

#[tokio::test]
async fn data_messages_take_one_round_trip_each_without_chunking() {
    let (stream, reads) = data_only_server();
    let mut c = SmtpClient::new(stream, timeouts());
    c.greeting().await.expect("greeting");
    c.ehlo("me").await.expect("ehlo");
    assert!(c.can_chain_data() && !c.can_pipeline_messages());
    let env = |to| Envelope {
        from: "bounce@me.test",
        to,
        eight_bit: false,
    };
    let body = b"Subject: hi\r\n\r\n..stuffed\r\n";
    // The first envelope goes alone.
    assert!(c.queue_envelope(&env("a@x.test"), body.len()).is_none());
    c.flush().await.expect("flush");
    assert!(c.envelope_result().await.expect("354").is_none());
    // Its content travels with the next envelope, whose RCPT is refused.
    c.queue_content(body);
    assert!(c
        .queue_envelope(&env("unknown@x.test"), body.len())
        .is_none());
    c.flush_content().await.expect("flush");
    assert_eq!(c.content_result().await.expect("a").code, 250);
    let refused = c.envelope_result().await.expect("replies");
    assert_eq!(refused.map(|r| r.code), Some(550));
    // The transaction left open is reset in the next group.
    assert!(c.queue_envelope(&env("b@x.test"), body.len()).is_none());
    c.flush().await.expect("flush");
    assert!(c.envelope_result().await.expect("354").is_none());
    c.queue_content(body);
    c.flush_content().await.expect("flush");
    assert_eq!(c.content_result().await.expect("b").code, 250);

    let reads = reads.lock().expect("reads").clone();
    assert!(reads[0].starts_with("EHLO"), "{reads:?}");
    let groups = &reads[1..];
    assert_eq!(
        groups,
        [
            "MAIL FROM:<bounce@me.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n",
            "Subject: hi\r\n\r\n..stuffed\r\n.\r\nMAIL FROM:<bounce@me.test>\r\nRCPT TO:<unknown@x.test>\r\nDATA\r\n",
            "RSET\r\nMAIL FROM:<bounce@me.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n",
            "Subject: hi\r\n\r\n..stuffed\r\n.\r\n",
        ],
        "one write and one read per message"
    );
}

#[tokio::test]
async fn without_pipelining_commands_go_one_by_one() {
    let script = |line: &str, d: &mut bool| {
        if line.starts_with("EHLO") {
            return Some("250 test\r\n".into());
        }
        good(line, d)
    };
    let mut c = SmtpClient::new(server(script), timeouts());
    c.greeting().await.expect("greeting");
    assert!(!c.ehlo("me").await.expect("ehlo").pipelining);
    let env = Envelope {
        from: "f@me",
        to: "unknown@x",
        eight_bit: false,
    };
    assert_eq!(c.send(&env, b"x\r\n").await.expect("send").code, 550);
    let env = Envelope { to: "ok@x", ..env };
    assert_eq!(c.send(&env, b"x\r\n").await.expect("send").code, 250);
}
