//! Open and click tracking from the recipient's side: a tracked campaign's delivered HTML part
//! (decoded whatever its transfer encoding) carries a pixel and click URLs under its own signed
//! token; loading the pixel answers an uncacheable GIF, clicking redirects to the original URL
//! (entities decoded), and the stats count every hit and every recipient once. Tampered
//! tokens, unknown links and unsubscribe tokens get 404; a test send's links work but count
//! nothing; a campaign without tracking is delivered as written.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::world::{World, STANDARD_SITES};
use mail_parser::MessageParser;
use serde_json::json;
use tower::ServiceExt;

const PUBLIC: &str = "http://127.0.0.1:8080";
const SALE: &str = "https://shop.test/sale?a=1&b=2";
const BLOG: &str = "http://blog.test/post";
const HTML: &str = "<html><body><p>Hi {{first_name}}</p>\n\
    <p><a href=\"https://shop.test/sale?a=1&amp;b=2\">Sale</a></p>\n\
    <p><a href='http://blog.test/post'>Blog</a></p>\n\
    <p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p>\n\
    </body></html>\n";
const TEXT: &str = "Hi {{first_name}}\nSale: https://shop.test/sale?a=1&b=2\n";

/// GET `path` (no API key, as a mail client would); status, headers, body.
async fn hit(api: &TestApi, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let req = Request::builder()
        .uri(path)
        .header(header::USER_AGENT, "TestMail/1.0")
        .body(Body::empty())
        .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    (parts.status, parts.headers, bytes.to_vec())
}

