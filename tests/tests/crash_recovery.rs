//! Scenario 6: an engine killed with SIGKILL mid-run loses nothing once restarted, and its
//! duplicates are counted and bounded by the in-flight window; an engine stopped with SIGTERM
//! mid-run hands everything back: zero duplicates, zero loss.

use std::net::Ipv4Addr;
use std::time::Duration;

use hikyaku_loadtest::sink::Profile;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS, STANDARD_ZONE};

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");
const N: u64 = 12_000;
const IN_FLIGHT: u64 = 1_000;

async fn world() -> World {
    // A sink that takes 1 ms per message, so a run lasts long enough to interrupt.
    let mut slow = Profile::plain("other");
    slow.latency = Duration::from_millis(1);
    World::start(STANDARD_ZONE, vec![(Ipv4Addr::new(127, 0, 0, 5), slow)]).await
}

fn config(world: &World) -> String {
    world.config_toml(
        &format!("max_in_flight = {IN_FLIGHT}\nread_batch = 200"),
        "[sites.default]\nmax_connections = 8\n",
    )
}

async fn enqueue(world: &World) {
    let mut con = world.redis.con().await;
    let jobs = (0..N)
        .map(|i| job(i, &format!("c{i}@other.test")))
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
}

async fn wait_delivered(world: &World, at_least: u64, timeout: Duration) {
    let stats = world.sink.stats();
    wait_for(timeout, &format!("{at_least} delivered"), || {
        let s = stats.clone();
        async move { (s.distinct() >= at_least).then_some(()) }
    })
    .await;
}

async fn assert_all_finished(world: &World) {
    let mut con = world.redis.con().await;
    let events = queue::wait_events(&con, N as usize, Duration::from_secs(60)).await;
    assert_eq!(
        events.len() as u64,
        N,
        "exactly one event per job, even across a crash"
    );
    assert_eq!(
        queue::depths(&mut con, SHARDS).await,
        (0, 0, 0),
        "queues empty"
    );
    let stats = world.sink.stats();
    for i in 0..N {
        assert!(
            stats.count_of(&format!("c{i}@other.test")) >= 1,
            "c{i} delivered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_and_duplicates_stay_in_the_window() {
    let world = world().await;
    enqueue(&world).await;
    let engine = world.engine_process(ENGINE, &config(&world));
    wait_delivered(&world, N / 4, Duration::from_secs(60)).await;
    engine.kill();
    let at_kill = world.sink.stats().distinct();
    assert!(at_kill < N, "killed mid-run ({at_kill} of {N} delivered)");

    // Another node (a new name) takes the dead node's entries over once they are idle.
    let other = config(&world).replace("node_id = \"test-node\"", "node_id = \"test-node-2\"");
    let restarted = world.engine_process(ENGINE, &other);
    wait_delivered(&world, N, Duration::from_secs(120)).await;
    assert_all_finished(&world).await;
    let _ = restarted.terminate().await;

    let duplicates = world.sink.stats().duplicates();
    println!("SIGKILL at {at_kill}/{N} delivered: {duplicates} duplicates (in-flight window {IN_FLIGHT})");
    assert!(
        duplicates <= IN_FLIGHT,
        "duplicates ({duplicates}) are bounded by the in-flight window ({IN_FLIGHT})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_without_duplicates_or_loss() {
    let world = world().await;
    enqueue(&world).await;
    let engine = world.engine_process(ENGINE, &config(&world));
    wait_delivered(&world, N / 4, Duration::from_secs(60)).await;
    let status = engine.terminate().await;
    assert!(status.success(), "graceful exit: {status:?}");
    let at_stop = world.sink.stats().distinct();
    assert!(at_stop < N, "stopped mid-run ({at_stop} of {N})");
    {
        let mut con = world.redis.con().await;
        let (_, pending, _) = queue::depths(&mut con, SHARDS).await;
        assert_eq!(pending, 0, "nothing left pending after a graceful stop");
    }

    let restarted = world.engine_process(ENGINE, &config(&world));
    wait_delivered(&world, N, Duration::from_secs(120)).await;
    assert_all_finished(&world).await;
    let _ = restarted.terminate().await;
    assert_eq!(
        world.sink.stats().duplicates(),
        0,
        "zero duplicates after SIGTERM"
    );
}
