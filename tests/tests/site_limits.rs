//! Scenario 2: a site limited to 200 msg/s never exceeds it by more than 10% in any one-second
//! window at the sink, and a connection cap of 3 is never exceeded at the sink. A site's own
//! message size limit refuses larger messages without sending them.

use std::time::Duration;

use hikyaku_queue_schema::EventStatus;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_connection_caps_hold_at_the_sink() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let n = 1_600u64;
    let jobs = (0..n)
        .map(|i| {
            job(
                i,
                &format!(
                    "r{i}@{}",
                    if i % 2 == 0 {
                        "gmail.test"
                    } else {
                        "corp.test"
                    }
                ),
            )
        })
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let sites = r#"
[sites.google]
mx_suffixes = ["google.test"]
rate = "200/s"
max_connections = 3
max_messages_per_connection = 50
"#;
    let engine = world.engine(world.config("", sites));
    let stats = world.sink.stats();
    wait_for(Duration::from_secs(60), "all delivered", || {
        let s = stats.clone();
        async move { (s.distinct() >= n).then_some(()) }
    })
    .await;
    engine.stop().await.expect("clean stop");

    let google = stats.profile("google").expect("google profile stats");
    assert_eq!(google.accepted, n);
    assert!(
        google.max_in_any_second <= 220,
        "at most 200 msg/s + 10% in any 1 s window, saw {} (per second: {:?})",
        google.max_in_any_second,
        google.per_second
    );
    assert!(
        google.max_in_any_second >= 150,
        "the limiter lets the site run near its rate, saw {}",
        google.max_in_any_second
    );
    assert!(
        google.max_concurrent_conns <= 3,
        "connection cap 3, saw {}",
        google.max_concurrent_conns
    );
    assert!(
        google.connections_total > 3,
        "50 messages per connection forces reconnects, saw {} connections",
        google.connections_total
    );
    assert_eq!(google.throttled, 0);
}

/// A site's own message size limit (`max_message_bytes`, as au's 3 MB and SoftBank's 1 MB are
/// shipped): a larger message is refused by the engine without being sent, recorded once as a
/// `not-sent` bounce (552 5.3.4), and other sites' mail goes as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_size_limit_refuses_larger_messages_unsent() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let jobs = vec![
        job(0, "big0@gmail.test"),
        job(1, "big1@gmail.test"),
        job(2, "fine@other.test"),
    ];
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let sites = r#"
[sites.google]
mx_suffixes = ["google.test"]
max_message_bytes = 100
"#;
    let engine = world.engine(world.config("", sites));
    let events = queue::wait_events(&con, 3, Duration::from_secs(30)).await;
    // Long enough for a wrongly scheduled retry to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = queue::events(&mut con, SHARDS).await;
    engine.stop().await.expect("clean stop");

    assert_eq!(events.len(), later.len(), "one event per job: {later:?}");
    for rcpt in ["big0@gmail.test", "big1@gmail.test"] {
        let e = later
            .iter()
            .find(|e| e.rcpt == rcpt)
            .unwrap_or_else(|| panic!("event for {rcpt}"));
        assert_eq!(e.status, EventStatus::Bounced, "{e:?}");
        assert_eq!(e.reason, "not-sent", "{e:?}");
        assert_eq!((e.code, e.enhanced.as_str()), (552, "5.3.4"), "{e:?}");
        assert!(e.text.contains("site's size limit of 100"), "{e:?}");
        assert_eq!(world.sink.stats().attempts_of(rcpt), 0, "{rcpt} never sent");
    }
    let fine = later
        .iter()
        .find(|e| e.rcpt == "fine@other.test")
        .expect("event for fine@other.test");
    assert_eq!(fine.status, EventStatus::Delivered, "{fine:?}");
}
