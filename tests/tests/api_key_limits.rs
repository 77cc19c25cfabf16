//! Per-key request limits: an API key over its rate gets 429 problem+json with `Retry-After`,
//! and the refused request changes nothing; another tenant's key is not held back; the key
//! works again once the wait has passed.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use tower::ServiceExt;

const RATE: u32 = 5;

/// POST /v1/lists with `key`: status, `Retry-After`, content type, JSON body.
async fn create_list(
    api: &TestApi,
    key: &str,
    name: &str,
) -> (StatusCode, Option<u64>, String, serde_json::Value) {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/lists")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!(r#"{{"name":"{name}"}}"#)))
        .expect("request");
    let resp = api.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let header_str = |h| {
        resp.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry = header_str(header::RETRY_AFTER).and_then(|v| v.parse().ok());
    let ct = header_str(header::CONTENT_TYPE).unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, retry, ct, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let redis = TestRedis::start();
    let mut api = TestApi::start(&redis).await;
    api.state.key_limiter = hikyaku_api::state::key_limiter(RATE);
    api.router = hikyaku_api::app(api.state.clone());
    let other = api.other_tenant_key().await;

    let mut created = 0;
    let mut refused = Vec::new();
    for i in 0..4 * RATE {
        let (s, retry, ct, body) = create_list(&api, &api.key.clone(), &format!("l{i}")).await;
        match s {
            StatusCode::CREATED => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(ct, "application/problem+json", "{body}");
                assert_eq!(body["status"], 429, "{body}");
                let retry = retry.expect("Retry-After on a 429");
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
                refused.push(format!("l{i}"));
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        (RATE..4 * RATE).contains(&created),
        "{created} created at {RATE}/s"
    );
    assert!(!refused.is_empty());

    // The refused requests created nothing.
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM lists WHERE tenant_id = $1")
        .bind(api.tenant)
        .fetch_one(&api.state.db)
        .await
        .expect("count");
    assert_eq!(n, i64::from(created));
    let (gone,): (i64,) = sqlx::query_as("SELECT count(*) FROM lists WHERE name = ANY($1)")
        .bind(&refused)
        .fetch_one(&api.state.db)
        .await
        .expect("count");
    assert_eq!(gone, 0, "a refused request changes nothing");

    // Another key is not held back by this one's use.
    let (s, _, _, body) = create_list(&api, &other, "theirs").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    // After the wait, the key works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _, _, body) = create_list(&api, &api.key.clone(), "later").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}
