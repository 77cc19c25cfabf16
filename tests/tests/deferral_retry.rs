//! Scenario 3: a recipient answered `421` twice and then `250` is delivered on the third attempt,
//! with the attempts spaced by the retry schedule.

use std::time::Duration;

use hikyaku_queue_schema::EventStatus;
use hikyaku_tests::queue::{self, job, now_ms};
use hikyaku_tests::world::{World, SHARDS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_twice_then_delivered_on_schedule() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let rcpt = "defer2-hanako@other.test";
    let start = now_ms();
    queue::enqueue(
        &mut con,
        SHARDS,
        vec![job(0, rcpt), job(1, "plain@other.test")],
    )
    .await;
    let sites = r#"
[sites.default]
retry_initial = "1500ms"
retry_factor = 2.0
retry_jitter = 0.0
"#;
    let engine = world.engine(world.config("", sites));
    let events = queue::wait_events(&con, 2, Duration::from_secs(30)).await;
    engine.stop().await.expect("clean stop");

    let e = events
        .iter()
        .find(|e| e.rcpt == rcpt)
        .expect("event for the deferred recipient");
    assert_eq!(e.status, EventStatus::Delivered);
    assert_eq!(e.attempt, 3, "delivered on the third attempt");
    let stats = world.sink.stats();
    assert_eq!(stats.attempts_of(rcpt), 3, "the sink saw three attempts");
    assert_eq!(stats.count_of(rcpt), 1, "and accepted it once");
    // Schedule: 1.5 s after the first failure, 3 s after the second → at least 4.5 s in all.
    let took = e.at_ms - start;
    assert!(
        took >= 4_400,
        "retries are spaced by the schedule, took {took} ms"
    );
    assert!(took < 15_000, "and not much later, took {took} ms");
    let other = events
        .iter()
        .find(|e| e.rcpt == "plain@other.test")
        .expect("plain event");
    assert_eq!(other.attempt, 1, "the other recipient was not held up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_deferred_at_its_expiry_ends_expired() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    queue::enqueue(&mut con, SHARDS, vec![job(0, "tempfail-ken@other.test")]).await;
    let sites = r#"
[sites.default]
retry_initial = "500ms"
retry_factor = 1.0
retry_jitter = 0.0
expiry = "2s"
"#;
    let engine = world.engine(world.config("", sites));
    let events = queue::wait_events(&con, 1, Duration::from_secs(30)).await;
    engine.stop().await.expect("clean stop");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.status, e.reason.as_str()),
        (EventStatus::Expired, "expired")
    );
    assert!(
        e.attempt >= 3,
        "retried until expiry: {} attempts",
        e.attempt
    );
    assert_eq!(e.code, 451, "the last reply is kept: {e:?}");
    assert_eq!(queue::depths(&mut con, SHARDS).await, (0, 0, 0));
}
