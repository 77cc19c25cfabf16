//! The engine's memory follows the work in hand, not everything it ever saw: campaigns (test
//! sends are campaigns of their own) are forgotten once no job of theirs is held, and a merge
//! that would make a huge message is refused before the message is built.

use std::time::Duration;

use hikyaku_engine::Listeners;
use hikyaku_queue_schema::{CampaignSnapshot, EventStatus, Job, JobId};
use hikyaku_tests::queue;
use hikyaku_tests::world::{World, SHARDS};
use hikyaku_tests::{http_get, wait_for};

/// The value of an unlabelled gauge in a Prometheus exposition.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Resident memory of this process (the engine runs in it), bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn snapshot(id: u64, text_body: String) -> CampaignSnapshot {
    CampaignSnapshot {
        id,
        tenant: "t".into(),
        from_addr: "news@sender.test".into(),
        subject: "Hello".into(),
        text_body,
        field_names: vec!["a".into()],
        return_path: "bounce@sender.test".into(),
        message_id_domain: "sender.test".into(),
        ..CampaignSnapshot::default()
    }
}

fn job(campaign: u64, seq: u64, a: String) -> Job {
    Job {
        id: JobId { campaign, seq },
        attempt: 0,
        queued_ms: queue::now_ms(),
        expires_ms: 0,
        priority: 0,
        rcpt: format!("c{campaign}-{seq}@other.test"),
        fields: vec![a],
        last: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_are_forgotten_and_huge_merges_never_built() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    let port = hikyaku_tests::redis::free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("metrics port");
    let config = world.config("campaign_idle = \"2s\"", "");
    let engine = world.engine_with(
        config,
        Listeners {
            metrics: Some(listener),
        },
    );
    // Forty campaigns of 256 KB each, two recipients apiece: like a stream of test sends.
    let body = format!("{{{{a}}}}\n{}\n", "lorem ipsum ".repeat(256 << 10 >> 4));
    for c in 100..140u64 {
        queue::enqueue_campaign(
            &mut con,
            SHARDS,
            &snapshot(c, body.clone()),
            vec![job(c, 1, "x".into()), job(c, 2, "y".into())],
        )
        .await;
    }
    queue::wait_events(&con, 80, Duration::from_secs(60)).await;
    let held = wait_for(
        Duration::from_secs(10),
        "campaigns tracked",
        || async move {
            let text = http_get(port, "/metrics").await?;
            let cached = gauge(&text, "hikyaku_engine_campaigns_cached")?;
            (cached > 0.0).then_some(cached)
        },
    )
    .await;
    assert!(held >= 40.0, "the forty campaigns were cached: {held}");
    let cached = wait_for(
        Duration::from_secs(20),
        "campaigns forgotten",
        || async move {
            let text = http_get(port, "/metrics").await?;
            let cached = gauge(&text, "hikyaku_engine_campaigns_cached")?;
            let tracked = gauge(&text, "hikyaku_engine_campaigns_tracked")?;
            let bytes = gauge(&text, "hikyaku_engine_campaign_cache_bytes")?;
            (cached == 0.0 && tracked == 0.0).then_some(bytes)
        },
    )
    .await;
    assert_eq!(cached, 0.0, "no rendered template kept");

    // A template of 200,000 placeholders and a 2,000-byte value: a 400 MB message, refused
    // (not sent) before it is built.
    let before = rss();
    queue::enqueue_campaign(
        &mut con,
        SHARDS,
        &snapshot(200, "{{a}}".repeat(200_000)),
        vec![job(200, 1, "z".repeat(2000))],
    )
    .await;
    let events = queue::wait_events(&con, 81, Duration::from_secs(30)).await;
    let grew = rss().saturating_sub(before);
    engine.stop().await.expect("clean stop");
    let huge = events
        .iter()
        .find(|e| e.id.campaign == 200)
        .expect("the huge message's event");
    assert_eq!(huge.status, EventStatus::Bounced, "{huge:?}");
    assert_eq!(huge.reason, "not-sent", "{huge:?}");
    assert!(huge.text.contains("refused by the sender"), "{huge:?}");
    assert!(
        grew < 150 << 20,
        "the message was never built: memory grew {} MB",
        grew >> 20
    );
    assert_eq!(world.sink.stats().count_of("c200-1@other.test"), 0);
}
