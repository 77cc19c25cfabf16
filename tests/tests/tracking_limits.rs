//! The unauthenticated tracking routes cannot be used to grow the record without bound: a
//! loop over one recipient's pixel or link is answered every time, its first hits of the hour
//! are recorded as rows and the rest only counted, per campaign; another recipient's hits are
//! recorded as usual. Tokens and click indexes are taken in one spelling only: the canonical
//! form works, every other spelling of the same values (sign, leading zeros, upper-case hex)
//! is an unknown link (404), for tracking and unsubscribe tokens alike.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use hikyaku_api::tokens::{self, Purpose, Recipient};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use serde_json::json;
use tower::ServiceExt;

const HTML: &str = "<html><body><p><a href=\"https://shop.test/sale\">Sale</a></p></body></html>\n";

/// GET `path` without a key: the status, and the `Content-Type`.
async fn hit(api: &TestApi, path: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::USER_AGENT, "LoopMail/1.0")
        .body(Body::empty())
        .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("infallible");
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (resp.status(), ct)
}

/// A sent tracked campaign to two subscribers: (campaign, subscriber ids, first link index).
async fn tracked_campaign(api: &TestApi) -> (i64, Vec<i64>, i32) {
    let l = api
        .list_with_csv("email\nloop@gmail.test\ncalm@gmail.test\n")
        .await;
    let (s, camp) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({"name": "c", "list_id": l, "from_addr": "n@a.test", "subject": "s",
                   "text_body": "t", "html_body": HTML, "track_opens": true, "track_clicks": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{camp}");
    let c = camp["id"].as_i64().expect("campaign");
    api.send(c).await;
    let subs: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM subscribers WHERE list_id = $1 ORDER BY email_lower DESC")
            .bind(l)
            .fetch_all(&api.state.db)
            .await
            .expect("subscribers");
    let (link,): (i32,) =
        sqlx::query_as("SELECT min(n) FROM campaign_links WHERE campaign_id = $1")
            .bind(c)
            .fetch_one(&api.state.db)
            .await
            .expect("a stored link");
    (c, subs.into_iter().map(|s| s.0).collect(), link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_over_one_tracking_link_records_a_few_rows_and_counts_the_rest() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let (c, subs, link) = tracked_campaign(&api).await;
    let token = |subscriber| {
        tokens::sign(
            &api.state.token_secret,
            Purpose::Track,
            Recipient {
                tenant: api.tenant,
                campaign: c,
                subscriber,
            },
        )
    };
    let looping = token(subs[0]);
    for _ in 0..50 {
        let (s, ct) = hit(&api, &format!("/t/{looping}/o.gif")).await;
        assert_eq!((s, ct.as_str()), (StatusCode::OK, "image/gif"));
        let (s, _) = hit(&api, &format!("/t/{looping}/c/{link}")).await;
        assert_eq!(s, StatusCode::FOUND, "the redirect always answers");
    }
    let calm = token(subs[1]);
    let (s, _) = hit(&api, &format!("/t/{calm}/o.gif")).await;
    assert_eq!(s, StatusCode::OK);

    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT subscriber_id, kind, count(*) FROM tracking_events WHERE campaign_id = $1 \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(c)
    .fetch_all(&api.state.db)
    .await
    .expect("rows");
    let mut want = vec![
        (subs[0], "click".to_owned(), 10),
        (subs[0], "open".to_owned(), 10),
        (subs[1], "open".to_owned(), 1),
    ];
    want.sort();
    assert_eq!(rows, want, "ten rows per recipient and kind in the hour");
    let counted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, hits FROM tracking_unrecorded WHERE campaign_id = $1 ORDER BY kind",
    )
    .bind(c)
    .fetch_all(&api.state.db)
    .await
    .expect("the hits over the cap are counted");
    assert_eq!(
        counted,
        vec![("click".to_owned(), 40), ("open".to_owned(), 40)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_click_indexes_have_one_spelling() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let (c, subs, link) = tracked_campaign(&api).await;
    let r = Recipient {
        tenant: api.tenant,
        campaign: c,
        subscriber: subs[0],
    };
    for (purpose, path) in [
        (Purpose::Track, "/t/{}/o.gif"),
        (Purpose::Unsubscribe, "/u/{}"),
    ] {
        let good = tokens::sign(&api.state.token_secret, purpose, r);
        let (body, tag) = good.rsplit_once('.').expect("a tag");
        let ids: Vec<&str> = body.split('.').collect();
        let mut variants = vec![
            format!("+{good}"),
            format!("0{good}"),
            format!("{}.+{}.{}.{tag}", ids[0], ids[1], ids[2]),
            format!("{}.{}.0{}.{tag}", ids[0], ids[1], ids[2]),
        ];
        if tag.bytes().any(|b| b.is_ascii_alphabetic()) {
            variants.push(format!("{body}.{}", tag.to_ascii_uppercase()));
        }
        // A tag byte below 0x10 spelled `+x` parses as the same byte: find such a token.
        let plus = (1..10_000)
            .map(|s| {
                tokens::sign(
                    &api.state.token_secret,
                    purpose,
                    Recipient { subscriber: s, ..r },
                )
            })
            .find_map(|t| {
                let (b, tag) = t.rsplit_once('.')?;
                tag.strip_prefix('0')
                    .map(|rest| (t.clone(), format!("{b}.+{rest}")))
            })
            .expect("one of 10,000 tags starts with 0");
        let (s, _) = hit(&api, &path.replace("{}", &plus.0)).await;
        assert_eq!(s, StatusCode::OK, "canonical {}", plus.0);
        variants.push(plus.1);
        // The token as signed works…
        let (s, _) = hit(&api, &path.replace("{}", &good)).await;
        assert_eq!(s, StatusCode::OK, "{good}");
        // …and no other spelling of it.
        for v in variants {
            assert_ne!(v, good);
            let (s, ct) = hit(&api, &path.replace("{}", &v)).await;
            assert_eq!(
                (s, ct.as_str()),
                (StatusCode::NOT_FOUND, "application/problem+json"),
                "{v}"
            );
        }
    }

    let track = tokens::sign(&api.state.token_secret, Purpose::Track, r);
    let (s, _) = hit(&api, &format!("/t/{track}/c/{link}")).await;
    assert_eq!(s, StatusCode::FOUND, "link {link}");
    for n in [
        format!("0{link}"),
        format!("+{link}"),
        format!("00{link}"),
        format!("-0{link}"),
    ] {
        let (s, _) = hit(&api, &format!("/t/{track}/c/{n}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "click index {n:?}");
    }
}
