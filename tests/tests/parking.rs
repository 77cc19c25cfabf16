//! A paused campaign's jobs are parked in Redis — out of the ready streams and retry sets, so
//! no reader or mover keeps cycling them — until the campaign is resumed (they are delivered),
//! cancelled (they end `cancelled`) or drained by an operator (they end as the order says).
//! Nothing is lost on the way.

use std::time::Duration;

use hikyaku_queue_schema::keys::STATE_FIELD;
use hikyaku_queue_schema::{EventStatus, Job, JobId, Keys};
use hikyaku_tests::queue;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS};

async fn set_state(con: &mut hikyaku_queue_schema::Redis, campaign: u64, state: Option<&str>) {
    let cmd = match state {
        Some(s) => {
            let mut c = ::redis::cmd("HSET");
            c.arg(Keys::campaign(campaign)).arg(STATE_FIELD).arg(s);
            c
        }
        None => {
            let mut c = ::redis::cmd("HDEL");
            c.arg(Keys::campaign(campaign)).arg(STATE_FIELD);
            c
        }
    };
    let _: () = cmd.query_async(con).await.expect("state written");
}

fn jobs(campaign: u64, n: u64) -> Vec<Job> {
    (0..n)
        .map(|i| Job {
            id: JobId { campaign, seq: i },
            ..queue::job(i, &format!("c{campaign}-{i}@other.test"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_jobs_rest_parked_until_resume_or_cancel() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let (resumed, cancelled, drained) = (2u64, 3u64, 4u64);
    for c in [resumed, cancelled, drained] {
        set_state(&mut con, c, Some("paused")).await;
        let snapshot = hikyaku_queue_schema::CampaignSnapshot {
            id: c,
            ..queue::snapshot()
        };
        let n = if c == drained { 100 } else { 500 };
        queue::enqueue_campaign(&mut con, SHARDS, &snapshot, jobs(c, n)).await;
    }
    let engine = world.engine(world.config("", ""));
    wait_for(Duration::from_secs(30), "every job parked", || {
        let mut c = con.clone();
        async move { (queue::parked(&mut c, SHARDS).await == 1100).then_some(()) }
    })
    .await;
    // Parked jobs stay put: nothing in the ready streams, the retry sets or the engine, and
    // nothing sent, however long the pause.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(queue::depths(&mut con, SHARDS).await, (0, 0, 0));
    assert_eq!(queue::parked(&mut con, SHARDS).await, 1100);
    assert_eq!(
        world.sink.stats().distinct(),
        0,
        "nothing sent while paused"
    );

    set_state(&mut con, resumed, None).await;
    set_state(&mut con, cancelled, Some("cancelled")).await;
    // An operator drains the third while it is paused.
    let rule = hikyaku_queue_schema::drain::Rule {
        status: EventStatus::Bounced,
        before_ms: queue::now_ms() + 3_600_000,
        reason: "list withdrawn".into(),
    };
    let _: () = ::redis::cmd("HSET")
        .arg(Keys::drains())
        .arg(hikyaku_queue_schema::drain::Scope::Campaign(drained).field())
        .arg(rule.encode())
        .query_async(&mut con)
        .await
        .expect("drain rule");
    let events = queue::wait_events(&con, 1100, Duration::from_secs(60)).await;
    engine.stop().await.expect("clean stop");
    let count = |c: u64, status: EventStatus| {
        events
            .iter()
            .filter(|e| e.id.campaign == c && e.status == status)
            .count()
    };
    assert_eq!(count(resumed, EventStatus::Delivered), 500);
    assert_eq!(count(cancelled, EventStatus::Cancelled), 500);
    assert_eq!(count(drained, EventStatus::Bounced), 100);
    assert!(events
        .iter()
        .filter(|e| e.id.campaign == drained)
        .all(|e| e.reason == "drained"));
    assert_eq!(events.len(), 1100, "one end state each");
    assert_eq!(queue::parked(&mut con, SHARDS).await, 0);
    assert_eq!(
        queue::depths(&mut con, SHARDS).await,
        (0, 0, 0),
        "nothing left"
    );
    assert_eq!(world.sink.stats().distinct(), 500);
}

/// Entries ever added to the shards' ready streams.
async fn entries_added(con: &mut hikyaku_queue_schema::Redis) -> u64 {
    let mut added = 0;
    for shard in 0..SHARDS {
        let info: std::collections::HashMap<String, ::redis::Value> = ::redis::cmd("XINFO")
            .arg("STREAM")
            .arg(Keys::ready(shard))
            .query_async(con)
            .await
            .unwrap_or_default();
        if let Some(v) = info.get("entries-added") {
            added += ::redis::from_redis_value::<u64>(v.clone()).expect("a count");
        }
    }
    added
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_drain_order_does_not_cover_rest_parked() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let campaign = 6u64;
    set_state(&mut con, campaign, Some("paused")).await;
    // An order that drains the jobs queued before it, none of these.
    let rule = hikyaku_queue_schema::drain::Rule {
        status: EventStatus::Bounced,
        before_ms: queue::now_ms() - 60_000,
        reason: "earlier jobs withdrawn".into(),
    };
    let _: () = ::redis::cmd("HSET")
        .arg(Keys::drains())
        .arg(hikyaku_queue_schema::drain::Scope::Campaign(campaign).field())
        .arg(rule.encode())
        .query_async(&mut con)
        .await
        .expect("drain rule");
    let snapshot = hikyaku_queue_schema::CampaignSnapshot {
        id: campaign,
        ..queue::snapshot()
    };
    queue::enqueue_campaign(&mut con, SHARDS, &snapshot, jobs(campaign, 200)).await;
    let engine = world.engine(world.config("", ""));
    wait_for(Duration::from_secs(30), "every job parked", || {
        let mut c = con.clone();
        async move { (queue::parked(&mut c, SHARDS).await == 200).then_some(()) }
    })
    .await;
    // The order is met once (its jobs, none here, leave); the rest then stay put instead of
    // going round the ready streams every second while the pause lasts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    wait_for(Duration::from_secs(30), "parked again", || {
        let mut c = con.clone();
        async move { (queue::parked(&mut c, SHARDS).await == 200).then_some(()) }
    })
    .await;
    let before = entries_added(&mut con).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        entries_added(&mut con).await,
        before,
        "parked jobs left alone"
    );
    assert_eq!(queue::parked(&mut con, SHARDS).await, 200);
    assert_eq!(
        world.sink.stats().distinct(),
        0,
        "nothing sent while paused"
    );
    // Resumed, they go out: the order never covered them.
    set_state(&mut con, campaign, None).await;
    let events = queue::wait_events(&con, 200, Duration::from_secs(60)).await;
    engine.stop().await.expect("clean stop");
    assert!(events.iter().all(|e| e.status == EventStatus::Delivered));
    assert_eq!(events.len(), 200);
    assert_eq!(queue::parked(&mut con, SHARDS).await, 0);
}
