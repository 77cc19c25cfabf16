//! Reports that name a job are taken only for identifiers the service signed and messages it
//! delivered: a complaint or bounce made up from the sequential ids every recipient can see
//! (Message-ID, VERP address) suppresses nobody, and the listener's reply and public metric
//! are the same whether a made-up identifier named a real job or not.

use hikyaku_api::inbound::InboundSettings;
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use hikyaku_tests::smtp_client::{arf, dsn, job_tag, Client};

const DOMAIN: &str = "bounces.acme.test";

async fn suppressed(api: &TestApi, email: &str) -> bool {
    let n: Option<(i64,)> =
        sqlx::query_as("SELECT 1::bigint FROM suppressions WHERE email_lower = $1")
            .bind(email)
            .fetch_optional(&api.state.db)
            .await
            .expect("query");
    n.is_some()
}

/// The tag the service gives job (`campaign`, `seq`).
fn tag(api: &TestApi, campaign: i64, seq: i64) -> String {
    job_tag(&api.state.token_secret, campaign, seq)
}

fn counters(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("hikyaku_api_feedback_total{outcome=\""))
        .filter_map(|l| {
            let (label, rest) = l.split_once('"')?;
            Some((label.to_owned(), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_identifiers_of_delivered_messages_are_acted_on() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let l = api
        .list_with_csv("email\nvictim@other.test\ndelivered@other.test\nsent@other.test\n")
        .await;
    let ids_: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, email_lower FROM subscribers WHERE list_id = $1")
            .bind(l)
            .fetch_all(&api.state.db)
            .await
            .expect("ids");
    let id = |e: &str| ids_.iter().find(|(_, x)| x == e).expect("subscriber").0;
    let (victim, done, sent) = (
        id("victim@other.test"),
        id("delivered@other.test"),
        id("sent@other.test"),
    );
    // A campaign that was never sent, and one whose messages to two subscribers were.
    let never = api.create_campaign(l, "never sent").await;
    let c = api.create_campaign(l, "hello").await;
    api.send(c).await;
    api.record_delivered(
        c,
        &[(done, "delivered@other.test"), (sent, "sent@other.test")],
    )
    .await;

    let metrics = hikyaku_api::metrics::install();
    let before = counters(&metrics.render());
    let (addr, stop) = api.inbound(InboundSettings::new(DOMAIN)).await;
    let mut client = Client::connect(addr).await;
    client.cmd("EHLO mx.test").await;
    let fbl = format!("fbl@{DOMAIN}");
    let forged = [
        // The unsigned forms every recipient can read off a message.
        (
            fbl.clone(),
            arf(&format!("hk.{never}.{victim}@acme.test"), None),
        ),
        (
            fbl.clone(),
            arf(&format!("hk.{c}.{victim}@acme.test"), None),
        ),
        (
            format!("b-{c}-{victim}@{DOMAIN}"),
            dsn("victim@other.test", "failed", "5.1.1"),
        ),
        // Made-up tags.
        (
            fbl.clone(),
            arf(&format!("hk.{c}.{victim}.0123456789abcdef@acme.test"), None),
        ),
        (
            format!("b-{c}-{victim}-0123456789abcdef@{DOMAIN}"),
            dsn("victim@other.test", "failed", "5.1.1"),
        ),
        // Another job's tag, and a spelling of a valid one that is not its own.
        (
            fbl.clone(),
            arf(
                &format!("hk.{c}.{victim}.{}@acme.test", tag(&api, c, done)),
                None,
            ),
        ),
        (
            fbl.clone(),
            arf(
                &format!(
                    "hk.{c}.{done}.{}@acme.test",
                    tag(&api, c, done).to_ascii_uppercase()
                ),
                None,
            ),
        ),
        // Signed, but never delivered: the campaign never sent.
        (
            fbl.clone(),
            arf(
                &format!("hk.{never}.{victim}.{}@acme.test", tag(&api, never, victim)),
                None,
            ),
        ),
        (
            format!("b-{never}-{victim}-{}@{DOMAIN}", tag(&api, never, victim)),
            dsn("victim@other.test", "failed", "5.1.1"),
        ),
    ];
    for (rcpt, report) in &forged {
        let r = client.send(rcpt, report).await;
        assert!(r.starts_with("250"), "the same reply for every report: {r}");
    }
    assert!(
        !suppressed(&api, "victim@other.test").await,
        "nobody suppressed"
    );
    let after = counters(&metrics.render());
    let grew = |label: &str| {
        let at = |v: &[(String, f64)]| v.iter().find(|(l, _)| l == label).map_or(0.0, |x| x.1);
        at(&after) - at(&before)
    };
    assert_eq!(grew("not-applied"), forged.len() as f64);
    assert!(
        after.iter().all(
            |(l, _)| ["bounce", "soft-bounce", "complaint", "not-applied"].contains(&l.as_str())
        ),
        "no label tells one miss from another: {after:?}"
    );

    // The real ones: a complaint quoting the delivered message's Message-ID (recipient
    // redacted), and a DSN to its VERP address.
    let r = client
        .send(
            &fbl,
            &arf(
                &format!("hk.{c}.{done}.{}@acme.test", tag(&api, c, done)),
                None,
            ),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert!(
        suppressed(&api, "delivered@other.test").await,
        "complaint applied"
    );
    let r = client
        .send(
            &format!("b-{c}-{sent}-{}@{DOMAIN}", tag(&api, c, sent)),
            &dsn("sent@other.test", "failed", "5.1.1"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    assert!(suppressed(&api, "sent@other.test").await, "bounce applied");
    let _ = stop.send(true);
}
