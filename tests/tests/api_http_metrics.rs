//! The API's HTTP metrics: every request counted by method, route template and status class,
//! timed, and the PostgreSQL pool's use read at each scrape — with labels a client cannot grow:
//! a path no route serves is `unmatched`, a method nobody defined is `other`.

use axum::body::Body;
use axum::http::Request;
use hikyaku_loadtest::promtext;
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;

async fn call(api: &TestApi, method: &str, uri: &str) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {}", api.key))
        .body(Body::empty())
        .expect("request");
    let r = tower::ServiceExt::oneshot(api.router.clone(), req)
        .await
        .expect("infallible");
    let status = r.status().as_u16();
    let bytes = axum::body::to_bytes(r.into_body(), 16 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(promtext::parse_line)
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(n, x)| n == k && x == v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_template_and_class_with_bounded_labels() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    for _ in 0..3 {
        assert_eq!(call(&api, "GET", "/v1/lists/987654").await.0, 404);
    }
    assert_eq!(call(&api, "GET", "/no/such/path/4711").await.0, 404);
    assert_eq!(call(&api, "BREW", "/no/such/path/4712").await.0, 404);
    let (status, text) = call(&api, "GET", "/metrics").await;
    assert_eq!(status, 200);

    let lists = value(
        &text,
        "hikyaku_api_http_requests_total",
        &[
            ("method", "GET"),
            ("route", "/v1/lists/{id}"),
            ("class", "4xx"),
        ],
    );
    assert_eq!(lists, 3.0, "counted under the route template:\n{text}");
    assert_eq!(
        value(
            &text,
            "hikyaku_api_http_requests_total",
            &[("route", "unmatched"), ("class", "4xx")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "hikyaku_api_http_requests_total",
            &[("method", "other")]
        ),
        1.0,
        "an invented method is not a label"
    );
    assert!(
        !text.contains("4711") && !text.contains("987654") && !text.contains("BREW"),
        "nothing a client sent became a label"
    );
    assert_eq!(
        value(
            &text,
            "hikyaku_api_http_request_duration_seconds_count",
            &[("route", "/v1/lists/{id}")]
        ),
        3.0
    );
    assert!(value(&text, "hikyaku_api_db_pool_max_connections", &[]) >= 1.0);
    let used = value(
        &text,
        "hikyaku_api_db_pool_connections",
        &[("state", "used")],
    );
    let idle = value(
        &text,
        "hikyaku_api_db_pool_connections",
        &[("state", "idle")],
    );
    assert!(
        used + idle >= 1.0,
        "the pool holds connections: {used} + {idle}"
    );
}
