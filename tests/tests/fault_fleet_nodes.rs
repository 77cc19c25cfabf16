//! Fault scenario 1: three engine nodes (processes) share six shards and a site limited to
//! 1,000 msg/s for the whole fleet. The sink sees at most 1,000 msg/s + 10% for that site in
//! every second, and never more connections than the fleet's cap; one node is killed with
//! SIGKILL mid-run, the others take its shards and reclaim its pending work, and every one of
//! the 100,000 recipients is delivered (duplicates counted, bounded by the dead node's
//! in-flight window). The dead node is forgotten once its work is reclaimed.

use std::time::Duration;

use hikyaku_queue_schema::Keys;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::scenario;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::World;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");
const SHARDS: u16 = 6;
const LIMITED: u64 = 30_000;
const OTHER: u64 = 70_000;
const DOMAINS: u64 = 12;
const IN_FLIGHT: u64 = 2_000;
const RATE: u64 = 1_000;

/// Twelve Google-hosted domains and twelve others, so jobs spread over every shard.
fn rcpt(i: u64) -> String {
    scenario::rcpt(i, LIMITED, DOMAINS)
}

fn config(world: &World, node: &str) -> String {
    world.node_config_toml(
        node,
        SHARDS,
        &format!("max_in_flight = {IN_FLIGHT}\nread_batch = 200\n\n[fleet]\nnode_ttl = \"2s\""),
        &format!(
            r#"
[sites.google]
mx_suffixes = ["google.test"]
rate = "{RATE}/s"
max_connections = 6
max_messages_per_connection = 500
[sites.default]
rate = "unlimited"
max_connections = 8
"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_hold_the_fleet_limit_and_a_killed_node_loses_nothing() {
    let world = World::start(&scenario::zone(DOMAINS), scenario::usual_sinks()).await;
    let total = LIMITED + OTHER;
    {
        let mut con = world.redis.con().await;
        let jobs = (0..total).map(|i| job(i, &rcpt(i))).collect();
        queue::enqueue(&mut con, SHARDS, jobs).await;
    }
    let a = world.engine_process(ENGINE, &config(&world, "node-a"));
    let b = world.engine_process(ENGINE, &config(&world, "node-b"));
    let c = world.engine_process(ENGINE, &config(&world, "node-c"));
    let stats = world.sink.stats();

    // All three joined and share the shards.
    let con = world.redis.con().await;
    wait_for(Duration::from_secs(20), "three live nodes", || {
        let mut con = con.clone();
        async move {
            let n: u64 = redis::cmd("ZCARD")
                .arg(Keys::nodes())
                .query_async(&mut con)
                .await
                .ok()?;
            (n == 3).then_some(())
        }
    })
    .await;

    wait_for(
        Duration::from_secs(60),
        "a third of the limited site sent",
        || {
            let s = stats.clone();
            async move {
                let g = s.profile("google")?;
                (g.accepted >= LIMITED / 3).then_some(())
            }
        },
    )
    .await;
    b.kill();
    let at_kill = stats.distinct();
    assert!(at_kill < total, "killed mid-run ({at_kill} of {total})");

    wait_for(
        Duration::from_secs(150),
        "every recipient delivered",
        || {
            let s = stats.clone();
            async move { (s.distinct() >= total).then_some(()) }
        },
    )
    .await;
    for i in (0..total).step_by(97).chain([0, LIMITED - 1, total - 1]) {
        assert!(stats.count_of(&rcpt(i)) >= 1, "{} delivered", rcpt(i));
    }

    // The dead node's entries were all reclaimed, so it is tidied out of the fleet.
    wait_for(Duration::from_secs(30), "the dead node forgotten", || {
        let mut con = con.clone();
        async move {
            let nodes: Vec<String> = redis::cmd("ZRANGE")
                .arg(Keys::nodes())
                .arg(0)
                .arg(-1)
                .query_async(&mut con)
                .await
                .ok()?;
            (nodes == ["node-a", "node-c"]).then_some(())
        }
    })
    .await;
    {
        let mut con = con.clone();
        let events = queue::events(&mut con, SHARDS).await;
        assert_eq!(events.len() as u64, total, "one end-state event per job");
        assert_eq!(queue::depths(&mut con, SHARDS).await, (0, 0, 0));
    }
    let _ = a.terminate().await;
    let _ = c.terminate().await;

    let google = stats.profile("google").expect("google stats");
    let busiest = google.per_second.iter().copied().max().unwrap_or(0);
    println!(
        "fleet of 3 at {RATE}/s: per second {:?}; busiest {busiest}, max in any sliding second {}, \
         connections at most {}; killed at {at_kill}/{total}: {} duplicates",
        google.per_second,
        google.max_in_any_second,
        google.max_concurrent_conns,
        stats.duplicates()
    );
    assert!(
        busiest <= RATE * 11 / 10,
        "at most {RATE} msg/s + 10% in every second for the fleet, saw {busiest}: {:?}",
        google.per_second
    );
    let mut sorted = google.per_second.clone();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    assert!(
        google
            .per_second
            .iter()
            .filter(|&&n| n >= RATE * 8 / 10)
            .count()
            >= 10,
        "the fleet runs near its rate (median second {median}): {:?}",
        google.per_second
    );
    assert!(
        google.max_concurrent_conns <= 6,
        "fleet connection cap 6, saw {}",
        google.max_concurrent_conns
    );
    assert!(
        stats.duplicates() <= IN_FLIGHT,
        "duplicates ({}) bounded by the dead node's in-flight window ({IN_FLIGHT})",
        stats.duplicates()
    );
}
