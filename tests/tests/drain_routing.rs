//! Drained jobs are recorded where they were routed: a campaign drained by an operator ends
//! each job with the site and MX host its domain resolved to, not the default site with no MX.

use std::time::Duration;

use hikyaku_queue_schema::drain::{Rule, Scope};
use hikyaku_queue_schema::{EventStatus, Keys};
use hikyaku_tests::queue::{self, job, CAMPAIGN};
use hikyaku_tests::world::{World, SHARDS, STANDARD_SITES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_jobs_name_their_site_and_mx() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let jobs = vec![
        job(1, "a@gmail.test"),
        job(2, "b@yahoo.test"),
        job(3, "c@other.test"),
    ];
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let rule = Rule {
        status: EventStatus::Cancelled,
        before_ms: queue::now_ms() + 3_600_000,
        reason: "customer asked".into(),
    };
    let _: () = ::redis::cmd("HSET")
        .arg(Keys::drains())
        .arg(Scope::Campaign(CAMPAIGN).field())
        .arg(rule.encode())
        .query_async(&mut con)
        .await
        .expect("drain rule");
    let engine = world.engine(world.config("", STANDARD_SITES));
    let events = queue::wait_events(&con, 3, Duration::from_secs(30)).await;
    engine.stop().await.expect("clean stop");
    let mut got: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            assert_eq!(e.status, EventStatus::Cancelled);
            assert_eq!(e.reason, "drained");
            (e.rcpt.clone(), e.site.clone(), e.mx.clone())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "a@gmail.test".into(),
                "google".into(),
                "mx1.google.test".into()
            ),
            (
                "b@yahoo.test".into(),
                "yahoo".into(),
                "mta5.yahoo.test".into()
            ),
            (
                "c@other.test".into(),
                "default".into(),
                "mx.other.test".into()
            ),
        ]
    );
    assert_eq!(world.sink.stats().accepted(), 0, "nothing sent");
}
