//! RFC 3030 CHUNKING: BDAT next to DATA, whole messages pipelined, and the error paths.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::client::{body, Client};
use super::{start, HOST};
use crate::sink::context::ListenerCtx;
use crate::sink::replies;
use crate::sink::session::{Session, Step};
use crate::sink::{Profile, ProviderKind, SinkStats};

/// Message content of exactly `len` bytes that would confuse any scanner or command parser:
/// an end-of-DATA dot and command lines, then bytes counting up from NUL (every byte value,
/// CR and LF included, once `len` passes about 300).
fn content(tag: &str, len: usize) -> Vec<u8> {
    let mut text =
        format!("Subject: {tag}\r\n\r\n.\r\n.\r\nRSET\r\nQUIT\r\nBDAT 9 LAST\n").into_bytes();
    assert!(
        text.len() <= len,
        "content {tag} needs at least {} bytes",
        text.len()
    );
    let mut byte = 0u8;
    while text.len() < len {
        text.push(byte);
        byte = byte.wrapping_add(1);
    }
    text
}

/// `[RSET] MAIL FROM / RCPT TO / BDAT <n> LAST <content>`, as the engine pipelines a message.
fn bdat_message(rset: bool, rcpt: &str, content: &[u8]) -> Vec<u8> {
    let rset = if rset { "RSET\r\n" } else { "" };
    let mut msg = format!(
        "{rset}MAIL FROM:<a@s.test>\r\nRCPT TO:<{rcpt}>\r\nBDAT {} LAST\r\n",
        content.len()
    )
    .into_bytes();
    msg.extend_from_slice(content);
    msg
}

/// Delivers one message to `rcpts` with a single `BDAT … LAST` on an EHLO'd client and
/// returns the final reply.
async fn deliver_bdat(c: &mut Client, rcpts: &[&str], content: &[u8]) -> String {
    let mut cmd = String::from("MAIL FROM:<a@s.test>\r\n");
    for rcpt in rcpts {
        cmd.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
    }
    cmd.push_str(&format!("BDAT {} LAST\r\n", content.len()));
    let mut wire = cmd.into_bytes();
    wire.extend_from_slice(content);
    c.send(wire).await;
    let r = c.replies(1 + rcpts.len()).await;
    assert_eq!(r[0], "250 2.1.0 Ok\r\n");
    assert!(r[1..].iter().all(|r| r == "250 2.1.5 Ok\r\n"), "{r:?}");
    c.reply().await
}

/// Delivers one message to `rcpt` with DATA and returns the final reply.
async fn deliver_data(c: &mut Client, rcpt: &str) -> String {
    c.send(format!(
        "MAIL FROM:<a@s.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n{}",
        body(rcpt)
    ))
    .await;
    let r = c.replies(3).await;
    assert!(r[2].starts_with("354 "), "{r:?}");
    c.reply().await
}

/// A session of a fresh listener with `profile`, outside any socket, and its statistics.
fn session(profile: Profile) -> (Session, Arc<SinkStats>) {
    let stats = Arc::new(SinkStats::new([profile.name.as_str()], 0));
    let counters = stats
        .counters(&profile.name)
        .expect("counters of the profile");
    let ctx = ListenerCtx::new(profile, counters, Arc::clone(&stats), HOST, None);
    let peer = IpAddr::from([127, 0, 0, 1]);
    (Session::new(Arc::new(ctx), peer), stats)
}

/// Feeds `reads` to `session` one read at a time, like the connection loop (keeping what a
/// feed leaves unconsumed for the next read). Returns the replies of each read, the step that
/// stopped the session (if one did) and how many bytes were left unconsumed.
fn converse(session: &mut Session, reads: &[&[u8]]) -> (Vec<Vec<u8>>, Option<Step>, usize) {
    let mut pending = Vec::new();
    let mut per_read = Vec::with_capacity(reads.len());
    for read in reads {
        pending.extend_from_slice(read);
        let mut out = Vec::new();
        loop {
            let (used, step) = session.feed(&pending, &mut out);
            pending.drain(..used);
            match step {
                Step::NeedInput => break,
                Step::Deliver => session.deliver(&mut out),
                stop => {
                    per_read.push(out);
                    return (per_read, Some(stop), pending.len());
                }
            }
        }
        per_read.push(out);
    }
    (per_read, None, pending.len())
}

