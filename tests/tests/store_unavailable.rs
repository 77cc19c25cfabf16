//! A job whose campaign cannot be read because Redis is unavailable for a moment (restarted,
//! still loading its data) is not at fault: it goes back uncharged and soon, not on the
//! deferral schedule (minutes, then hours) that a refusal by the provider gets.
//!
//! Two campaigns, one message each, one connection of one message at a time to a provider that
//! takes 1.5 s to answer a message: while the first message waits for its reply (its campaign
//! read), Redis is restarted and made to load its data slowly (`--key-load-delay` over a few
//! thousand keys: about five seconds of `LOADING` replies), so that the engine asks for the
//! second campaign while Redis is loading.

use std::time::Duration;

use hikyaku_loadtest::sink::{Profile, ProviderKind};
use hikyaku_queue_schema::EventStatus;
use hikyaku_tests::queue::{self, snapshot};
use hikyaku_tests::redis::TestRedis;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS, STANDARD_ZONE};

/// Keys that make the restarted server load for a while (1 ms each).
const FILLER: u64 = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_unreadable_while_redis_loads_costs_its_job_nothing() {
    let redis = TestRedis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut slow = Profile::provider(ProviderKind::Google);
    slow.latency = Duration::from_millis(1_500);
    let sinks = vec![(std::net::Ipv4Addr::new(127, 0, 0, 2), slow)];
    let mut world = World::start_on(redis, STANDARD_ZONE, sinks).await;
    let mut con = world.redis.con().await;

    // Filler in the append-only file's base (an RDB image, where the load delay applies).
    let mut fill = redis::pipe();
    for i in 0..FILLER {
        fill.cmd("SET").arg(format!("filler:{i}")).arg("x").ignore();
    }
    let _: () = fill.query_async(&mut con).await.expect("filler written");
    let _: String = redis::cmd("BGREWRITEAOF")
        .query_async(&mut con)
        .await
        .expect("rewrite started");
    wait_for(Duration::from_secs(30), "the AOF rewrite", || {
        let mut con = con.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query_async(&mut con)
                .await
                .ok()?;
            (info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0"))
                .then_some(())
        }
    })
    .await;

    let first = queue::job(1, "first@gmail.test");
    let mut second = queue::job(2, "second@gmail.test");
    second.id.campaign = 2;
    let mut other = snapshot();
    other.id = 2;
    queue::enqueue(&mut con, SHARDS, vec![first]).await;
    queue::enqueue_campaign(&mut con, SHARDS, &other, vec![second]).await;

    // A deferral would wait ten minutes: longer than this test.
    let config = world.config(
        "",
        r#"
[sites.google]
mx_suffixes = ["google.test"]
max_connections = 1
max_messages_per_connection = 1
retry_initial = "10m"
"#,
    );
    let engine = world.engine(config);
    let stats = world.sink.stats();
    wait_for(
        Duration::from_secs(30),
        "the first message on the wire",
        || {
            let s = stats.clone();
            async move { (s.attempts_of("first@gmail.test") >= 1).then_some(()) }
        },
    )
    .await;
    // The second message's turn comes when the first is answered: Redis is loading by then.
    world.redis.shut_down();
    world.redis.start_again_with(&[
        "--key-load-delay",
        "1000",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    // The scenario holds: the restarted server answers LOADING for now.
    let client = redis::Client::open(world.redis.url.as_str()).expect("url");
    let mut probe = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects while loading");
    let loading: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut probe).await;
    assert!(
        loading.as_ref().is_err_and(|e| e.code() == Some("LOADING")),
        "Redis is loading: {loading:?}"
    );

    wait_for(
        Duration::from_secs(30),
        "the second campaign's message delivered",
        || {
            let s = stats.clone();
            async move { (s.count_of("second@gmail.test") >= 1).then_some(()) }
        },
    )
    .await;
    assert_eq!(stats.count_of("first@gmail.test"), 1);
    assert_eq!(stats.count_of("second@gmail.test"), 1);

    let mut con = world.redis.con().await;
    let ended = queue::wait_events(&con, 2, Duration::from_secs(10)).await;
    let second_end = ended
        .iter()
        .find(|e| e.id.campaign == 2)
        .expect("the second job's end event");
    assert_eq!(second_end.status, EventStatus::Delivered, "{second_end:?}");
    assert_eq!(
        second_end.attempt, 1,
        "one delivery attempt charged, none for the unreadable campaign"
    );
    let deferrals = queue::deferrals(&mut con, SHARDS).await;
    assert!(
        deferrals.is_empty(),
        "no deferral for a job that never reached the provider: {deferrals:?}"
    );
    engine.stop().await.expect("engine stops");
}
