//! The daily error digest over a run with mixed provider throttles: Gmail's 4.7.28, Yahoo's
//! TSS04, Yahoo! JAPAN's VS98, docomo's "slow down", au's resets and Gmail unknown users come
//! out as one row each (normalized reply, its site and MX host, counts matching the record),
//! most frequent first, as text, CSV and JSON, and posted to a webhook.

use std::net::Ipv4Addr;
use std::time::Duration;

use hikyaku_api::admin::{digest, Ctx};
use hikyaku_loadtest::sink::{Profile, ProviderKind};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::World;

const ZONE: &str = "
gmail.test          MX 10 mx1.google.test
mx1.google.test     A 127.0.0.2
yahoo.test          MX 10 mta5.yahoo.test
mta5.yahoo.test     A 127.0.0.3
docomo.test         MX 10 mfsmax.docomo.test
mfsmax.docomo.test  A 127.0.0.4
ybb.test            MX 10 mx.ybb.test
mx.ybb.test         A 127.0.0.7
au.test             MX 10 mx.au.test
mx.au.test          A 127.0.0.8
";

/// No adaptive rules (the digest is about replies, not shaping), quick fixed retries.
const SITES: &str = r#"
[sites.google]
mx_suffixes = ["google.test"]
max_connections = 2
reply_rules = []
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.yahoo]
mx_suffixes = ["yahoo.test"]
max_connections = 2
reply_rules = []
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.yahoo-jp]
mx_suffixes = ["ybb.test"]
max_connections = 2
reply_rules = []
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.docomo]
mx_suffixes = ["docomo.test"]
rate = "unlimited"
max_connections = 2
reply_rules = []
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.au]
mx_suffixes = ["au.test"]
rate = "unlimited"
max_connections = 2
reply_rules = []
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.default]
max_connections = 2
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
"#;