/// The replies of all reads of [`converse`], joined, as text.
fn joined(per_read: &[Vec<u8>]) -> String {
    String::from_utf8(per_read.concat()).expect("replies are text")
}

/// A pipelined stream exercising every BDAT path that keeps the connection: single-chunk
/// messages, a multi-chunk one with an empty last chunk, a refused one, and a last
/// message right before QUIT. Returns the stream and the exact replies it must get.
fn pipelined_stream(body_len: usize) -> (Vec<u8>, String) {
    let mut wire = b"EHLO client.test\r\n".to_vec();
    wire.extend(bdat_message(false, "one@x.test", &content("one", body_len)));
    wire.extend(bdat_message(true, "two@x.test", &content("two", body_len)));
    // Two chunks and an empty LAST chunk make one message.
    let three = content("three", body_len);
    let (head, tail) = three.split_at(body_len / 3);
    wire.extend(b"RSET\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<three@x.test>\r\n");
    wire.extend(format!("BDAT {}\r\n", head.len()).into_bytes());
    wire.extend(head);
    wire.extend(format!("BDAT {}\r\n", tail.len()).into_bytes());
    wire.extend(tail);
    wire.extend(b"BDAT 0 LAST\r\n");
    // Refused recipient: the chunk is still consumed, the stream stays in sync.
    wire.extend(bdat_message(
        true,
        "tempfail@x.test",
        &content("four", body_len),
    ));
    wire.extend(bdat_message(true, "One@X.test", &content("five", body_len)));
    wire.extend(b"QUIT\r\n");

    let ok = "250 2.0.0 Ok\r\n";
    let mail = "250 2.1.0 Ok\r\n";
    let rcpt = "250 2.1.5 Ok\r\n";
    let mut expected = String::from_utf8(replies::ehlo(HOST, false, true)).expect("text");
    expected.push_str(&format!("{mail}{rcpt}250 2.0.0 Ok: queued as 1\r\n"));
    expected.push_str(&format!("{ok}{mail}{rcpt}250 2.0.0 Ok: queued as 2\r\n"));
    expected.push_str(&format!(
        "{ok}{mail}{rcpt}250 2.0.0 {} octets received\r\n250 2.0.0 {} octets received\r\n\
         250 2.0.0 Ok: queued as 3\r\n",
        head.len(),
        tail.len()
    ));
    expected.push_str(&format!(
        "{ok}{mail}451 4.3.0 Temporary failure, try again later\r\n\
         554 5.5.1 No valid recipients\r\n"
    ));
    expected.push_str(&format!("{ok}{mail}{rcpt}250 2.0.0 Ok: queued as 4\r\n"));
    expected.push_str("221 2.0.0 Bye\r\n");
    (wire, expected)
}

#[test]
fn pipelined_bdat_stream_in_one_read_gets_every_reply_in_order() {
    let (wire, expected) = pipelined_stream(2048);
    let (mut s, stats) = session(Profile::plain("plain"));
    let (per_read, stop, left) = converse(&mut s, &[&wire]);
    assert_eq!(joined(&per_read), expected);
    assert_eq!((stop, left), (Some(Step::Close), 0));
    assert_eq!(stats.count_of("one@x.test"), 2);
    assert_eq!(stats.count_of("two@x.test"), 1);
    assert_eq!(stats.count_of("three@x.test"), 1);
    assert_eq!(stats.count_of("tempfail@x.test"), 0);
    assert_eq!(stats.attempts_of("tempfail@x.test"), 1);
    assert_eq!(
        (stats.accepted(), stats.distinct(), stats.duplicates()),
        (4, 3, 1)
    );
}

