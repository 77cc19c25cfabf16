//! Fault scenario 2: Redis restarted mid-campaign. Redis keeps an append-only file
//! (`appendonly yes`, `appendfsync everysec`, the setting the README requires); a campaign of
//! 100,000 recipients goes through the API (expander, recorder) to two engine nodes
//! (processes). When a third is delivered, Redis is shut down and started again two seconds
//! later. The engines and the API's expander and recorder reconnect by themselves with
//! backoff: every recipient is delivered, every job's end state is recorded once in
//! PostgreSQL, the queues end empty, and the duplicate count is reported.

use std::time::Duration;

use hikyaku_tests::api::TestApi;
use hikyaku_tests::queue;
use hikyaku_tests::redis::TestRedis;
use hikyaku_tests::scenario::{self, rcpt};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::World;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");
const SHARDS: u16 = 4;
const GOOGLE: u64 = 30_000;
const TOTAL: u64 = 100_000;
const DOMAINS: u64 = 8;
const IN_FLIGHT: u64 = 2_000;

fn config(world: &World, node: &str) -> String {
    world.node_config_toml(
        node,
        SHARDS,
        &format!("max_in_flight = {IN_FLIGHT}\nread_batch = 200"),
        r#"
[sites.google]
mx_suffixes = ["google.test"]
rate = "unlimited"
max_connections = 6
[sites.default]
rate = "unlimited"
max_connections = 8
"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_campaign_loses_nothing() {
    let redis = TestRedis::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let mut world = World::start_on(redis, &scenario::zone(DOMAINS), scenario::usual_sinks()).await;
    let api = TestApi::start_on(&world.redis.url, SHARDS).await;
    let background = api.background();
    let list_id = api
        .generated_list(&api.state.db, TOTAL, GOOGLE, DOMAINS)
        .await;
    let cid = api.send_campaign(list_id, "restart").await;

    let a = world.engine_process(ENGINE, &config(&world, "node-a"));
    let b = world.engine_process(ENGINE, &config(&world, "node-b"));
    let stats = world.sink.stats();
    wait_for(
        Duration::from_secs(120),
        "a third of the campaign delivered",
        || {
            let s = stats.clone();
            async move { (s.distinct() >= TOTAL / 3).then_some(()) }
        },
    )
    .await;
    world.redis.shut_down();
    let at_restart = stats.distinct();
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.redis.start_again();
    assert!(at_restart < TOTAL, "restarted mid-campaign");

    api.wait_completed(cid, 300).await;
    let st = api.campaign_stats(cid).await;
    assert_eq!(st["expanded"], TOTAL, "{st}");
    assert_eq!(st["by_status"]["delivered"], TOTAL, "{st}");
    assert_eq!(stats.distinct(), TOTAL);
    for i in (0..TOTAL).step_by(97).chain([0, GOOGLE - 1, TOTAL - 1]) {
        let r = rcpt(i, GOOGLE, DOMAINS);
        assert!(stats.count_of(&r) >= 1, "{r} delivered");
    }
    let rows = api.recorded_events(cid).await;
    assert_eq!(rows as u64, TOTAL, "one recorded event per job");
    let mut con = world.redis.con().await;
    assert_eq!(queue::depths(&mut con, SHARDS).await, (0, 0, 0));

    assert!(a.terminate().await.success(), "node-a stops cleanly");
    assert!(b.terminate().await.success(), "node-b stops cleanly");
    background.stop().await;
    println!(
        "redis restarted at {at_restart}/{TOTAL} delivered: {} duplicates",
        stats.duplicates()
    );
    assert!(
        stats.duplicates() <= 2 * IN_FLIGHT,
        "duplicates ({}) bounded by the nodes' in-flight windows",
        stats.duplicates()
    );
}
