//! Held mail is visible: a paused site's jobs wait in the retry sets, where the shard gauges
//! show only a depth; the engine's `/metrics` show them per site — how many are held, how old
//! the oldest is, how many expire within the hour — and go back to zero once the site is
//! resumed and its mail delivered. Redis's own figures (`INFO`) are exported beside them.

use std::net::SocketAddr;
use std::time::Duration;

use hikyaku_engine::Listeners;
use hikyaku_loadtest::promtext;
use hikyaku_queue_schema::Keys;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS, STANDARD_SITES};

/// The engine's `/metrics` text.
async fn metrics(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let resp = hikyaku_loadtest::httpc::request(addr, "GET", "/metrics", None, None)
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&resp.body).into_owned())
}

/// The value of `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(promtext::parse_line)
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(n, x)| n == k && x == v))
        })
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sites_mail_shows_held_with_its_age_and_expiry_until_it_goes() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let port = hikyaku_tests::redis::free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("metrics port");
    let _: () = redis::cmd("HSET")
        .arg(Keys::site_ctl("yahoo"))
        .arg("paused")
        .arg("1")
        .query_async(&mut con)
        .await
        .expect("pause yahoo");
    let engine = world.engine_with(
        world.config("", STANDARD_SITES),
        Listeners {
            metrics: Some(listener),
        },
    );
    wait_for(Duration::from_secs(10), "yahoo seen paused", || async {
        let text = metrics(port).await?;
        (value(&text, "hikyaku_site_paused", &[("site", "yahoo")])? == 1.0).then_some(())
    })
    .await;

    // Five of yahoo's jobs ten minutes old and expiring in half an hour, three fresh ones
    // with the site's own expiry; two for gmail, which is not paused.
    let now = queue::now_ms();
    let mut jobs = Vec::new();
    for i in 0..8u64 {
        let mut j = job(i, &format!("held{i}@yahoo.test"));
        if i < 5 {
            j.queued_ms = now - 600_000;
            j.expires_ms = now + 1_800_000;
        }
        jobs.push(j);
    }
    jobs.push(job(8, "a@gmail.test"));
    jobs.push(job(9, "b@gmail.test"));
    queue::enqueue(&mut con, SHARDS, jobs).await;

    let text = wait_for(
        Duration::from_secs(30),
        "yahoo's held mail in the gauges",
        || async {
            let text = metrics(port).await?;
            (value(&text, "hikyaku_site_held_jobs", &[("site", "yahoo")])? == 8.0).then_some(text)
        },
    )
    .await;
    let yahoo = [("site", "yahoo")];
    assert_eq!(
        value(&text, "hikyaku_site_retry_jobs", &yahoo),
        Some(8.0),
        "every job in the retry sets is yahoo's"
    );
    assert_eq!(
        value(
            &text,
            "hikyaku_site_expiring_jobs",
            &[("site", "yahoo"), ("why", "held")]
        ),
        Some(5.0),
        "the five expiring within the hour, held by the pause"
    );
    assert_eq!(
        value(
            &text,
            "hikyaku_site_expiring_jobs",
            &[("site", "yahoo"), ("why", "deferred")]
        ),
        Some(0.0)
    );
    let age = value(
        &text,
        "hikyaku_site_oldest_age_seconds",
        &[("site", "yahoo"), ("queue", "retry")],
    )
    .expect("retry age");
    assert!((600.0..700.0).contains(&age), "oldest held job's age {age}");
    wait_for(
        Duration::from_secs(30),
        "gmail, not paused, delivered",
        || async {
            let s = world.sink.stats();
            (s.count_of("a@gmail.test") == 1 && s.count_of("b@gmail.test") == 1).then_some(())
        },
    )
    .await;
    // Redis's own figures, from INFO.
    assert!(value(&text, "hikyaku_redis_used_memory_bytes", &[]).is_some_and(|v| v > 0.0));
    assert!(value(&text, "hikyaku_redis_connected_clients", &[]).is_some_and(|v| v >= 1.0));
    assert!(value(&text, "hikyaku_redis_commands_total", &[]).is_some_and(|v| v > 0.0));
    assert!(
        value(
            &text,
            "hikyaku_redis_command_calls_total",
            &[("command", "xreadgroup")]
        )
        .is_some_and(|v| v > 0.0),
        "per-command calls from commandstats"
    );
    assert!(value(&text, "hikyaku_redis_ops_per_second", &[]).is_some());

    // Resumed: the mail goes, and the gauges say so.
    let _: () = redis::cmd("HDEL")
        .arg(Keys::site_ctl("yahoo"))
        .arg("paused")
        .query_async(&mut con)
        .await
        .expect("resume yahoo");
    wait_for(
        Duration::from_secs(60),
        "yahoo's mail delivered",
        || async {
            let s = world.sink.stats();
            (0..8)
                .all(|i| s.count_of(&format!("held{i}@yahoo.test")) == 1)
                .then_some(())
        },
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "held gauges back to zero",
        || async {
            let text = metrics(port).await?;
            let held = value(&text, "hikyaku_site_held_jobs", &yahoo)?;
            let expiring = value(
                &text,
                "hikyaku_site_expiring_jobs",
                &[("site", "yahoo"), ("why", "held")],
            )?;
            let age = value(
                &text,
                "hikyaku_site_oldest_age_seconds",
                &[("site", "yahoo"), ("queue", "retry")],
            )?;
            (held == 0.0 && expiring == 0.0 && age == 0.0).then_some(())
        },
    )
    .await;
    engine.stop().await.expect("clean stop");
}
