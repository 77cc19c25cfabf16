//! Test sends are bounded: refused for campaigns that will never send again, limited per
//! tenant and hour, and their snapshots leave Redis minutes after their last message instead of
//! staying for a week.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_queue_schema::Keys;
use hikyaku_tests::api::TestApi;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, STANDARD_SITES};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sends_are_limited_and_their_snapshots_go_after_their_last_message() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let l = api.list_with_csv("email\na@other.test\n").await;
    let c = api.create_campaign(l, "hello").await;
    let background = api.background();
    let engine = world.engine(world.config("", STANDARD_SITES));
    let test = |n: usize| {
        let recipients: Vec<String> = (0..n).map(|i| format!("t{i}@other.test")).collect();
        let api = &api;
        async move {
            api.json(
                Method::POST,
                &format!("/v1/campaigns/{c}/test"),
                json!({ "recipients": recipients }),
            )
            .await
        }
    };
    let (_, sent) = test(3).await;
    let test_id = sent["test_id"].as_u64().expect("a test id");
    let con = world.redis.con().await;
    // Delivered, counted down by the recorder: the snapshot lingers minutes, not a week.
    let ttl = wait_for(Duration::from_secs(30), "the snapshot set to go", || {
        let mut con = con.clone();
        async move {
            let left: Option<i64> = ::redis::cmd("HGET")
                .arg(Keys::campaign(test_id))
                .arg("left")
                .query_async(&mut con)
                .await
                .expect("left");
            let ttl: i64 = ::redis::cmd("TTL")
                .arg(Keys::campaign(test_id))
                .query_async(&mut con)
                .await
                .expect("ttl");
            (left == Some(0)).then_some(ttl)
        }
    })
    .await;
    assert!(
        (1..=600).contains(&ttl),
        "the snapshot goes within ten minutes: {ttl} s"
    );
    assert_eq!(world.sink.stats().count_of("t2@other.test"), 1);

    // 100 recipients an hour per tenant (the test API's setting): 3 + 9 × 10 + 7 fit, then
    // the next is refused with the time to wait.
    for _ in 0..9 {
        let (_, body) = test(10).await;
        assert!(body["test_id"].is_u64(), "{body}");
    }
    let (_, body) = test(7).await;
    assert!(body["test_id"].is_u64(), "{body}");
    let (status, problem) = test(1).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");

    // A cancelled campaign takes no test sends.
    let c2 = api.create_campaign(l, "other").await;
    let (s, _) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c2}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (status, problem) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c2}/test"),
            json!({"recipients": ["x@other.test"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["field"], "status", "{problem}");
    engine.stop().await.expect("engine stops");
    background.stop().await;
}
