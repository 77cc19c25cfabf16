//! Pause and cancel reach the engine: a paused campaign's queued jobs are held back (nothing
//! delivered, nothing lost) until it resumes; a cancelled campaign's queued jobs end unsent,
//! each with a `cancelled` event.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::queue;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS, STANDARD_SITES};
use serde_json::json;

async fn queued_campaign(api: &TestApi, name: &str, n: usize) -> i64 {
    let (_, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": name}))
        .await;
    let l = list["id"].as_i64().expect("list");
    let mut csv = String::from("email\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{name}{i}@{}\n",
            if i % 2 == 0 {
                "gmail.test"
            } else {
                "other.test"
            }
        ));
    }
    let (s, _, _) = api
        .call(
            Method::POST,
            &format!("/v1/lists/{l}/subscribers/import"),
            Some(&api.key),
            Some(("text/csv", csv.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let cid = api.create_campaign(l, "hi").await;
    api.send(cid).await;
    hikyaku_api::expansion::expand(&api.state, cid)
        .await
        .expect("expand");
    cid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_jobs_wait_and_cancelled_jobs_end_unsent() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let paused = queued_campaign(&api, "p", 300).await;
    let cancelled = queued_campaign(&api, "c", 200).await;
    let post = |p: String| {
        let api = &api;
        async move { api.json(Method::POST, &p, json!({})).await.0 }
    };
    assert_eq!(
        post(format!("/v1/campaigns/{paused}/pause")).await,
        StatusCode::OK
    );
    assert_eq!(
        post(format!("/v1/campaigns/{cancelled}/cancel")).await,
        StatusCode::OK
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let recorders =
        hikyaku_api::recorder::spawn(api.state.clone(), api.redis_client.clone(), stop_rx);
    let engine = world.engine(world.config("", STANDARD_SITES));
    let mut con = world.redis.con().await;
    // The recorder takes events off the streams: watch the record instead.
    wait_for(
        Duration::from_secs(30),
        "200 cancelled events recorded",
        || {
            let api = &api;
            async move {
                let (_, st) = api.get(&format!("/v1/campaigns/{cancelled}/stats")).await;
                (st["by_status"]["cancelled"] == 200).then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sink = world.sink.stats();
    assert_eq!(
        sink.accepted(),
        0,
        "nothing of a paused or cancelled campaign was sent"
    );

    assert_eq!(
        post(format!("/v1/campaigns/{paused}/resume")).await,
        StatusCode::OK
    );
    let stats = wait_for(
        Duration::from_secs(60),
        "the resumed campaign completes",
        || {
            let api = &api;
            async move {
                let (_, st) = api.get(&format!("/v1/campaigns/{paused}/stats")).await;
                (st["status"] == "completed").then_some(st)
            }
        },
    )
    .await;
    engine.stop().await.expect("engine stops");
    let _ = stop_tx.send(true);
    for r in recorders {
        let _ = r.await;
    }
    assert_eq!(stats["by_status"]["delivered"], 300, "{stats}");
    assert_eq!(sink.distinct(), 300);
    assert_eq!(sink.duplicates(), 0);
    let (_, c) = api.get(&format!("/v1/campaigns/{cancelled}/stats")).await;
    assert_eq!(
        (c["status"].as_str(), c["by_status"]["cancelled"].as_i64()),
        (Some("cancelled"), Some(200)),
        "{c}"
    );
    assert_eq!(
        queue::depths(&mut con, SHARDS).await,
        (0, 0, 0),
        "nothing left in the queues"
    );
}

/// A cancel and a resume sent at the same moment, 200 times: whichever wins, the engines'
/// run state in Redis is the campaign's final status's — a cancelled campaign is never left
/// delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_resume_racing_leave_one_consistent_state() {
    use hikyaku_queue_schema::keys::STATE_FIELD;
    use hikyaku_queue_schema::Keys;
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let l = api.list_with_csv("email\na@other.test\n").await;
    let mut con = world.redis.con().await;
    let mut disagreements = Vec::new();
    for round in 0..200 {
        let cid = api.create_campaign(l, "hi").await;
        api.send(cid).await;
        let (s, _) = api
            .json(
                Method::POST,
                &format!("/v1/campaigns/{cid}/pause"),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        // Two requests on two tasks (two threads), as two clients would send them.
        let post = |action: &str| {
            let router = api.router.clone();
            let req = axum::http::Request::builder()
                .method(Method::POST)
                .uri(format!("/v1/campaigns/{cid}/{action}"))
                .header("authorization", format!("Bearer {}", api.key))
                .body(axum::body::Body::empty())
                .expect("request");
            tokio::spawn(async move {
                use tower::ServiceExt;
                router.oneshot(req).await.expect("infallible").status()
            })
        };
        let (cancel, resume) = (post("cancel"), post("resume"));
        let (cancel, resume) = (cancel.await.expect("cancel"), resume.await.expect("resume"));
        assert_eq!(cancel, StatusCode::OK, "cancel always succeeds");
        assert!([StatusCode::OK, StatusCode::CONFLICT].contains(&resume));
        let (_, c) = api.get(&format!("/v1/campaigns/{cid}")).await;
        let run: Option<String> = ::redis::cmd("HGET")
            .arg(Keys::campaign(cid as u64))
            .arg(STATE_FIELD)
            .query_async(&mut con)
            .await
            .expect("run state");
        if c["status"] != "cancelled" || run.as_deref() != Some("cancelled") {
            disagreements.push((round, c["status"].clone(), run));
        }
    }
    assert!(
        disagreements.is_empty(),
        "record and run state disagree: {disagreements:?}"
    );
}