#[test]
fn every_split_of_a_pipelined_bdat_stream_gives_the_same_replies() {
    // Two reads: every boundary of a stream with 2 KB messages (inside command lines, inside
    // the size, inside the content, right at the end of a chunk).
    let (wire, expected) = pipelined_stream(2048);
    for cut in 0..=wire.len() {
        let (head, tail) = wire.split_at(cut);
        let (mut s, stats) = session(Profile::plain("plain"));
        let (per_read, stop, left) = converse(&mut s, &[head, tail]);
        assert_eq!(joined(&per_read), expected, "cut at {cut}");
        assert_eq!((stop, left), (Some(Step::Close), 0), "cut at {cut}");
        assert_eq!(stats.accepted(), 4, "cut at {cut}");
    }
    // Three reads, the middle one short (up to 24 bytes: inside a size, a whole small
    // command, the last bytes of a chunk and the next command's first), at every position
    // of a stream with small messages.
    let (wire, expected) = pipelined_stream(60);
    for first in 0..=wire.len() {
        for second in (first + 1..=first + 24).filter(|&second| second <= wire.len()) {
            let (mut s, _) = session(Profile::plain("plain"));
            let reads = [&wire[..first], &wire[first..second], &wire[second..]];
            let (per_read, stop, left) = converse(&mut s, &reads);
            assert_eq!(joined(&per_read), expected, "cuts at {first}, {second}");
            assert_eq!((stop, left), (Some(Step::Close), 0));
        }
    }
}

#[test]
fn a_read_ending_inside_the_content_answers_nothing_for_that_message_yet() {
    let (mut s, stats) = session(Profile::plain("plain"));
    let one = content("one", 2048);
    let mut wire = b"EHLO client.test\r\n".to_vec();
    wire.extend(bdat_message(false, "one@x.test", &one));
    let cut = wire.len() - 1000;
    let (per_read, stop, left) = converse(&mut s, &[&wire[..cut], &wire[cut..], b"NOOP\r\n"]);
    assert_eq!((stop, left), (None, 0));
    let ehlo = replies::ehlo(HOST, false, true);
    assert_eq!(
        per_read[0],
        [&ehlo[..], b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"].concat()
    );
    assert_eq!(per_read[1], b"250 2.0.0 Ok: queued as 1\r\n");
    assert_eq!(per_read[2], b"250 2.0.0 Ok\r\n");
    assert_eq!(stats.count_of("one@x.test"), 1);
}

#[test]
fn chunks_past_the_size_limit_are_consumed_then_refused_with_552() {
    let (mut s, stats) = session(Profile::plain("plain"));
    let max = replies::MAX_SIZE;
    let head =
        format!("EHLO c.test\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<big@x.test>\r\nBDAT {max}\r\n");
    // The first chunk fits exactly; the second takes the message one octet over the limit.
    let (per_read, stop, _) = converse(&mut s, &[head.as_bytes()]);
    assert_eq!(stop, None);
    assert!(joined(&per_read).ends_with("250 2.1.5 Ok\r\n"));
    let zeros = vec![0u8; 64 * 1024];
    let mut fed = 0u64;
    let mut out = Vec::new();
    while fed < max {
        let n = usize::try_from(max - fed).map_or(zeros.len(), |r| r.min(zeros.len()));
        let (used, step) = s.feed(&zeros[..n], &mut out);
        assert_eq!((used, step), (n, Step::NeedInput));
        fed += n as u64;
    }
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("250 2.0.0 {max} octets received\r\n")
    );
    // The over-limit chunk is consumed (its byte is not read as a command), then refused,
    // and the transaction is over: the next RCPT needs a new MAIL.
    let (per_read, stop, left) = converse(&mut s, &[b"BDAT 1 LAST\r\nXRCPT TO:<b@x.test>\r\n"]);
    assert_eq!((stop, left), (None, 0));
    assert_eq!(
        joined(&per_read),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n\
         503 5.5.1 Bad sequence of commands\r\n"
    );
    // One chunk alone over the limit is refused as well, after its content.
    let (per_read, stop, _) = converse(
        &mut s,
        &[format!(
            "MAIL FROM:<a@s.test>\r\nRCPT TO:<big@x.test>\r\nBDAT {} LAST\r\n",
            max + 1
        )
        .as_bytes()],
    );
    assert_eq!(stop, None);
    let mut out = Vec::new();
    let mut fed = 0u64;
    while fed <= max {
        let n = usize::try_from(max + 1 - fed).map_or(zeros.len(), |r| r.min(zeros.len()));
        assert_eq!(s.feed(&zeros[..n], &mut out), (n, Step::NeedInput));
        fed += n as u64;
    }
    assert_eq!(
        joined(&per_read) + &String::from_utf8_lossy(&out),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(stats.count_of("big@x.test"), 0);
    assert_eq!(stats.accepted(), 0);
}

#[tokio::test]
async fn ehlo_advertises_chunking_and_a_data_only_profile_does_not_know_bdat() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (_c, ehlo) = Client::ready(addr).await;
    assert!(ehlo.contains("\r\n250-CHUNKING\r\n"), "{ehlo}");
    assert!(ehlo.contains("\r\n250-PIPELINING\r\n"), "{ehlo}");
    sink.stop().await;

    let mut profile = Profile::plain("data-only");
    profile.chunking = false;
    let (sink, addr) = start(profile).await;
    let (mut c, ehlo) = Client::ready(addr).await;
    assert!(!ehlo.contains("CHUNKING"), "{ehlo}");
    // BDAT is an unknown verb: its "content" is read as the next command line.
    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<d@x.test>\r\nBDAT 6 LAST\r\nNOOP\r\n")
        .await;
    assert_eq!(
        c.replies(4).await,
        [
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "500 5.5.2 Syntax error\r\n",
            "250 2.0.0 Ok\r\n"
        ]
    );
    c.send("BDAT x\r\nDATA\r\n").await;
    assert_eq!(
        c.replies(2).await,
        [
            "500 5.5.2 Syntax error\r\n",
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        ]
    );
    c.send(body("d")).await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    assert_eq!(sink.stats().count_of("d@x.test"), 1);
    sink.stop().await;
}

