//! Suppressed addresses are skipped again just before sending: an address suppressed (or
//! released) after its campaign was expanded — while its job waits in the queue — is not sent
//! to, whether the engine starts after the suppression or is running when it happens. The job
//! ends `cancelled` with reason `suppressed`; nothing else changes.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_queue_schema::EventStatus;
use hikyaku_tests::api::TestApi;
use hikyaku_tests::queue;
use hikyaku_tests::world::{World, STANDARD_SITES};
use serde_json::json;

async fn suppress(api: &TestApi, email: &str) {
    let (s, body) = api
        .json(Method::POST, "/v1/suppressions", json!({ "email": email }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_suppressed_after_expansion_are_not_sent_to() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let con = world.redis.con().await;
    let l = api
        .list_with_csv(
            "email\na@gmail.test\nb@gmail.test\nc@yahoo.test\nd@yahoo.test\ne@other.test\n",
        )
        .await;
    let first = api.create_campaign(l, "first").await;
    api.send(first).await;
    hikyaku_api::expansion::expand(&api.state, first)
        .await
        .expect("expand");

    // After expansion, before any engine runs: two suppressed, one suppressed and released.
    suppress(&api, "B@Gmail.test").await;
    suppress(&api, "c@yahoo.test").await;
    suppress(&api, "d@yahoo.test").await;
    let (s, _, body) = api
        .call(
            Method::DELETE,
            "/v1/suppressions/d@yahoo.test",
            Some(&api.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");

    let engine = world.engine(world.config("", STANDARD_SITES));
    let events = queue::wait_events(&con, 5, Duration::from_secs(30)).await;
    let stats = world.sink.stats();
    for (rcpt, sent) in [
        ("a@gmail.test", 1),
        ("b@gmail.test", 0),
        ("c@yahoo.test", 0),
        ("d@yahoo.test", 1),
        ("e@other.test", 1),
    ] {
        assert_eq!(stats.count_of(rcpt), sent, "{rcpt}");
        let e = events
            .iter()
            .find(|e| e.rcpt.eq_ignore_ascii_case(rcpt))
            .expect("an event per job");
        if sent == 1 {
            assert_eq!(e.status, EventStatus::Delivered, "{rcpt}: {e:?}");
        } else {
            assert_eq!(
                (e.status, e.reason.as_str()),
                (EventStatus::Cancelled, "suppressed"),
                "{rcpt}"
            );
            assert_eq!(e.attempt, 0, "no attempt was made");
        }
    }

    // The engine running: the site is paused, a second campaign expanded, then one more
    // address suppressed; when the site resumes, that job is not sent.
    world.set_site_paused("google", true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = api.create_campaign(l, "second").await;
    api.send(second).await;
    hikyaku_api::expansion::expand(&api.state, second)
        .await
        .expect("expand");
    suppress(&api, "a@gmail.test").await;
    // The engine reads the feed every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    world.set_site_paused("google", false).await;
    // Second campaign: a (now suppressed), d, e; b and c were skipped at expansion.
    let events = queue::wait_events(&con, 8, Duration::from_secs(60)).await;
    engine.stop().await.expect("clean stop");
    let second_events: Vec<_> = events
        .iter()
        .filter(|e| e.id.campaign == second as u64)
        .collect();
    assert_eq!(second_events.len(), 3, "{second_events:?}");
    let a = second_events
        .iter()
        .find(|e| e.rcpt == "a@gmail.test")
        .expect("a's event");
    assert_eq!(
        (a.status, a.reason.as_str()),
        (EventStatus::Cancelled, "suppressed")
    );
    assert_eq!(
        stats.count_of("a@gmail.test"),
        1,
        "only the first campaign's"
    );
    assert_eq!(stats.count_of("d@yahoo.test"), 2);
    assert_eq!(stats.count_of("e@other.test"), 2, "one per campaign");
}
