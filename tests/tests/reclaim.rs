//! Reclaim takes entries only from nodes that are not live, however long their entries look
//! idle (a Redis outage makes every node's entries look idle), and a saturated in-flight
//! budget does not starve it.

use std::time::Duration;

use hikyaku_queue_schema::{scripts, Keys, ENGINE_GROUP};
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS};

/// Reads every ready entry of every shard as consumer `name` (they are pending for it).
async fn read_all_as(con: &mut hikyaku_queue_schema::Redis, name: &str) -> usize {
    let mut n = 0;
    for shard in 0..SHARDS {
        let created: ::redis::RedisResult<()> = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(Keys::ready(shard))
            .arg(ENGINE_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(con)
            .await;
        if let Err(e) = created {
            assert_eq!(e.code(), Some("BUSYGROUP"), "{e}");
        }
        let read: ::redis::streams::StreamReadReply = ::redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(ENGINE_GROUP)
            .arg(name)
            .arg("COUNT")
            .arg(10_000)
            .arg("STREAMS")
            .arg(Keys::ready(shard))
            .arg(">")
            .query_async(con)
            .await
            .expect("xreadgroup");
        n += read.keys.iter().map(|k| k.ids.len()).sum::<usize>();
    }
    n
}

/// A live node's entries idle past `claim_idle` (as after an outage) stay its own; once its
/// heartbeat lapses they are taken over and delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_nodes_idle_entries_are_not_taken() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let jobs: Vec<_> = (0..20)
        .map(|i| job(i, &format!("r{i}@other.test")))
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    // "ghost" is alive (its heartbeat runs ten minutes) but its entries go idle.
    scripts::heartbeat(&mut con, "ghost", 600_000)
        .await
        .expect("heartbeat");
    assert_eq!(read_all_as(&mut con, "ghost").await, 20);
    let mut config = world.config("", "");
    config.fleet.node_ttl = hikyaku_engine::units::Span(Duration::from_secs(2));
    let engine = world.engine(config);
    // claim_idle is 2 s: by now every entry of ghost has been idle for longer, many times.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stats = world.sink.stats();
    assert_eq!(stats.distinct(), 0, "nothing taken from a live node");
    assert_eq!(queue::depths(&mut con, SHARDS).await.1, 20, "still ghost's");

    // ghost leaves without finishing: its work is taken over.
    scripts::heartbeat(&mut con, "ghost", 0)
        .await
        .expect("leave");
    let events = queue::wait_events(&con, 20, Duration::from_secs(30)).await;
    engine.stop().await.expect("clean stop");
    assert_eq!(events.len(), 20);
    for i in 0..20 {
        assert_eq!(stats.count_of(&format!("r{i}@other.test")), 1, "r{i} once");
    }
}

/// With the in-flight budget full of a slow site's jobs and more waiting in the ready stream,
/// a dead node's entries are still reclaimed and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_is_not_starved_by_a_full_budget() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    // The dead node's ten jobs, read and never finished.
    let dead: Vec<_> = (0..10)
        .map(|i| job(i, &format!("lost{i}@other.test")))
        .collect();
    queue::enqueue(&mut con, SHARDS, dead).await;
    assert_eq!(read_all_as(&mut con, "dead-node").await, 10);
    // A slow site with a backlog far larger than the budget.
    let slow: Vec<_> = (0..400)
        .map(|i| job(100 + i, &format!("slow{i}@docomo.test")))
        .collect();
    queue::enqueue(&mut con, SHARDS, slow).await;
    let sites =
        "[sites.docomo]\nmx_suffixes = [\"docomo.test\"]\nrate = \"2/s\"\nmax_connections = 1\n";
    let mut config = world.config("max_in_flight = 20\nread_batch = 20", sites);
    config.fleet.node_ttl = hikyaku_engine::units::Span(Duration::from_secs(2));
    let engine = world.engine(config);
    let stats = world.sink.stats();
    wait_for(
        Duration::from_secs(25),
        "the dead node's jobs delivered",
        || {
            let s = stats.clone();
            async move {
                let n = (0..10)
                    .filter(|i| s.count_of(&format!("lost{i}@other.test")) > 0)
                    .count();
                (n == 10).then_some(())
            }
        },
    )
    .await;
    engine.stop().await.expect("clean stop");
    for i in 0..10 {
        assert_eq!(stats.count_of(&format!("lost{i}@other.test")), 1);
    }
}