#[tokio::test]
async fn pipelined_bdat_messages_in_one_write_are_answered_in_one_write() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    let mut wire = Vec::new();
    for i in 0..3 {
        let tag = format!("m{i}");
        wire.extend(bdat_message(
            i > 0,
            &format!("{tag}@x.test"),
            &content(&tag, 2048),
        ));
    }
    c.send(&wire).await;
    // 3 + 4 + 4 replies, written by the sink at once.
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), c.stream.read(&mut got))
        .await
        .expect("replies in time")
        .expect("read");
    let text = String::from_utf8_lossy(&got[..n]).into_owned();
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 11, "{text}");
    assert_eq!(
        lines[..3],
        ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok: queued as 1"]
    );
    assert_eq!(
        lines[3..7],
        [
            "250 2.0.0 Ok",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: queued as 2"
        ]
    );
    assert_eq!(lines[10], "250 2.0.0 Ok: queued as 3");
    let stats = sink.stats();
    assert_eq!((stats.accepted(), stats.distinct()), (3, 3));
    assert_eq!(stats.count_of("m2@x.test"), 1);
    sink.stop().await;
}

#[tokio::test]
async fn bdat_stream_split_at_awkward_read_boundaries() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    c.stream.set_nodelay(true).expect("nodelay");
    let one = bdat_message(false, "one@x.test", &content("one", 2048));
    let two = bdat_message(true, "two@x.test", &content("two", 2048));
    let three = bdat_message(true, "three@x.test", &content("three", 2048));
    let size_at = |msg: &[u8]| {
        msg.windows(5)
            .position(|w| w == b"BDAT ")
            .expect("BDAT line")
            + 7
    };
    // Cuts: inside "BDAT 20|48 LAST" of the first message, inside its content, right at
    // the end of its content; inside the second's MAIL line and at the end of its content
    // (with the third message's RSET following in the next write); inside the third's
    // content, whose end is again a read boundary.
    let (one_a, rest) = one.split_at(size_at(&one));
    let (one_b, one_c) = rest.split_at(700);
    let (two_a, two_b) = two.split_at(10);
    let (three_a, three_b) = three.split_at(three.len() - 1);
    let writes: [&[u8]; 8] = [
        one_a,
        one_b,
        one_c,
        two_a,
        two_b,
        three_a,
        three_b,
        b"QUIT\r\n",
    ];
    for write in writes {
        c.send(write).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let r = c.replies(12).await;
    assert_eq!(
        r,
        [
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.0.0 Ok: queued as 1\r\n",
            "250 2.0.0 Ok\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.0.0 Ok: queued as 2\r\n",
            "250 2.0.0 Ok\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.0.0 Ok: queued as 3\r\n",
            "221 2.0.0 Bye\r\n",
        ]
    );
    assert!(c.closed().await);
    assert_eq!(sink.stats().accepted(), 3);
    sink.stop().await;
}

