//! Campaign lifecycle and the recipient's side: one-click unsubscribe through the real endpoint
//! stops later sends; pause/resume/cancel/schedule follow the status rules; suppressions can be
//! managed; recorded events page with a cursor and filters, and a replayed event changes nothing.

use axum::http::{Method, StatusCode};
use hikyaku_queue_schema::{Event, EventStatus, Job, JobId};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::queue;
use hikyaku_tests::redis::TestRedis;
use serde_json::json;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_unsubscribe_stops_later_sends() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let (_, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "l"}))
        .await;
    let l = list["id"].as_i64().expect("list");
    for e in ["a@x.test", "b@x.test"] {
        let (s, _) = api
            .json(
                Method::POST,
                &format!("/v1/lists/{l}/subscribers"),
                json!({"email": e}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let c1 = api
        .create_campaign(l, "News.\nUnsubscribe: {{unsubscribe_url}}\n")
        .await;
    api.json(Method::POST, &format!("/v1/campaigns/{c1}/send"), json!({}))
        .await;
    hikyaku_api::expansion::expand(&api.state, c1)
        .await
        .expect("expand");
    let mut con = redis.con().await;
    let first = queue::ready_jobs(&mut con).await;
    assert_eq!(first.len(), 2);
    let url = &first
        .iter()
        .find(|j| j.rcpt == "a@x.test")
        .expect("a's job")
        .fields[0];
    let path = url
        .strip_prefix("http://127.0.0.1:8080")
        .unwrap_or_else(|| panic!("public URL: {url:?} {first:?}"));
    assert!(path.starts_with("/u/"), "{url}");

    let (s, ct, _) = api.call(Method::GET, path, None, None).await;
    assert_eq!(
        (s, ct.starts_with("text/html")),
        (StatusCode::OK, true),
        "a human page"
    );
    let tampered = format!("{}0", &path[..path.len() - 1]);
    let form = || {
        Some((
            "application/x-www-form-urlencoded",
            b"List-Unsubscribe=One-Click".to_vec(),
        ))
    };
    assert_eq!(
        api.call(Method::POST, &tampered, None, form()).await.0,
        StatusCode::NOT_FOUND
    );
    let wrong_body = Some(("application/x-www-form-urlencoded", b"x=y".to_vec()));
    assert_eq!(
        api.call(Method::POST, path, None, wrong_body).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (s, _, _) = api.call(Method::POST, path, None, form()).await;
    assert_eq!(s, StatusCode::OK, "one-click, no API key");

    let (_, subs) = api.get(&format!("/v1/lists/{l}/subscribers")).await;
    let a = subs
        .as_array()
        .expect("page")
        .iter()
        .find(|s| s["email"] == "a@x.test")
        .expect("a");
    assert_eq!(a["status"], "unsubscribed");
    let (_, sup) = api.get("/v1/suppressions").await;
    assert_eq!(sup[0]["email"], "a@x.test");
    assert_eq!(sup[0]["reason"], "unsubscribe");

    let c2 = api.create_campaign(l, "Second.\n").await;
    api.json(Method::POST, &format!("/v1/campaigns/{c2}/send"), json!({}))
        .await;
    hikyaku_api::expansion::expand(&api.state, c2)
        .await
        .expect("expand");
    let later: Vec<Job> = queue::ready_jobs(&mut con)
        .await
        .into_iter()
        .filter(|j| j.id.campaign == c2 as u64)
        .collect();
    assert_eq!(later.len(), 1);
    assert_eq!(
        later[0].rcpt, "b@x.test",
        "the unsubscribed address is not sent to again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rules_suppressions_and_event_pages() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let (_, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "l"}))
        .await;
    let l = list["id"].as_i64().expect("list");
    let c = api.create_campaign(l, "x {{email}}").await;
    let (s, edited) = api
        .json(
            Method::PATCH,
            &format!("/v1/campaigns/{c}"),
            json!({"subject": "Edited"}),
        )
        .await;
    assert_eq!(
        (s, edited["subject"].as_str()),
        (StatusCode::OK, Some("Edited")),
        "drafts can be edited"
    );
    let (s, sent) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c}/test"),
            json!({"recipients": ["t1@x.test", "t2@y.test"]}),
        )
        .await;
    assert_eq!(
        (s, sent["enqueued"].as_u64()),
        (StatusCode::ACCEPTED, Some(2)),
        "{sent}"
    );
    let mut con = redis.con().await;
    let test_jobs = queue::ready_jobs(&mut con).await;
    assert_eq!(test_jobs.len(), 2);
    assert!(test_jobs
        .iter()
        .all(|j| j.id.campaign >= 1 << 48 && j.fields[0] == j.rcpt));
    let (s, _) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c}/test"),
            json!({"recipients": ["bad\r\nBcc: x"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let post = |p: String| {
        let api = &api;
        async move { api.json(Method::POST, &p, json!({})).await.0 }
    };
    assert_eq!(
        post(format!("/v1/campaigns/{c}/pause")).await,
        StatusCode::CONFLICT,
        "a draft cannot pause"
    );
    let (s, _) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c}/schedule"),
            json!({"send_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "a past send_at");
    let (s, sched) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c}/schedule"),
            json!({"send_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (s, sched["status"].as_str()),
        (StatusCode::OK, Some("scheduled"))
    );
    assert_eq!(
        post(format!("/v1/campaigns/{c}/send")).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post(format!("/v1/campaigns/{c}/pause")).await,
        StatusCode::OK
    );
    assert_eq!(
        post(format!("/v1/campaigns/{c}/pause")).await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        post(format!("/v1/campaigns/{c}/resume")).await,
        StatusCode::OK
    );
    assert_eq!(
        post(format!("/v1/campaigns/{c}/cancel")).await,
        StatusCode::OK
    );
    assert_eq!(
        post(format!("/v1/campaigns/{c}/resume")).await,
        StatusCode::CONFLICT
    );
    let (s, _, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/campaigns/{c}"),
            Some(&api.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "only drafts are deleted");
    let (s, _) = api
        .json(
            Method::PATCH,
            &format!("/v1/campaigns/{c}"),
            json!({"subject": "late"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "only drafts are edited");

    let (s, _) = api
        .json(
            Method::POST,
            "/v1/suppressions",
            json!({"email": "Z@Y.test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = api
        .json(Method::POST, "/v1/suppressions", json!({"email": "bad"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, sup) = api.get("/v1/suppressions").await;
    assert_eq!(sup[0]["email"], "z@y.test");
    let (s, _, _) = api
        .call(
            Method::DELETE,
            "/v1/suppressions/z@y.test",
            Some(&api.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v1/suppressions").await.1, json!([]));

    // Events as the engine writes them, recorded twice: the second time changes nothing.
    let ev = |seq: u64, status: EventStatus| Event {
        id: JobId {
            campaign: c as u64,
            seq,
        },
        attempt: 1,
        status,
        reason: if status == EventStatus::Delivered {
            "accepted"
        } else {
            "bad-mailbox"
        }
        .into(),
        code: if status == EventStatus::Delivered {
            250
        } else {
            550
        },
        enhanced: String::new(),
        text: "t".into(),
        site: "google".into(),
        mx: "mx".into(),
        rcpt: format!("r{seq}@gmail.test"),
        queued_ms: 1_700_000_000_000,
        at_ms: 1_700_000_001_000,
    };
    let batch: Vec<Event> = (1..=5)
        .map(|i| {
            ev(
                i,
                if i == 3 {
                    EventStatus::Bounced
                } else {
                    EventStatus::Delivered
                },
            )
        })
        .collect();
    assert_eq!(
        hikyaku_api::recorder::record(&api.state, &batch)
            .await
            .expect("record"),
        5
    );
    assert_eq!(
        hikyaku_api::recorder::record(&api.state, &batch)
            .await
            .expect("replay"),
        0
    );
    let (_, st) = api.get(&format!("/v1/campaigns/{c}/stats")).await;
    assert_eq!(
        (
            st["by_status"]["delivered"].as_i64(),
            st["by_status"]["bounced"].as_i64()
        ),
        (Some(4), Some(1))
    );
    let (_, sup) = api.get("/v1/suppressions").await;
    assert_eq!(
        sup[0]["email"], "r3@gmail.test",
        "a hard bounce suppresses the address"
    );

    let (_, p1) = api.get(&format!("/v1/campaigns/{c}/events?limit=2")).await;
    assert_eq!(p1["events"].as_array().map(Vec::len), Some(2));
    let next = p1["next"].as_str().expect("a next cursor");
    let (_, p2) = api
        .get(&format!("/v1/campaigns/{c}/events?limit=2&cursor={next}"))
        .await;
    assert_eq!(p2["events"][0]["seq"], 3);
    let (_, bounced) = api
        .get(&format!("/v1/campaigns/{c}/events?status=bounced"))
        .await;
    assert_eq!(bounced["events"].as_array().map(Vec::len), Some(1));
    let (_, one) = api
        .get(&format!("/v1/campaigns/{c}/events?rcpt=R5@gmail.test"))
        .await;
    assert_eq!(one["events"][0]["seq"], 5);
    let (s, _) = api
        .get(&format!("/v1/campaigns/{c}/events?cursor=garbage"))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    let (s, _, _) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK, "PostgreSQL and Redis reachable");
    let (s, _, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1: {}",
        doc["openapi"]
    );
    let resp = api
        .router
        .clone()
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .expect("req"),
        )
        .await
        .expect("metrics");
    let text = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("hikyaku_api_events_recorded_total"), "{text}");
}
