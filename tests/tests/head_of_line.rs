//! Scenario 5: a site throttled to 5 msg/s with a 5,000-message backlog does not slow a second
//! site's 5,000 messages; and the engine never holds more jobs than its in-flight budget.

use std::time::Duration;

use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS};

const SITES: &str = r#"
[sites.docomo]
mx_suffixes = ["docomo.test"]
rate = "5/s"
max_connections = 2
queue_capacity = 50
[sites.default]
max_connections = 4
"#;

async fn fast_site_time(world: &World, slow_backlog: u64, fast: u64, base_seq: u64) -> Duration {
    let stats = world.sink.stats();
    let before = stats.profile("other").map_or(0, |p| p.accepted);
    let start = hikyaku_engine::clock::now();
    let mut con = world.redis.con().await;
    let mut jobs = Vec::new();
    for i in 0..slow_backlog.max(fast) {
        if i < slow_backlog {
            jobs.push(job(
                base_seq + 2 * i,
                &format!("slow{}@docomo.test", base_seq + i),
            ));
        }
        if i < fast {
            jobs.push(job(
                base_seq + 2 * i + 1,
                &format!("fast{}@other.test", base_seq + i),
            ));
        }
    }
    queue::enqueue(&mut con, SHARDS, jobs).await;
    wait_for(Duration::from_secs(120), "fast site done", || {
        let s = stats.clone();
        async move { (s.profile("other").map_or(0, |p| p.accepted) >= before + fast).then_some(()) }
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_site_does_not_slow_another() {
    let world = World::standard().await;
    let budget = 400;
    let engine = world.engine(world.config(
        &format!("max_in_flight = {budget}\nread_batch = 100"),
        SITES,
    ));

    // Watch the pending-entry count (jobs held by the engine) the whole time.
    let mut con = world.redis.con().await;
    let watcher = tokio::spawn(async move {
        let mut max_pending = 0;
        for _ in 0..600 {
            let (_, pending, _) = queue::depths(&mut con, SHARDS).await;
            max_pending = max_pending.max(pending);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        max_pending
    });

    let alone = fast_site_time(&world, 0, 5_000, 0).await;
    let beside_slow = fast_site_time(&world, 5_000, 5_000, 1_000_000).await;
    println!("fast site alone: {alone:?}; beside a throttled backlog: {beside_slow:?}");
    let slow_done = world
        .sink
        .stats()
        .profile("docomo")
        .map_or(0, |p| p.accepted);
    let max_pending = watcher.await.expect("watcher");
    engine.stop().await.expect("clean stop");

    assert!(
        beside_slow <= alone * 2 + Duration::from_secs(2),
        "fast site alone took {alone:?}, beside a throttled backlog {beside_slow:?}"
    );
    assert!(
        slow_done < 200,
        "the throttled site kept to its rate ({slow_done} delivered)"
    );
    assert!(
        max_pending <= budget as u64,
        "in-flight budget {budget} held: at most {max_pending} pending entries"
    );
}