#[tokio::test]
async fn multi_chunk_message_is_one_delivery_and_does_not_mix_with_data() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    let whole = content("chunks", 3000);
    let (a, b) = whole.split_at(1234);
    let mut wire =
        b"MAIL FROM:<a@s.test>\r\nRCPT TO:<multi@x.test>\r\nRCPT TO:<other@x.test>\r\n".to_vec();
    wire.extend(format!("BDAT {}\r\n", a.len()).into_bytes());
    wire.extend(a);
    // Once BDAT has begun, neither DATA nor another RCPT belongs in the transaction.
    wire.extend(b"DATA\r\nRCPT TO:<late@x.test>\r\n");
    wire.extend(format!("BDAT {}\r\n", b.len()).into_bytes());
    wire.extend(b);
    c.send(&wire).await;
    assert_eq!(
        c.replies(7).await,
        [
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.0.0 1234 octets received\r\n",
            "503 5.5.1 Bad sequence of commands\r\n",
            "503 5.5.1 Bad sequence of commands\r\n",
            "250 2.0.0 1766 octets received\r\n",
        ]
    );
    assert_eq!(sink.stats().accepted(), 0, "nothing delivered before LAST");
    c.send("BDAT 0 LAST\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued as 1\r\n");
    let stats = sink.stats();
    assert_eq!(stats.count_of("multi@x.test"), 1);
    assert_eq!(stats.count_of("other@x.test"), 1);
    assert_eq!(stats.attempts_of("late@x.test"), 0);
    assert_eq!(stats.accepted(), 2);
    // LAST ended the transaction: BDAT now needs a new MAIL, DATA transactions work again.
    c.send("BDAT 3 LAST\r\nabc").await;
    assert_eq!(c.reply().await, "503 5.5.1 Bad sequence of commands\r\n");
    assert!(deliver_data(&mut c, "multi@x.test")
        .await
        .starts_with("250 2.0.0 Ok: queued as 2"));
    sink.stop().await;
}

