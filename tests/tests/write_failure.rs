//! A write that fails on a pipelined session does not throw away the replies that arrived
//! before it: messages the server accepted are delivered once, never sent again.
//!
//! The peer here is a small scripted server: it answers every message, but stops reading
//! when a message of more than 1 MB begins, so the engine's write of that message times out
//! after the server has already accepted the two small messages written with it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hikyaku_queue_schema::{CampaignSnapshot, EventStatus, Job, JobId};
use hikyaku_tests::queue;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{standard_sinks, World, SHARDS, STANDARD_ZONE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

/// Accepted messages per recipient.
type Accepted = Arc<Mutex<HashMap<String, u32>>>;

/// Serves one SMTP session: PIPELINING and CHUNKING; every message accepted, but a `BDAT` of
/// more than 1 MB is never read (the session then idles until the client goes).
async fn session(stream: tokio::net::TcpStream, accepted: Accepted) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    if w.write_all(b"220 slow.test ESMTP\r\n").await.is_err() {
        return;
    }
    let mut rcpt = String::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-slow.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
        } else if upper.starts_with("RCPT TO:<") {
            rcpt = cmd[9..].trim_end_matches('>').to_owned();
            b"250 2.1.5 ok\r\n"
        } else if let Some(n) = upper.strip_prefix("BDAT ") {
            let size: usize = n
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if size > 1 << 20 {
                // Stop reading: the client's write of this message cannot finish.
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            let mut content = vec![0; size];
            if r.read_exact(&mut content).await.is_err() {
                return;
            }
            *accepted
                .lock()
                .expect("lock")
                .entry(rcpt.clone())
                .or_default() += 1;
            b"250 2.0.0 queued\r\n"
        } else if upper.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 ok\r\n"
        };
        if w.write_all(reply).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_arrived_before_a_failed_write_stand() {
    let zone = format!("{STANDARD_ZONE}\nslow.test MX 10 mx.slow.test\nmx.slow.test A 127.0.0.7\n");
    let world = World::start(&zone, standard_sinks()).await;
    let accepted: Accepted = Arc::default();
    let socket = TcpSocket::new_v4().expect("socket");
    // A small receive buffer: the large message cannot hide in the kernel's buffers.
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind(SocketAddr::from((
            Ipv4Addr::new(127, 0, 0, 7),
            world.smtp_port,
        )))
        .expect("bind 127.0.0.7");
    let listener = socket.listen(64).expect("listen");
    let server = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, accepted.clone()));
            }
        })
    };

    let snapshot = CampaignSnapshot {
        id: 5,
        tenant: "t".into(),
        from_addr: "news@sender.test".into(),
        subject: "Hello".into(),
        text_body: "{{pad}}\n".into(),
        field_names: vec!["pad".into()],
        return_path: "bounce@sender.test".into(),
        message_id_domain: "sender.test".into(),
        ..CampaignSnapshot::default()
    };
    let job = |seq: u64, rcpt: &str, pad: String| Job {
        id: JobId { campaign: 5, seq },
        attempt: 0,
        queued_ms: queue::now_ms(),
        expires_ms: 0,
        priority: 0,
        rcpt: rcpt.into(),
        fields: vec![pad],
        last: None,
    };
    let mut con = world.redis.con().await;
    queue::enqueue_campaign(
        &mut con,
        SHARDS,
        &snapshot,
        vec![
            job(1, "first@slow.test", "one".into()),
            job(2, "second@slow.test", "two".into()),
            job(3, "big@slow.test", "x".repeat(8 << 20)),
        ],
    )
    .await;
    let sites = r#"
[sites.default]
max_connections = 1
command_timeout = "1s"
data_timeout = "1s"
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
"#;
    let engine = world.engine(world.config("", sites));
    let delivered = wait_for(
        Duration::from_secs(30),
        "both small messages delivered",
        || {
            let mut c = con.clone();
            async move {
                let e = queue::events(&mut c, SHARDS).await;
                let d: Vec<_> = e
                    .into_iter()
                    .filter(|e| e.status == EventStatus::Delivered)
                    .collect();
                (d.len() >= 2).then_some(d)
            }
        },
    )
    .await;
    // Long enough for a wrongly retried message to arrive again (retries come after 1 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let counts = accepted.lock().expect("lock").clone();
    engine.stop().await.expect("clean stop");
    server.abort();

    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(
        counts.get("first@slow.test"),
        Some(&1),
        "accepted once: {counts:?}"
    );
    assert_eq!(
        counts.get("second@slow.test"),
        Some(&1),
        "accepted once: {counts:?}"
    );
    assert_eq!(counts.get("big@slow.test"), None, "never fully written");
    let events = queue::events(&mut con, SHARDS).await;
    assert_eq!(
        events.iter().filter(|e| e.id.seq <= 2).count(),
        2,
        "one end state each: {events:?}"
    );
}
