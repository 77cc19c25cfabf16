//! Scenario 4: `550 5.1.1` bounces once and is never retried; null MX and NXDOMAIN bounce as
//! `bad-domain`; SERVFAIL defers.

use std::time::Duration;

use hikyaku_queue_schema::EventStatus;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::world::{World, SHARDS, STANDARD_SITES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_bounce_once_and_dns_failures_are_classified() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let jobs = vec![
        job(0, "550-nobody@gmail.test"),
        job(1, "someone@nullmx.test"),
        job(2, "someone@does-not-exist.test"),
        job(3, "someone@servfail.test"),
        job(4, "fine@gmail.test"),
        job(5, "x@gmail.test>\r\nRSET"),
    ];
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let engine = world.engine(world.config("", STANDARD_SITES));
    let events = queue::wait_events(&con, 5, Duration::from_secs(30)).await;
    // Long enough for a wrongly scheduled retry (1 s schedule) to have happened.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events_later = queue::events(&mut con, SHARDS).await;
    let retrying = queue::retry_jobs(&mut con, SHARDS).await;
    let in_flight_or_retrying = queue::depths(&mut con, SHARDS).await;
    engine.stop().await.expect("clean stop");

    let by = |rcpt: &str| {
        events_later
            .iter()
            .find(|e| e.rcpt == rcpt)
            .unwrap_or_else(|| panic!("event for {rcpt}"))
    };
    let unknown = by("550-nobody@gmail.test");
    assert_eq!(unknown.status, EventStatus::Bounced);
    assert_eq!(unknown.reason, "bad-mailbox");
    assert_eq!((unknown.code, unknown.enhanced.as_str()), (550, "5.1.1"));
    assert_eq!(
        world.sink.stats().attempts_of("550-nobody@gmail.test"),
        1,
        "never retried"
    );
    for rcpt in ["someone@nullmx.test", "someone@does-not-exist.test"] {
        let e = by(rcpt);
        assert_eq!(
            (e.status, e.reason.as_str()),
            (EventStatus::Bounced, "bad-domain"),
            "{rcpt}"
        );
    }
    assert_eq!(by("fine@gmail.test").status, EventStatus::Delivered);
    let injected = by("x@gmail.test>\r\nRSET");
    assert_eq!(
        (injected.status, injected.reason.as_str()),
        (EventStatus::Bounced, "bad-mailbox"),
        "an address that would break the envelope is refused, not sent"
    );
    assert_eq!(
        events.len(),
        events_later.len(),
        "no second event for any job"
    );
    assert!(
        events_later
            .iter()
            .all(|e| e.rcpt != "someone@servfail.test"),
        "SERVFAIL is not an end state"
    );
    let servfail_deferred = retrying
        .iter()
        .any(|j| j.rcpt == "someone@servfail.test" && j.attempt >= 1);
    assert!(
        servfail_deferred || in_flight_or_retrying.1 > 0 || in_flight_or_retrying.0 > 0,
        "SERVFAIL is deferred and retried: retry={retrying:?} depths={in_flight_or_retrying:?}"
    );
}
