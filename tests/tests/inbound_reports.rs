//! The inbound listener for bounces and complaints, over real SMTP on 127.0.0.1: a DSN sent to
//! a message's VERP address suppresses the recipient at once when it is a hard failure and
//! after the configured number of soft bounces otherwise; an ARF complaint about one of our
//! messages suppresses its recipient; a report repeated, one naming another recipient, or
//! garbage changes nothing; the listener relays nothing, refuses oversized messages and slows
//! down a client that sends too fast.

use hikyaku_api::inbound::InboundSettings;
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use hikyaku_tests::smtp_client::{arf, dsn, job_tag, Client};
use tokio::io::AsyncWriteExt;

const DOMAIN: &str = "bounces.acme.test";

/// The signed VERP address of job (`campaign`, `seq`), as the engine writes it.
fn verp(api: &TestApi, campaign: i64, seq: i64) -> String {
    format!("b-{campaign}-{seq}-{}@{DOMAIN}", tag(api, campaign, seq))
}

/// The signed Message-ID of job (`campaign`, `seq`), as the engine writes it.
fn message_id(api: &TestApi, campaign: i64, seq: i64) -> String {
    format!("hk.{campaign}.{seq}.{}@a.test", tag(api, campaign, seq))
}

fn tag(api: &TestApi, campaign: i64, seq: i64) -> String {
    job_tag(&api.state.token_secret, campaign, seq)
}

/// A campaign sent to `list`, its messages delivered to every subscriber (recorded as the
/// recorder records the engine's events).
async fn sent_campaign(api: &TestApi, list: i64) -> i64 {
    let cid = api.create_campaign(list, "hello").await;
    api.send(cid).await;
    hikyaku_api::expansion::expand(&api.state, cid)
        .await
        .expect("expand");
    let subscribers: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, email FROM subscribers WHERE list_id = $1")
            .bind(list)
            .fetch_all(&api.state.db)
            .await
            .expect("subscribers");
    let jobs: Vec<(i64, &str)> = subscribers.iter().map(|(s, e)| (*s, e.as_str())).collect();
    api.record_delivered(cid, &jobs).await;
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
    let (addr, stop) = api.inbound(settings).await;
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
    let verp_hard = verp(&api, c1, hard);
    let r = c
        .send(&verp_hard, &dsn("hard@gmail.test", "failed", "5.1.1"))
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        suppression(&api, "hard@gmail.test").await,
        Some(("bounce".into(), "dsn".into()))
    );
    assert_eq!(subscriber_status(&api, "hard@gmail.test").await, "bounced");
    let r = c
        .send(&verp_hard, &dsn("hard@gmail.test", "failed", "5.1.1"))
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
            &verp(&api, c1, keep),
            &dsn("victim@gmail.test", "failed", "5.1.1"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(suppression(&api, "keep@gmail.test").await, None);
    assert_eq!(subscriber_status(&api, "keep@gmail.test").await, "active");

    // A "DSN" that names no recipient is not taken either.
    let r = c
        .send(
            &verp(&api, c1, keep),
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
            &verp(&api, c1, keep),
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
            &arf(&message_id(&api, c1, comp), Some("complainer@other.test")),
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
            &verp(&api, c1, soft),
            &dsn("soft@yahoo.test", "delayed", "4.2.1"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(suppression(&api, "soft@yahoo.test").await, None);
    let c2 = sent_campaign(&api, l).await;
    let r = c
        .send(
            &verp(&api, c2, soft),
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
    let (addr, stop) = api.inbound(settings).await;
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
