//! Two kinds of bad request get a clear problem+json: text bound for mail headers that holds
//! invisible Unicode formatting (bidi overrides and isolates, direction marks, line and
//! paragraph separators, zero-width characters, the BOM, tag characters) is refused naming the
//! field — in campaign names, sender names and subjects, list names, subscriber attributes
//! (by the API and the import), test recipients and suppression reasons — while bodies keep
//! what they hold; and a path no route serves (404) or a method its route does not take (405)
//! is answered like every other error, not with an empty body.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use serde_json::json;
use tower::ServiceExt;

/// Invisible formatting characters that can disguise a header.
const INVISIBLE: [char; 17] = [
    '\u{202a}',
    '\u{202b}',
    '\u{202c}',
    '\u{202d}',
    '\u{202e}',
    '\u{2066}',
    '\u{2067}',
    '\u{2068}',
    '\u{2069}',
    '\u{200e}',
    '\u{200f}',
    '\u{061c}',
    '\u{2028}',
    '\u{2029}',
    '\u{200b}',
    '\u{feff}',
    '\u{e0041}',
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_formatting_in_header_bound_text_is_refused_naming_the_field() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let list = api.list_with_csv("email,first_name\na@b.test,Aki\n").await;
    let base = json!({"name": "c", "list_id": list, "from_addr": "n@a.test", "subject": "s",
                      "text_body": "t"});
    let campaigns = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM campaigns")
            .fetch_one(&api.state.db)
            .await
            .expect("count");
        n
    };
    let before = campaigns().await;
    let extra = ['\u{200c}', '\u{200d}', '\u{2060}', '\u{e007f}'];
    for (i, c) in INVISIBLE.iter().chain(&extra).enumerate() {
        let field = ["subject", "from_name", "name"][i % 3];
        let mut body = base.clone();
        body[field] = json!(format!("Invoice{c}fdp.exe"));
        let (s, problem) = api.json(Method::POST, "/v1/campaigns", body).await;
        assert_eq!(
            (s, problem["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "U+{:04X} in {field}: {problem}",
            u32::from(*c)
        );
    }
    assert_eq!(campaigns().await, before, "nothing created");

    // Bodies are not header-bound: emoji sequences with joiners stay.
    let mut body = base.clone();
    body["text_body"] = json!("family: 👩\u{200d}👩\u{200d}👧 \u{202e}kept\u{202c}");
    body["html_body"] = json!("<p>👩\u{200d}👧</p>");
    let (s, camp) = api.json(Method::POST, "/v1/campaigns", body).await;
    assert_eq!(s, StatusCode::CREATED, "{camp}");
    let id = camp["id"].as_i64().expect("id");

    // Edits, test recipients, lists, subscribers and suppressions.
    let cases: Vec<(Method, String, serde_json::Value, &str)> = vec![
        (
            Method::PATCH,
            format!("/v1/campaigns/{id}"),
            json!({"subject": "a\u{061c}b"}),
            "subject",
        ),
        (
            Method::POST,
            format!("/v1/campaigns/{id}/test"),
            json!({"recipients": ["ab\u{202e}c@b.test"]}),
            "recipients",
        ),
        (
            Method::POST,
            "/v1/lists".into(),
            json!({"name": "news\u{feff}"}),
            "name",
        ),
        (
            Method::POST,
            format!("/v1/lists/{list}/subscribers"),
            json!({"email": "x@b.test", "attributes": {"first_name": "Aki\u{2067}"}}),
            "attributes",
        ),
        (
            Method::POST,
            "/v1/suppressions".into(),
            json!({"email": "x@b.test", "reason": "spam\u{2028}"}),
            "reason",
        ),
    ];
    for (method, path, body, field) in cases {
        let (s, problem) = api.json(method.clone(), &path, body).await;
        assert_eq!(
            (s, problem["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{method} {path}: {problem}"
        );
    }
    let (_, camp) = api.get(&format!("/v1/campaigns/{id}")).await;
    assert_eq!(camp["subject"], "s", "the refused edit changed nothing");

    // An import reports the row, with its line, and takes the others.
    let (s, _, report) = api
        .call(
            Method::POST,
            &format!("/v1/lists/{list}/subscribers/import"),
            Some(&api.key),
            Some((
                "text/csv",
                "email,first_name\nok@b.test,Ok\nbad@b.test,B\u{200b}ob\n"
                    .as_bytes()
                    .to_vec(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["invalid_rows"][0]["line"], 3, "{report}");
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM subscribers WHERE email_lower = 'bad@b.test'")
            .fetch_one(&api.state.db)
            .await
            .expect("count");
    assert_eq!(n, 0);
}

/// `method path` without a key: status, `Allow`, content type, JSON body.
async fn raw(
    api: &TestApi,
    method: Method,
    path: &str,
    key: Option<&str>,
) -> (StatusCode, String, String, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let resp = api
        .router
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let h = |n: header::HeaderName| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (status, allow, ct) = (resp.status(), h(header::ALLOW), h(header::CONTENT_TYPE));
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, allow, ct, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    for (method, path, key, status, kind) in [
        (
            Method::GET,
            "/nope",
            None,
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            Method::POST,
            "/v1/nothing/here",
            Some(api.key.as_str()),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            Method::DELETE,
            "/v1/lists",
            Some(api.key.as_str()),
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
        (
            Method::POST,
            "/healthz",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
        (
            Method::PUT,
            "/t/1.2.3.x/o.gif",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
    ] {
        let (s, allow, ct, p) = raw(&api, method.clone(), path, key).await;
        assert_eq!(s, status, "{method} {path}");
        assert_eq!(ct, "application/problem+json", "{method} {path}");
        assert_eq!(
            p["type"],
            format!("https://hikyaku.dev/problems/{kind}"),
            "{method} {path}: {p}"
        );
        assert_eq!(p["status"], status.as_u16(), "{p}");
        assert_eq!(p["title"], status.canonical_reason().unwrap_or(""), "{p}");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{p}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                !allow.is_empty(),
                "405 says what is allowed: {method} {path}"
            );
        }
    }
    // The routes themselves still answer.
    let (s, _, _, _) = raw(&api, Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _, _) = raw(&api, Method::GET, "/v1/lists", Some(&api.key)).await;
    assert_eq!(s, StatusCode::OK);
}
