//! The queue-schema Lua scripts on a real Redis: each transition is atomic and idempotent, so a
//! job is in exactly one place and yields at most one event.

use hikyaku_queue_schema::keys::JOB_FIELD;
use hikyaku_queue_schema::scripts::{self, Deferred, Finished};
use hikyaku_queue_schema::Redis;
use hikyaku_queue_schema::{Keys, ENGINE_GROUP};
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::redis::TestRedis;

async fn setup() -> (TestRedis, Redis, Vec<String>) {
    let r = TestRedis::start();
    let mut con = r.con().await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(Keys::ready(0))
        .arg(ENGINE_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await
        .expect("group");
    for i in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg(Keys::ready(0))
            .arg("*")
            .arg(JOB_FIELD)
            .arg(job(i, "a@b.test").encode())
            .query_async(&mut con)
            .await
            .expect("xadd");
    }
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(ENGINE_GROUP)
        .arg("me")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(Keys::ready(0))
        .arg(">")
        .query_async(&mut con)
        .await
        .expect("read");
    let ids = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    (r, con, ids)
}

#[tokio::test]
async fn finish_is_idempotent_and_removes_the_entry() {
    let (_r, mut con, ids) = setup().await;
    let batch = vec![Finished {
        entry: ids[0].clone(),
        event: b"e1".to_vec(),
    }];
    assert_eq!(
        scripts::finish(&mut con, 0, &batch).await.expect("finish"),
        1
    );
    assert_eq!(
        scripts::finish(&mut con, 0, &batch).await.expect("again"),
        0,
        "no second event"
    );
    let events: u64 = redis::cmd("XLEN")
        .arg(Keys::events(0))
        .query_async(&mut con)
        .await
        .expect("xlen");
    assert_eq!(events, 1);
    let (ready, pending, retry) = queue::depths(&mut con, 1).await;
    assert_eq!((ready, pending, retry), (2, 2, 0));
}

#[tokio::test]
async fn defer_then_move_due_puts_the_job_back_exactly_once() {
    let (_r, mut con, ids) = setup().await;
    let now = queue::now_ms();
    let mut j = job(1, "a@b.test");
    j.attempt = 1;
    j.last = Some(Box::new(hikyaku_queue_schema::LastTry::new(
        "other",
        "451 4.3.0 try later",
    )));
    let deferral = hikyaku_queue_schema::Event {
        id: j.id,
        attempt: 1,
        status: hikyaku_queue_schema::EventStatus::Deferred,
        reason: "temp-failure".into(),
        code: 451,
        enhanced: "4.3.0".into(),
        text: "451 4.3.0 try later".into(),
        site: "other".into(),
        mx: "mx.b.test".into(),
        rcpt: j.rcpt.clone(),
        queued_ms: j.queued_ms,
        at_ms: now,
    };
    let batch = vec![
        Deferred {
            entry: ids[1].clone(),
            due_ms: now - 10,
            job: j.encode(),
            event: Some(deferral.encode()),
        },
        Deferred {
            entry: ids[2].clone(),
            due_ms: now + 60_000,
            job: job(2, "a@b.test").encode(),
            event: None,
        },
    ];
    assert_eq!(scripts::defer(&mut con, 0, &batch).await.expect("defer"), 2);
    assert_eq!(
        scripts::defer(&mut con, 0, &batch).await.expect("again"),
        0,
        "not deferred twice"
    );
    assert_eq!(queue::depths(&mut con, 1).await, (1, 1, 2));
    assert_eq!(
        queue::deferrals(&mut con, 1).await,
        vec![deferral],
        "one deferral event, only for the attempt that had one, written once"
    );
    assert!(queue::events(&mut con, 1).await.is_empty(), "no end state");
    assert_eq!(
        scripts::move_due(&mut con, 0, now, 100)
            .await
            .expect("move"),
        1,
        "only the due one"
    );
    assert_eq!(
        scripts::move_due(&mut con, 0, now, 100)
            .await
            .expect("move again"),
        0
    );
    assert_eq!(queue::depths(&mut con, 1).await, (2, 1, 1));
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(Keys::ready(0))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("xrange");
    let moved: Vec<u8> = entries
        .ids
        .last()
        .expect("moved entry")
        .get(JOB_FIELD)
        .expect("field");
    assert_eq!(
        hikyaku_queue_schema::Job::decode(&moved).expect("decodes"),
        j
    );
}

#[test]
fn the_bench_campaign_renders() {
    let snap = hikyaku_loadtest::enqueue::bench_snapshot(1, 2048, false);
    let c = hikyaku_engine::message::Campaign::build(&snap, &Default::default())
        .expect("bench campaign builds");
    let domains = hikyaku_loadtest::enqueue::parse_domains("gmail.test").expect("domains");
    let job = hikyaku_loadtest::enqueue::bench_jobs(1, 1, &domains, 0, false)
        .next()
        .expect("a job");
    let mut out = Vec::new();
    c.render(
        &job,
        "Date: x\r\n",
        hikyaku_engine::message::Framing::Bdat,
        hikyaku_engine::message::jis::Charset::Utf8,
        &mut out,
    );
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.contains("Dear Reader0,") && text.contains("/u/100000000"),
        "{text}"
    );
    assert!(
        (1800..2600).contains(&text.len()),
        "about 2 KB: {}",
        text.len()
    );
}
