//! An event another API node read and never acknowledged (it stopped mid-batch, as in a
//! rolling upgrade) stays pending under the shared recorder consumer. A running recorder that
//! is past its start-up read of pending entries goes over them again when idle, so the event is
//! recorded without waiting for some recorder to restart.

use std::time::Duration;

use hikyaku_queue_schema::keys::{EVENT_FIELD, RECORDER_GROUP};
use hikyaku_queue_schema::{shard_for_domain, Event, EventStatus, Keys};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::queue;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_left_pending_by_a_stopped_node_is_recorded() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let background = api.background();
    let list = api.list_with_csv("email\nreader@gmail.test\n").await;
    let cid = api.create_campaign(list, "hello").await;
    api.send(cid).await;

    // No engine runs: the job waits in its ready stream.
    let mut con = world.redis.con().await;
    let job = wait_for(Duration::from_secs(30), "the job enqueued", || {
        let mut con = con.clone();
        async move { queue::ready_jobs(&mut con).await.into_iter().next() }
    })
    .await;
    // The recorder has long done its start-up read of pending entries by now.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Another node's recorder reads the event and stops before recording it. XADD and the
    // read go in one transaction, so the running recorder, blocked on new entries, never
    // receives it: the entry is pending, delivered once, under the shared consumer.
    let event = Event {
        id: job.id,
        attempt: 1,
        status: EventStatus::Delivered,
        reason: "ok".into(),
        code: 250,
        enhanced: "2.0.0".into(),
        text: "2.0.0 OK".into(),
        site: "google".into(),
        mx: "mx1.google.test".into(),
        rcpt: job.rcpt.clone(),
        queued_ms: job.queued_ms,
        at_ms: queue::now_ms(),
    };
    let key = Keys::events(shard_for_domain(job.domain(), SHARDS));
    let (_, read): (String, redis::Value) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg(EVENT_FIELD)
        .arg(event.encode())
        .cmd("XREADGROUP")
        .arg("GROUP")
        .arg(RECORDER_GROUP)
        .arg("recorder")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("the stopped node's read");
    assert!(!matches!(read, redis::Value::Nil), "the entry was read");
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&key)
        .arg(RECORDER_GROUP)
        .query_async(&mut con)
        .await
        .expect("xpending");
    assert_eq!(pending.0, 1, "one entry pending, unacknowledged");

    api.wait_completed(cid, 30).await;
    let rows = api.recorded_events(cid).await;
    assert_eq!(rows, 1, "the pending event recorded once");
    wait_for(Duration::from_secs(10), "the entry acknowledged", || {
        let mut con = con.clone();
        let key = key.clone();
        async move {
            let (n, ..): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
                .arg(&key)
                .arg(RECORDER_GROUP)
                .query_async(&mut con)
                .await
                .ok()?;
            (n == 0).then_some(())
        }
    })
    .await;
    background.stop().await;
}
