//! Operator control: a paused site receives nothing (its jobs wait, not lost) while other sites
//! flow; resumed, it delivers everything exactly once.

use std::time::Duration;

use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS, STANDARD_SITES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_site_waits_and_resumes_without_loss() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    world.set_site_paused("yahoo", true).await;
    let jobs = (0..600)
        .map(|i| {
            job(
                i,
                &format!(
                    "p{i}@{}",
                    if i % 2 == 0 {
                        "yahoo.test"
                    } else {
                        "gmail.test"
                    }
                ),
            )
        })
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let engine = world.engine(world.config("", STANDARD_SITES));
    let stats = world.sink.stats();
    wait_for(
        Duration::from_secs(30),
        "the unpaused site delivered",
        || {
            let s = stats.clone();
            async move { (s.profile("google").map_or(0, |p| p.accepted) >= 300).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stats.profile("yahoo").map_or(0, |p| p.accepted),
        0,
        "paused site got nothing"
    );

    world.set_site_paused("yahoo", false).await;
    let events = queue::wait_events(&con, 600, Duration::from_secs(60)).await;
    engine.stop().await.expect("clean stop");
    assert_eq!(events.len(), 600);
    assert!(
        events.iter().all(|e| e.attempt == 1),
        "waiting while paused costs no attempt"
    );
    assert_eq!(stats.profile("yahoo").map_or(0, |p| p.accepted), 300);
    assert_eq!(stats.duplicates(), 0);
    assert_eq!(queue::depths(&mut con, SHARDS).await, (0, 0, 0));
}