#[tokio::test]
async fn bdat_without_recipients_consumes_its_bytes_and_stays_in_sync() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    // Contents made of command lines: were they not consumed, they would be answered.
    let junk = b"NOOP\r\nQUIT\r\n";
    let mut wire =
        b"MAIL FROM:<a@s.test>\r\nRCPT TO:<tempfail@x.test>\r\nRCPT TO:<unknown@x.test>\r\n"
            .to_vec();
    wire.extend(format!("BDAT {}\r\n", junk.len()).into_bytes());
    wire.extend(junk);
    wire.extend(format!("BDAT {} LAST\r\n", junk.len()).into_bytes());
    wire.extend(junk);
    // LAST reset the transaction; then a BDAT without MAIL, also consumed.
    wire.extend(b"RCPT TO:<b@x.test>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    c.send(&wire).await;
    let r = c.replies(8).await;
    assert_eq!(r[0], "250 2.1.0 Ok\r\n");
    assert_eq!(r[1], "451 4.3.0 Temporary failure, try again later\r\n");
    assert!(r[2].starts_with("550-5.1.1 "), "{r:?}");
    assert_eq!(
        r[3..],
        [
            "554 5.5.1 No valid recipients\r\n",
            "554 5.5.1 No valid recipients\r\n",
            "503 5.5.1 Bad sequence of commands\r\n",
            "503 5.5.1 Bad sequence of commands\r\n",
            "250 2.0.0 Ok\r\n",
        ]
    );
    // Still in sync: a whole message goes through on the same connection.
    assert_eq!(
        deliver_bdat(&mut c, &["b@x.test"], &content("after", 500)).await,
        "250 2.0.0 Ok: queued as 1\r\n"
    );
    assert_eq!(sink.stats().accepted(), 1);
    assert_eq!(sink.stats().count_of("tempfail@x.test"), 0);
    sink.stop().await;
}

#[tokio::test]
async fn malformed_bdat_size_gets_501_and_closes() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    for bad in ["BDAT 12x LAST", "BDAT", "BDAT 99999999999999999999 LAST"] {
        let (mut c, _) = Client::ready(addr).await;
        c.send(format!(
            "MAIL FROM:<a@s.test>\r\nRCPT TO:<b@x.test>\r\n{bad}\r\nhello world!"
        ))
        .await;
        assert_eq!(
            c.replies(3).await,
            [
                "250 2.1.0 Ok\r\n",
                "250 2.1.5 Ok\r\n",
                "501 5.5.4 Syntax error in BDAT\r\n"
            ],
            "{bad}"
        );
        assert!(c.closed().await, "{bad}");
    }
    assert_eq!(sink.stats().accepted(), 0);
    sink.stop().await;
}

#[tokio::test]
async fn tally_counts_bdat_deliveries_and_duplicates_like_data_ones() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    assert!(deliver_data(&mut c, "bob@x.test")
        .await
        .starts_with("250 2.0.0 Ok: queued as 1"));
    assert_eq!(
        deliver_bdat(&mut c, &["Bob@X.test", "carol@x.test"], &content("t", 2048)).await,
        "250 2.0.0 Ok: queued as 2\r\n"
    );
    let (mut d, _) = Client::ready(addr).await;
    assert_eq!(
        deliver_bdat(&mut d, &["carol@x.test"], &content("u", 400)).await,
        "250 2.0.0 Ok: queued as 3\r\n"
    );
    assert!(deliver_data(&mut d, "dave@x.test")
        .await
        .starts_with("250 2.0.0 Ok: queued as 4"));
    let stats = sink.stats();
    assert_eq!(stats.accepted(), 5);
    assert_eq!(stats.distinct(), 3);
    assert_eq!(stats.duplicates(), 2);
    assert_eq!(stats.count_of("bob@x.test"), 2);
    assert_eq!(stats.count_of("carol@x.test"), 2);
    assert_eq!(stats.count_of("dave@x.test"), 1);
    assert_eq!(stats.attempts_of("bob@x.test"), 2);
    let profile = stats.profile("plain").expect("plain stats");
    assert_eq!(profile.accepted, 5);
    assert_eq!(profile.per_second.iter().sum::<u64>(), 5);
    assert!(stats.first_accept_ms().is_some());
    sink.stop().await;
}