fn header_of(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Expects a 404 problem for `path`.
async fn not_found(api: &TestApi, path: &str) {
    let (s, h, _) = hit(api, path).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    assert_eq!(
        header_of(&h, header::CONTENT_TYPE),
        "application/problem+json",
        "{path}"
    );
}

/// The decoded HTML and text parts of a delivered message, with LF line ends.
fn parts(content: &[u8]) -> (String, String) {
    let m = MessageParser::default().parse(content).expect("a message");
    let html = m.body_html(0).expect("an HTML part").replace("\r\n", "\n");
    let text = m.body_text(0).expect("a text part").replace("\r\n", "\n");
    (html, text)
}

/// Every `attr="…"` or `attr='…'` value of `html` that starts with `prefix`, in order.
fn values(html: &str, attr: &str, prefix: &str) -> Vec<String> {
    let mut found: Vec<(usize, String)> = ['"', '\'']
        .into_iter()
        .flat_map(|q| {
            html.match_indices(&format!("{attr}={q}{prefix}"))
                .map(move |(at, _)| {
                    let v = &html[at + attr.len() + 2..];
                    (at, v[..v.find(q).expect("closing quote")].to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, v)| v).collect()
}

/// The path of a tracking URL, and its token.
fn split(url: &str) -> (&str, &str) {
    let path = url
        .strip_prefix(PUBLIC)
        .unwrap_or_else(|| panic!("under the public URL: {url}"));
    let token = path
        .strip_prefix("/t/")
        .and_then(|t| t.split('/').next())
        .unwrap_or_else(|| panic!("a tracking path: {path}"));
    (path, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_and_clicks_are_served_and_counted_once_per_recipient() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let l = api
        .list_with_csv("email,first_name\na@gmail.test,Aki\nb@other.test,Ben\nc@other.test,Chie\n")
        .await;
    let mut ids = Vec::new();
    for (subject, tracking) in [("tracked", true), ("plain", false)] {
        let (s, c) = api
            .json(
                Method::POST,
                "/v1/campaigns",
                json!({"name": subject, "list_id": l, "from_addr": "n@a.test", "subject": subject,
                       "text_body": TEXT, "html_body": HTML,
                       "track_opens": tracking, "track_clicks": tracking}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        assert_eq!(
            (c["track_opens"].as_bool(), c["track_clicks"].as_bool()),
            (Some(tracking), Some(tracking))
        );
        ids.push(c["id"].as_i64().expect("id"));
    }
    let (tracked, plain) = (ids[0], ids[1]);
    // Turned off and on again through update (drafts only).
    for on in [false, true] {
        let (s, c) = api
            .json(
                Method::PATCH,
                &format!("/v1/campaigns/{tracked}"),
                json!({"track_clicks": on}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{c}");
        assert_eq!(c["track_clicks"].as_bool(), Some(on));
        assert_eq!(c["track_opens"].as_bool(), Some(true), "unchanged");
    }
    // A test send first: its links must work and count nothing.
    let (s, t) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{tracked}/test"),
            json!({"recipients": ["tester@other.test"]}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{t}");
    for cid in [tracked, plain] {
        api.send(cid).await;
        hikyaku_api::expansion::expand(&api.state, cid)
            .await
            .expect("expand");
    }

    let engine = world.engine(world.config("", STANDARD_SITES));
    let messages = world.captured_at_least(7).await;
    engine.stop().await.expect("engine stops cleanly");
    let message = |subject: &str, rcpt: &str| {
        let m = messages
            .iter()
            .find(|m| {
                m.recipients == [rcpt]
                    && MessageParser::default()
                        .parse(&m.content)
                        .and_then(|p| p.subject().map(|s| s == subject))
                        == Some(true)
            })
            .unwrap_or_else(|| panic!("{subject} message to {rcpt}"));
        parts(&m.content)
    };

    // The tracked message: a pixel and two click URLs under one token; the unsubscribe link
    // and the text part as written.
    let tracked_links = |html: &str| {
        let pixels = values(html, "src", &format!("{PUBLIC}/t/"));
        assert_eq!(pixels.len(), 1, "one pixel: {html}");
        let clicks = values(html, "href", &format!("{PUBLIC}/t/"));
        assert_eq!(clicks.len(), 2, "two tracked links: {html}");
        let (pixel, token) = split(&pixels[0]);
        assert_eq!(pixel, format!("/t/{token}/o.gif"));
        for (n, c) in clicks.iter().enumerate() {
            assert_eq!(split(c).0, format!("/t/{token}/c/{n}"));
        }
        assert!(
            !html.contains("shop.test") && !html.contains("blog.test"),
            "{html}"
        );
        let unsubscribe = values(html, "href", &format!("{PUBLIC}/u/"));
        assert_eq!(unsubscribe.len(), 1, "unsubscribe link untouched: {html}");
        (
            pixel.to_owned(),
            clicks
                .iter()
                .map(|c| split(c).0.to_owned())
                .collect::<Vec<_>>(),
            unsubscribe[0].trim_start_matches(PUBLIC).to_owned(),
        )
    };
    let (html_a, text_a) = message("tracked", "a@gmail.test");
    assert!(html_a.contains("<p>Hi Aki</p>"), "{html_a}");
    assert!(
        html_a.contains("style=\"display:none\">\n</body>"),
        "pixel before </body>: {html_a}"
    );
    assert_eq!(text_a, "Hi Aki\nSale: https://shop.test/sale?a=1&b=2\n");
    let (pixel_a, clicks_a, unsubscribe_a) = tracked_links(&html_a);
    let (html_b, _) = message("tracked", "b@other.test");
    let (pixel_b, clicks_b, _) = tracked_links(&html_b);
    assert_ne!(pixel_a, pixel_b, "a token per recipient");

    // The pixel: a GIF no cache keeps.
    for _ in 0..2 {
        let (s, h, body) = hit(&api, &pixel_a).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(header_of(&h, header::CONTENT_TYPE), "image/gif");
        assert_eq!(header_of(&h, header::CACHE_CONTROL), "no-store");
        assert_eq!(body.len(), 43);
        assert!(body.starts_with(b"GIF89a\x01\x00\x01\x00"), "1×1");
    }
    // Clicks: to the original URL, `&amp;` decoded.
    for _ in 0..2 {
        let (s, h, _) = hit(&api, &clicks_a[0]).await;
        assert_eq!(s, StatusCode::FOUND);
        assert_eq!(header_of(&h, header::LOCATION), SALE);
    }
    let (s, _, _) = hit(&api, &pixel_b).await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, _) = hit(&api, &clicks_b[1]).await;
    assert_eq!(
        (s, header_of(&h, header::LOCATION)),
        (StatusCode::FOUND, BLOG)
    );

    // Refused, and recorded nowhere.
    let token_a = pixel_a.trim_start_matches("/t/").trim_end_matches("/o.gif");
    let mut p: Vec<&str> = token_a.split('.').collect();
    assert_eq!(p.len(), 4, "{token_a}");
    let other_subscriber = (p[2].parse::<i64>().expect("subscriber id") + 1).to_string();
    p[2] = &other_subscriber;
    let forged = p.join(".");
    not_found(&api, &format!("/t/{forged}/o.gif")).await;
    not_found(&api, &format!("/t/{forged}/c/0")).await;
    for n in ["2", "-1", "99999999999", "x"] {
        not_found(&api, &format!("/t/{token_a}/c/{n}")).await;
    }
    let unsubscribe_token = unsubscribe_a
        .strip_prefix("/u/")
        .unwrap_or_else(|| panic!("{unsubscribe_a}"));
    not_found(&api, &format!("/t/{unsubscribe_token}/o.gif")).await;
    not_found(&api, &format!("/t/{unsubscribe_token}/c/0")).await;
    not_found(&api, &format!("/u/{token_a}")).await;
    // A validly signed token naming another tenant (a key that is not this campaign's owner)
    // finds nothing: links and opens are looked up with the token's tenant.
    let other = hikyaku_api::admin::create_tenant(&api.state.db, "other")
        .await
        .expect("tenant");
    let cross = hikyaku_api::tokens::sign(
        &api.state.token_secret,
        hikyaku_api::tokens::Purpose::Track,
        hikyaku_api::tokens::Recipient {
            tenant: other.tenant_id,
            campaign: p[1].parse().expect("campaign id"),
            subscriber: other_subscriber.parse::<i64>().expect("id") - 1,
        },
    );
    not_found(&api, &format!("/t/{cross}/c/0")).await;
    // The pixel is served either way; the counts below show it recorded nothing.
    assert_eq!(
        hit(&api, &format!("/t/{cross}/o.gif")).await.0,
        StatusCode::OK
    );

    // The test send's links work, for nobody.
    let (html_t, _) = message("tracked", "tester@other.test");
    let (pixel_t, clicks_t, _) = tracked_links(&html_t);
    assert_eq!(hit(&api, &pixel_t).await.0, StatusCode::OK);
    let (s, h, _) = hit(&api, &clicks_t[0]).await;
    assert_eq!(
        (s, header_of(&h, header::LOCATION)),
        (StatusCode::FOUND, SALE)
    );

    // a: 2 opens, 2 clicks; b: 1 and 1; c and the tester: nothing counted.
    let (s, st) = api.get(&format!("/v1/campaigns/{tracked}/stats")).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(
        [
            &st["opens"],
            &st["unique_opens"],
            &st["clicks"],
            &st["unique_clicks"]
        ],
        [3, 2, 3, 2],
        "{st}"
    );
    let (ua, link): (String, Option<i32>) = sqlx::query_as(
        "SELECT user_agent, link FROM tracking_events WHERE kind = 'click' ORDER BY at DESC LIMIT 1",
    )
    .fetch_one(&api.state.db)
    .await
    .expect("a click");
    assert_eq!((ua.as_str(), link), ("TestMail/1.0", Some(1)));

    // Without tracking: delivered as written, nothing to count.
    let (html_p, _) = message("plain", "a@gmail.test");
    assert!(
        !html_p.contains("/t/") && !html_p.contains("o.gif"),
        "{html_p}"
    );
    assert!(html_p.contains(&format!(
        "href=\"{}\"",
        "https://shop.test/sale?a=1&amp;b=2"
    )));
    assert!(html_p.contains("href='http://blog.test/post'"));
    let (_, st) = api.get(&format!("/v1/campaigns/{plain}/stats")).await;
    assert_eq!(
        [
            &st["opens"],
            &st["unique_opens"],
            &st["clicks"],
            &st["unique_clicks"]
        ],
        [0, 0, 0, 0],
        "{st}"
    );
}

/// Tracking tokens expire for recording, not for the recipient: within `tracking_days` of the
/// campaign's start opens and clicks are recorded; after it the pixel and the redirect still
/// answer (old mail keeps working links) and nothing is recorded. Unsubscribe tokens do not
/// expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_stops_recording_after_the_tracking_window_but_links_keep_working() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let l = api.list_with_csv("email\nhanako@gmail.test\n").await;
    let (status, camp) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({"name": "c", "list_id": l, "from_addr": "n@a.test", "subject": "s",
                   "text_body": "t", "html_body": HTML, "track_opens": true, "track_clicks": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{camp}");
    let c = camp["id"].as_i64().expect("campaign");
    api.send(c).await;
    let (sub,): (i64,) = sqlx::query_as("SELECT id FROM subscribers WHERE list_id = $1")
        .bind(l)
        .fetch_one(&api.state.db)
        .await
        .expect("subscriber");
    let (link,): (i32,) =
        sqlx::query_as("SELECT min(n) FROM campaign_links WHERE campaign_id = $1")
            .bind(c)
            .fetch_one(&api.state.db)
            .await
            .expect("a stored link");
    let r = hikyaku_api::tokens::Recipient {
        tenant: api.tenant,
        campaign: c,
        subscriber: sub,
    };
    let track = hikyaku_api::tokens::sign(
        &api.state.token_secret,
        hikyaku_api::tokens::Purpose::Track,
        r,
    );
    let unsubscribe = hikyaku_api::tokens::sign(
        &api.state.token_secret,
        hikyaku_api::tokens::Purpose::Unsubscribe,
        r,
    );
    let recorded = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM tracking_events WHERE campaign_id = $1")
                .bind(c)
                .fetch_one(&api.state.db)
                .await
                .expect("count");
        n
    };
    let both = || async {
        let (s, h, body) = hit(&api, &format!("/t/{track}/o.gif")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.starts_with(b"GIF89a"));
        assert_eq!(header_of(&h, header::CONTENT_TYPE), "image/gif");
        let (s, h, _) = hit(&api, &format!("/t/{track}/c/{link}")).await;
        assert_eq!(s, StatusCode::FOUND);
        assert!(!header_of(&h, header::LOCATION).is_empty());
    };
    both().await;
    assert_eq!(
        recorded().await,
        2,
        "within the window: open and click recorded"
    );

    sqlx::query("UPDATE campaigns SET sent_at = now() - interval '91 days' WHERE id = $1")
        .bind(c)
        .execute(&api.state.db)
        .await
        .expect("age the campaign");
    both().await;
    assert_eq!(
        recorded().await,
        2,
        "after the window nothing more is recorded"
    );

    // The unsubscribe link of the same old message still works.
    let (s, _, _) = hit(&api, &format!("/u/{unsubscribe}")).await;
    assert_eq!(s, StatusCode::OK);
}
