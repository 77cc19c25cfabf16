//! A graceful stop (SIGTERM) writes nothing to a server after the job was handed back, and
//! writes every finished result before the engine returns.

use std::time::Duration;

use hikyaku_engine::units::Span;
use hikyaku_queue_schema::EventStatus;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS};

/// A connection waiting for a slow site's rate when the stop comes hands its job back: it is
/// never sent afterwards, and no entry is left pending for a reclaim to send again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_for_the_rate_is_handed_back_not_sent_later() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let jobs: Vec<_> = (0..5)
        .map(|i| job(i, &format!("r{i}@other.test")))
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    // One message every five seconds, a one-second grace.
    let sites = "[sites.default]\nrate = \"12/m\"\nmax_connections = 1\n";
    let mut config = world.config("", sites);
    config.queue.shutdown_grace = Span(Duration::from_secs(1));
    let engine = world.engine(config);
    let stats = world.sink.stats();
    wait_for(Duration::from_secs(10), "the first message", || {
        let s = stats.clone();
        async move { (s.distinct() >= 1).then_some(()) }
    })
    .await;
    // The connection now waits for its next token.
    tokio::time::sleep(Duration::from_millis(500)).await;
    engine.stop().await.expect("clean stop");
    let at_stop = stats.distinct();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stats.distinct(), at_stop, "nothing sent after the stop");
    let events = queue::events(&mut con, SHARDS).await;
    assert_eq!(events.len() as u64, at_stop, "one event per message sent");
    let (ready, pending, retry) = queue::depths(&mut con, SHARDS).await;
    assert_eq!(
        pending, 0,
        "every held job was handed back, none left pending"
    );
    assert_eq!(
        ready + retry + events.len() as u64,
        5,
        "nothing lost: {ready} ready, {retry} retrying, {} finished",
        events.len()
    );
}

/// Results waiting in a flusher when the grace ends are written, not dropped: the messages the
/// server accepted have their events, and none stays pending to be sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_results_are_written_before_the_engine_returns() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let jobs: Vec<_> = (0..5)
        .map(|i| job(i, &format!("r{i}@other.test")))
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    // Results wait up to a second before they are written; the grace is shorter.
    let mut config = world.config(
        "flush_interval = \"1s\"",
        "[sites.default]\nmax_connections = 1\n",
    );
    config.queue.shutdown_grace = Span(Duration::from_millis(200));
    let engine = world.engine(config);
    let stats = world.sink.stats();
    wait_for(Duration::from_secs(10), "all five accepted", || {
        let s = stats.clone();
        async move { (s.distinct() >= 5).then_some(()) }
    })
    .await;
    engine.stop().await.expect("clean stop");
    let events = queue::events(&mut con, SHARDS).await;
    assert_eq!(events.len(), 5, "every accepted message has its event");
    assert!(events.iter().all(|e| e.status == EventStatus::Delivered));
    let (ready, pending, retry) = queue::depths(&mut con, SHARDS).await;
    assert_eq!(
        (ready, pending, retry),
        (0, 0, 0),
        "none left to send again"
    );
}
