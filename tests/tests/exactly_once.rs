//! Scenario 1: 10,000 messages over five domains on four sites are each received exactly once,
//! each job yields exactly one event, and the queues are empty at the end — with whole messages
//! pipelined over CHUNKING, and again with servers that offer only DATA.

use std::collections::HashSet;
use std::time::Duration;

use hikyaku_queue_schema::EventStatus;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{standard_sinks, World, SHARDS, STANDARD_SITES, STANDARD_ZONE};

const DOMAINS: [&str; 6] = [
    "gmail.test",
    "corp.test",
    "yahoo.test",
    "aol.test",
    "docomo.test",
    "implicit.test",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_arrive_exactly_once() {
    exactly_once(World::standard().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_arrive_exactly_once_over_data() {
    let sinks = standard_sinks()
        .into_iter()
        .map(|(ip, mut profile)| {
            profile.chunking = false;
            (ip, profile)
        })
        .collect();
    exactly_once(World::start(STANDARD_ZONE, sinks).await).await;
}

async fn exactly_once(world: World) {
    let mut con = world.redis.con().await;
    let n = 10_000u64;
    let jobs = (0..n)
        .map(|i| {
            job(
                i,
                &format!("user{i}@{}", DOMAINS[(i % DOMAINS.len() as u64) as usize]),
            )
        })
        .collect();
    assert_eq!(queue::enqueue(&mut con, SHARDS, jobs).await, n);

    let engine = world.engine(world.config("", STANDARD_SITES));
    let stats = world.sink.stats();
    wait_for(Duration::from_secs(120), "all messages at the sink", || {
        let s = stats.clone();
        async move { (s.distinct() >= n).then_some(()) }
    })
    .await;
    let events = queue::wait_events(&con, n as usize, Duration::from_secs(30)).await;
    engine.stop().await.expect("engine stops cleanly");

    for i in 0..n {
        let rcpt = format!("user{i}@{}", DOMAINS[(i % DOMAINS.len() as u64) as usize]);
        assert_eq!(stats.count_of(&rcpt), 1, "{rcpt} received exactly once");
    }
    assert_eq!(stats.duplicates(), 0);
    assert_eq!(events.len() as u64, n, "exactly one event per job");
    let ids: HashSet<u64> = events.iter().map(|e| e.id.seq).collect();
    assert_eq!(ids.len() as u64, n, "events are for distinct jobs");
    assert!(events
        .iter()
        .all(|e| e.status == EventStatus::Delivered && e.attempt == 1));
    let sites: HashSet<&str> = events.iter().map(|e| e.site.as_str()).collect();
    for site in ["google", "yahoo", "docomo", "default"] {
        assert!(sites.contains(site), "{site} used: {sites:?}");
    }
    assert_eq!(
        queue::depths(&mut con, SHARDS).await,
        (0, 0, 0),
        "ready streams, pending entries and retry sets are empty"
    );
}
