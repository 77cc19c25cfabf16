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

/// The four Japanese carrier sites with their shipped limits (10–20 msg/s, queue capacity
/// 5,000 each), backed up, hold at most half of the node's in-flight budget between them, and
/// a fast site beside them runs at full speed: a rate-limited site holds only what it can send
/// in a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sites_with_shipped_limits_hold_at_most_half_the_budget() {
    use hikyaku_queue_schema::node::SiteState;
    let zone = format!(
        "{}\nyjp.test MX 10 mx.yahoo.co.jp.test\nmx.yahoo.co.jp.test A 127.0.0.4\n\
         au.test MX 10 mx.au.com.test\nmx.au.com.test A 127.0.0.4\n\
         sb.test MX 10 mx.softbank.ne.jp.test\nmx.softbank.ne.jp.test A 127.0.0.4\n",
        hikyaku_tests::world::STANDARD_ZONE
    );
    let world = World::start(&zone, hikyaku_tests::world::standard_sinks()).await;
    // Only the MX suffixes change (the test zone's names); rates, connections and queue
    // capacities are the shipped ones.
    let sites = r#"
[sites.docomo]
mx_suffixes = ["docomo.test"]
[sites.yahoo-jp]
mx_suffixes = ["yahoo.co.jp.test"]
[sites.au]
mx_suffixes = ["au.com.test"]
[sites.softbank]
mx_suffixes = ["softbank.ne.jp.test"]
[sites.default]
max_connections = 4
"#;
    let budget = 4_000;
    let engine = world.engine(world.config(
        &format!("max_in_flight = {budget}\nread_batch = 500"),
        sites,
    ));
    let mut con = world.redis.con().await;
    let mut jobs = Vec::new();
    let mut seq = 0;
    for domain in ["docomo.test", "yjp.test", "au.test", "sb.test"] {
        for i in 0..2_000 {
            jobs.push(job(seq, &format!("slow{i}@{domain}")));
            seq += 1;
        }
    }
    queue::enqueue(&mut con, SHARDS, jobs).await;
    // Let the slow backlog take what it will of the budget, then the fast site's mail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fast = 5_000u64;
    let fast_jobs: Vec<_> = (0..fast)
        .map(|i| job(seq + i, &format!("fast{i}@other.test")))
        .collect();
    let start = hikyaku_engine::clock::now();
    queue::enqueue(&mut con, SHARDS, fast_jobs).await;

    let stats = world.sink.stats();
    let held_max = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    wait_for(
        Duration::from_secs(60),
        "the fast site's mail delivered",
        || {
            let s = stats.clone();
            let mut c = con.clone();
            let held_max = held_max.clone();
            async move {
                let states: std::collections::HashMap<String, Vec<u8>> = ::redis::cmd("HGETALL")
                    .arg(hikyaku_queue_schema::Keys::node_sites("test-node"))
                    .query_async(&mut c)
                    .await
                    .unwrap_or_default();
                let held: u64 = states
                    .iter()
                    .filter(|(site, _)| site.as_str() != "default")
                    .filter_map(|(_, b)| SiteState::decode(b).ok())
                    .map(|s| s.queued)
                    .sum();
                held_max.fetch_max(held, std::sync::atomic::Ordering::Relaxed);
                (s.profile("other").map_or(0, |p| p.accepted) >= fast).then_some(())
            }
        },
    )
    .await;
    let took = start.elapsed();
    let held_max = held_max.load(std::sync::atomic::Ordering::Relaxed);
    let (_, pending, _) = queue::depths(&mut con, SHARDS).await;
    engine.stop().await.expect("clean stop");
    println!("fast site: {fast} in {took:?}; slow sites held at most {held_max}; {pending} pending at the end");
    assert!(
        held_max <= budget / 2,
        "slow sites held {held_max} of a {budget} budget"
    );
    assert!(
        took < Duration::from_secs(20),
        "the fast site ran at full speed beside them: {took:?}"
    );
}
