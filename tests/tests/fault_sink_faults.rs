//! Fault scenario 4: the receiving servers misbehave. Both sinks cut 5% of their connections
//! without a reply in the middle of a message's content, and answer 1% of messages with a line
//! that is not SMTP; the Google one offers CHUNKING (whole messages pipelined), the other is
//! DATA-only (one round trip per message, the content riding with the next envelope). Over 100,000 recipients on two engine nodes (processes): everything is
//! delivered eventually, each job ends with exactly one end-state event, neither engine panics,
//! the engines' `/metrics` show the failures (deferred messages by reason), and the faults cost
//! at most two duplicates each on average: after a broken session a site keeps few messages
//! written and unanswered ([`hikyaku_engine::site::in_doubt`]), so few can be accepted and sent again.

use std::net::SocketAddr;
use std::time::Duration;

use hikyaku_loadtest::promtext;
use hikyaku_loadtest::sink::{Profile, ProviderKind};
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::redis::free_port;
use hikyaku_tests::scenario;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::World;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");
const SHARDS: u16 = 4;
const GOOGLE: u64 = 30_000;
const OTHER: u64 = 70_000;
const DOMAINS: u64 = 8;
const CUT_PER_MILLE: u32 = 50;
const GARBAGE_PER_MILLE: u32 = 10;

fn rcpt(i: u64) -> String {
    scenario::rcpt(i, GOOGLE, DOMAINS)
}

fn faulty(mut p: Profile) -> Profile {
    p.cut_per_mille = CUT_PER_MILLE;
    p.garbage_per_mille = GARBAGE_PER_MILLE;
    p
}

fn config(world: &World, node: &str, metrics: u16) -> String {
    format!(
        "metrics_listen = \"127.0.0.1:{metrics}\"\n{}",
        world.node_config_toml(
            node,
            SHARDS,
            "max_in_flight = 2000\nread_batch = 200",
            r#"
[sites.google]
mx_suffixes = ["google.test"]
rate = "unlimited"
max_connections = 6
max_messages_per_connection = 200
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.default]
rate = "unlimited"
max_connections = 8
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
"#,
        )
    )
}

/// Deferred attempts by reason class, summed over the engine's `/metrics`.
async fn deferred_by_reason(port: u16) -> Vec<(String, f64)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(resp) = hikyaku_loadtest::httpc::request(addr, "GET", "/metrics", None, None).await
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    let mut out: Vec<(String, f64)> = Vec::new();
    for s in text.lines().filter_map(promtext::parse_line) {
        if s.name != "hikyaku_messages_total" {
            continue;
        }
        let label = |k: &str| {
            s.labels
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if label("result") != "deferred" {
            continue;
        }
        let reason = label("reason");
        match out.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, v)) => *v += s.value,
            None => out.push((reason, s.value)),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_and_garbage_replies_lose_nothing() {
    let world = World::start(
        &scenario::zone(DOMAINS),
        scenario::sinks(
            faulty(Profile::provider(ProviderKind::Google)),
            faulty(Profile {
                chunking: false,
                ..Profile::plain("other")
            }),
        ),
    )
    .await;
    let total = GOOGLE + OTHER;
    {
        let mut con = world.redis.con().await;
        let jobs = (0..total).map(|i| job(i, &rcpt(i))).collect();
        queue::enqueue(&mut con, SHARDS, jobs).await;
    }
    let (ma, mb) = (free_port(), free_port());
    let mut a = world.engine_process(ENGINE, &config(&world, "node-a", ma));
    let mut b = world.engine_process(ENGINE, &config(&world, "node-b", mb));
    let stats = world.sink.stats();
    wait_for(
        Duration::from_secs(300),
        "every recipient delivered",
        || {
            let s = stats.clone();
            async move { (s.distinct() >= total).then_some(()) }
        },
    )
    .await;
    for i in (0..total).step_by(89).chain([0, GOOGLE - 1, total - 1]) {
        assert!(stats.count_of(&rcpt(i)) >= 1, "{} delivered", rcpt(i));
    }
    let mut con = world.redis.con().await;
    wait_for(Duration::from_secs(30), "queues empty", || {
        let mut con = con.clone();
        async move { (queue::depths(&mut con, SHARDS).await == (0, 0, 0)).then_some(()) }
    })
    .await;
    let events = queue::events(&mut con, SHARDS).await;
    assert_eq!(events.len() as u64, total, "one end-state event per job");

    let mut reasons = deferred_by_reason(ma).await;
    for (r, v) in deferred_by_reason(mb).await {
        match reasons.iter_mut().find(|(x, _)| *x == r) {
            Some((_, n)) => *n += v,
            None => reasons.push((r, v)),
        }
    }
    assert!(a.is_running() && b.is_running(), "no engine died");
    assert!(a.terminate().await.success(), "node-a stops cleanly");
    assert!(b.terminate().await.success(), "node-b stops cleanly");

    let google = stats.profile("google").expect("google stats");
    let other = stats.profile("other").expect("other stats");
    let faults = google.faults + other.faults;
    let duplicates = stats.duplicates();
    println!(
        "faults injected: google {} over {} connections, other {} over {} connections; \
         deferred by reason {reasons:?}; {duplicates} duplicates, {:.2} per fault",
        google.faults,
        google.connections_total,
        other.faults,
        other.connections_total,
        duplicates as f64 / faults.max(1) as f64
    );
    assert!(
        duplicates <= 2 * faults,
        "at most two duplicates per fault on average: {duplicates} for {faults} faults"
    );
    assert!(
        google.faults > 0 && other.faults > 0,
        "faults were injected"
    );
    let deferred: f64 = reasons.iter().map(|(_, v)| v).sum();
    assert!(
        deferred >= (google.faults + other.faults) as f64 / 2.0,
        "the engines' metrics show the failures: {reasons:?}"
    );
}