#[tokio::test]
async fn max_msgs_per_conn_counts_bdat_messages() {
    let mut profile = Profile::provider(ProviderKind::Yahoo);
    profile.max_msgs_per_conn = 2;
    let (sink, addr) = start(profile).await;
    let (mut c, _) = Client::ready(addr).await;
    // Three whole messages pipelined as the engine does; the third MAIL is over the cap.
    let mut wire = Vec::new();
    for i in 0..3 {
        wire.extend(bdat_message(
            i > 0,
            &format!("y{i}@x.test"),
            &content("y", 1024),
        ));
    }
    c.send(&wire).await;
    assert_eq!(
        c.replies(8).await,
        [
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.0.0 Ok: queued as 1\r\n",
            "250 2.0.0 Ok\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.0.0 Ok: queued as 2\r\n",
            "250 2.0.0 Ok\r\n",
        ]
    );
    assert_eq!(
        c.reply().await,
        "421 Max message per connection reached, closing transmission channel\r\n"
    );
    assert!(c.closed().await);
    let stats = sink.stats();
    assert_eq!(stats.accepted(), 2);
    assert_eq!(stats.count_of("y2@x.test"), 0);
    sink.stop().await;
}

#[tokio::test]
async fn rate_limit_counts_bdat_deliveries() {
    let mut profile = Profile::provider(ProviderKind::Google);
    profile.max_rate = 2;
    let (sink, addr) = start(profile).await;
    let (mut c, _) = Client::ready(addr).await;
    for i in 0..2 {
        assert!(
            deliver_bdat(&mut c, &[&format!("g{i}@x.test")], &content("g", 800))
                .await
                .starts_with("250 2.0.0 Ok: queued as "),
            "message {i}"
        );
    }
    c.send("MAIL FROM:<a@s.test>\r\n").await;
    assert!(c
        .reply()
        .await
        .starts_with("421-4.7.28 [127.0.0.1] Our system has detected an unusual rate"));
    assert!(c.closed().await);
    let stats = sink.stats().profile("google").expect("google stats");
    assert_eq!(
        (stats.accepted, stats.throttled, stats.max_in_any_second),
        (2, 1, 2)
    );
    sink.stop().await;
}

#[tokio::test]
async fn latency_delays_only_the_bdat_last_reply() {
    let mut profile = Profile::plain("slow");
    profile.latency = Duration::from_millis(200);
    let (sink, addr) = start(profile).await;
    let (mut c, _) = Client::ready(addr).await;
    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<b@x.test>\r\nBDAT 4\r\nabcd")
        .await;
    let sent = Instant::now();
    assert_eq!(c.replies(3).await[2], "250 2.0.0 4 octets received\r\n");
    assert!(sent.elapsed() < Duration::from_millis(200));
    let sent = Instant::now();
    c.send("BDAT 4 LAST\r\nefghNOOP\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    assert!(sent.elapsed() >= Duration::from_millis(200));
    assert_eq!(c.reply().await, "250 2.0.0 Ok\r\n");
    assert_eq!(sink.stats().count_of("b@x.test"), 1);
    sink.stop().await;
}

#[tokio::test]
async fn hang_and_reset_recipients_apply_to_bdat() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    // hang: non-last chunks are answered, the LAST chunk never is.
    c.send(
        "MAIL FROM:<a@s.test>\r\nRCPT TO:<hang@x.test>\r\nBDAT 2\r\nabBDAT 2 LAST\r\ncdNOOP\r\n",
    )
    .await;
    assert_eq!(
        c.replies(3).await,
        [
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "250 2.0.0 2 octets received\r\n"
        ]
    );
    assert!(c.silent_for(Duration::from_millis(300)).await);
    assert_eq!(sink.stats().count_of("hang@x.test"), 0);

    // reset: the connection is reset once chunk content arrives, before any reply to it.
    let (mut c, _) = Client::ready(addr).await;
    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<reset@x.test>\r\nBDAT 5 LAST\r\n")
        .await;
    assert_eq!(c.replies(2).await, ["250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n"]);
    assert!(c.silent_for(Duration::from_millis(100)).await);
    c.send("hello").await;
    let mut byte = [0u8; 1];
    let got = tokio::time::timeout(Duration::from_secs(5), c.stream.read(&mut byte))
        .await
        .expect("reset in time");
    match got {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => assert_eq!(n, 0, "expected no reply before the reset"),
    }
    assert_eq!(sink.stats().accepted(), 0);
    sink.stop().await;
}
