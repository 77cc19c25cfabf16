//! The inbound bounce listener is no open relay, checked with `swaks` (Debian's SMTP test
//! tool, installed by `ops/run-tests.sh`) as a spammer would probe it: every recipient that is
//! not one of this host's report addresses is refused at `RCPT` — other domains, our domain's
//! other names, sub- and look-alike domains, `%`-hack, source routes, bang paths, quoted local
//! parts, forged VERP shapes — with and without a null sender, and no message is taken for
//! them. The one real address (the complaint mailbox) is accepted, so the refusals are not a
//! dead listener.

use std::net::SocketAddr;
use std::process::Command;

use hikyaku_api::inbound::{self, InboundSettings};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;

const DOMAIN: &str = "bounce.hikyaku.test";

/// `swaks` to `addr` for one recipient: (exit code, transcript).
fn swaks(addr: SocketAddr, from: &str, to: &str) -> (i32, String) {
    let out = Command::new("swaks")
        .args(["--server", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(["--helo", "prober.test", "--from", from, "--to", to])
        .args(["--timeout", "10", "--body", "relay probe"])
        .output()
        .expect("swaks runs (ops/run-tests.sh installs Debian's swaks)");
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), transcript)
}

/// The server's reply to `RCPT` in a swaks transcript (`<-  250 …`, `<** 550 …`).
fn rcpt_reply(transcript: &str) -> &str {
    let mut lines = transcript.lines();
    lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("-> RCPT TO:"))
        .expect("swaks sent RCPT");
    lines.next().map(str::trim).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_finds_no_way_to_relay_through_the_inbound_listener() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (stop, rx) = tokio::sync::watch::channel(false);
    let settings = InboundSettings::new(DOMAIN);
    let fbl = settings.fbl_address.clone();
    tokio::spawn(inbound::serve(api.state.clone(), l, settings, rx));
    let feedback_before: (i64,) = sqlx::query_as("SELECT count(*) FROM feedback_events")
        .fetch_one(&api.state.db)
        .await
        .expect("count");

    let probes = [
        "victim@gmail.test".to_owned(),
        "victim@example.test".to_owned(),
        format!("postmaster@{DOMAIN}"),
        format!("victim@mx.{DOMAIN}"),
        format!("victim@{DOMAIN}.evil.test"),
        format!("\"victim@gmail.test\"@{DOMAIN}"),
        format!("victim%gmail.test@{DOMAIN}"),
        format!("gmail.test!victim@{DOMAIN}"),
        format!("@{DOMAIN}:victim@gmail.test"),
        "victim@[127.0.0.1]".to_owned(),
        "b-1-2@gmail.test".to_owned(),
        format!("b-x-y@{DOMAIN}"),
        format!("b-1-2-3@{DOMAIN}%gmail.test"),
        format!(
            "victim@{}",
            DOMAIN.to_uppercase().replace("BOUNCE", "B0UNCE")
        ),
    ];
    for to in &probes {
        for from in ["spammer@evil.test", "<>"] {
            let (code, transcript) = swaks(addr, from, to);
            let reply = rcpt_reply(&transcript);
            assert!(
                reply.starts_with("<** 5"),
                "RCPT {to} from {from} must be refused: {reply}\n{transcript}"
            );
            assert_ne!(code, 0, "swaks reports the refusal for {to}");
            assert!(
                !transcript.contains("-> DATA") || transcript.contains("<** 554"),
                "no message taken for {to}:\n{transcript}"
            );
        }
    }

    // The real complaint mailbox takes a message (not a report: ignored, nothing recorded).
    let (code, transcript) = swaks(addr, "fbl@provider.test", &fbl);
    assert!(
        rcpt_reply(&transcript).starts_with("<-  250"),
        "the complaint mailbox is ours:\n{transcript}"
    );
    assert_eq!(code, 0, "{transcript}");
    let feedback_after: (i64,) = sqlx::query_as("SELECT count(*) FROM feedback_events")
        .fetch_one(&api.state.db)
        .await
        .expect("count");
    assert_eq!(
        feedback_after, feedback_before,
        "no probe recorded anything"
    );
    let _ = stop.send(true);
}