fn throttled(kind: ProviderKind) -> Profile {
    Profile {
        max_rate: 4,
        ..Profile::provider(kind)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_groups_mixed_provider_throttles_into_one_row_each() {
    let world = World::start(
        ZONE,
        vec![
            (Ipv4Addr::new(127, 0, 0, 2), throttled(ProviderKind::Google)),
            (Ipv4Addr::new(127, 0, 0, 3), throttled(ProviderKind::Yahoo)),
            (Ipv4Addr::new(127, 0, 0, 4), throttled(ProviderKind::Docomo)),
            (
                Ipv4Addr::new(127, 0, 0, 7),
                throttled(ProviderKind::YahooJp),
            ),
            (Ipv4Addr::new(127, 0, 0, 8), throttled(ProviderKind::Au)),
        ],
    )
    .await;
    let api = TestApi::start(&world.redis).await;
    let background = api.background();
    let engine = world.engine(world.config("", SITES));
    let started = chrono::Utc::now() - chrono::Duration::seconds(5);

    let mut csv = String::from("email\n");
    for d in [
        "gmail.test",
        "yahoo.test",
        "docomo.test",
        "ybb.test",
        "au.test",
    ] {
        for i in 0..16 {
            csv.push_str(&format!("u{i}@{d}\n"));
        }
    }
    csv.push_str("unknown-1@gmail.test\nunknown-2@gmail.test\n");
    let l = api.list_with_csv(&csv).await;
    let cid = api.create_campaign(l, "hello").await;
    api.send(cid).await;
    api.wait_completed(cid, 90).await;
    // Deferral events are recorded beside the end states: wait until the recorder is idle.
    let mut con = world.redis.con().await;
    wait_for(Duration::from_secs(10), "events recorded", || {
        let mut con = con.clone();
        async move {
            let mut left = 0u64;
            for s in 0..hikyaku_tests::world::SHARDS {
                let n: u64 = redis::cmd("XLEN")
                    .arg(hikyaku_queue_schema::Keys::events(s))
                    .query_async(&mut con)
                    .await
                    .ok()?;
                left += n;
            }
            (left == 0).then_some(())
        }
    })
    .await;
    let _ = &mut con;

    let ctx = Ctx::from_state(api.state.clone());
    let until = chrono::Utc::now() + chrono::Duration::seconds(5);
    let d = digest::build(&ctx, started, until).await.expect("digest");
    let text = d.to_text();
    eprintln!("{text}");

    // One row per (kind, site), each with its provider's reply.
    let expect: [(&str, &str, &str, &str); 5] = [
        (
            "deferred",
            "google",
            "421 4.7.28 [<ip>] Our system has detected an unusual rate",
            "mx1.google.test",
        ),
        (
            "deferred",
            "yahoo",
            "421 4.7.0 [TSS04] Messages from <ip> temporarily deferred",
            "mta5.yahoo.test",
        ),
        (
            "deferred",
            "yahoo-jp",
            "421 4.7.0 Messages from <ip> temporarily deferred - VS98-IP0 deferred",
            "mx.ybb.test",
        ),
        (
            "deferred",
            "docomo",
            "421 4.7.0 Too many messages, slow down",
            "mfsmax.docomo.test",
        ),
        (
            "bounced",
            "google",
            "550 5.1.1 The email account that you tried to reach does not exist",
            "mx1.google.test",
        ),
    ];
    for (kind, site, start, mx) in expect {
        let rows: Vec<&digest::DigestRow> = d
            .rows
            .iter()
            .filter(|r| r.kind == kind && r.sites.contains_key(site))
            .collect();
        assert_eq!(rows.len(), 1, "{kind} at {site}: one row\n{text}");
        let r = rows[0];
        assert!(
            r.pattern.starts_with(start),
            "{kind} at {site}: {:?}\n{text}",
            r.pattern
        );
        assert_eq!(r.sites.len(), 1, "{:?}", r.sites);
        assert_eq!(r.mx_hosts.keys().collect::<Vec<_>>(), vec![mx]);
        assert!(r.first_seen <= r.last_seen);
    }
    let au: Vec<&digest::DigestRow> = d
        .rows
        .iter()
        .filter(|r| r.sites.contains_key("au"))
        .collect();
    assert_eq!(au.len(), 1, "au's resets: one row\n{text}");
    assert_eq!(au[0].kind, "deferred");
    assert_eq!(d.rows.len(), 6, "a handful of rows, no more\n{text}");
    let bounced = d
        .rows
        .iter()
        .find(|r| r.kind == "bounced")
        .expect("bounce row");
    assert_eq!(bounced.count, 2);
    // Counts match the record, and the most frequent row comes first.
    let per_site: Vec<(String, i64)> = sqlx::query_as(
        "SELECT site, count(*) FROM deferral_events WHERE campaign_id = $1 GROUP BY 1",
    )
    .bind(cid)
    .fetch_all(&api.state.db)
    .await
    .expect("deferrals");
    assert_eq!(per_site.len(), 5, "{per_site:?}");
    for (site, n) in &per_site {
        let row = d
            .rows
            .iter()
            .find(|r| r.kind == "deferred" && r.sites.contains_key(site))
            .expect("row");
        assert_eq!(row.count, *n, "{site}");
        assert!(*n > 0);
    }
    assert_eq!(
        d.total,
        per_site.iter().map(|p| p.1).sum::<i64>() + 2,
        "every failure counted once"
    );
    assert!(d.rows.windows(2).all(|w| w[0].count >= w[1].count));

    // CSV and JSON carry the same rows.
    let csv = d.to_csv();
    assert_eq!(csv.lines().count(), 1 + d.rows.len(), "{csv}");
    assert!(csv.starts_with("count,kind,pattern,sites,mx_hosts,first_seen,last_seen,example\n"));
    let json: serde_json::Value = serde_json::to_value(&d).expect("json");
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(6));

    // The webhook gets the JSON digest.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("hook");
    let port = hook.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = hook.accept().await.ok()?;
        let mut req = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await.ok()?;
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())?;
                if body.len() >= len {
                    s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.ok()?;
                    return Some((head.to_owned(), body.to_owned()));
                }
            }
            if n == 0 {
                return None;
            }
        }
    });
    let body = serde_json::to_string(&d).expect("json");
    digest::post_webhook(&format!("http://127.0.0.1:{port}/hooks/digest"), &body)
        .await
        .expect("webhook accepted");
    let (head, got) = server.await.expect("server").expect("request");
    assert!(head.starts_with("POST /hooks/digest HTTP/1.1"), "{head}");
    assert_eq!(got, body);
    assert!(digest::post_webhook("https://example.invalid/x", "{}")
        .await
        .is_err());

    engine.stop().await.expect("engine stops");
    background.stop().await;
}
