//! Fault scenario 3: PostgreSQL unreachable for 60 seconds mid-campaign. The API reaches its
//! database through a proxy that, for the outage, cuts every connection and refuses new ones
//! (the server itself keeps running: other tests share it). A campaign of 100,000 recipients
//! is expanded and being delivered by two engine nodes (processes) when the outage starts:
//! the engines, which never read PostgreSQL, deliver the rest meanwhile; the API answers writes
//! with 503 problem+json; the recorder keeps the events queued in Redis and, once the database
//! is back, records every one of them exactly once.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_loadtest::proxy::Proxy;
use hikyaku_tests::api::{admin_url, TestApi};
use hikyaku_tests::scenario;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::World;
use serde_json::json;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");
const SHARDS: u16 = 4;
const GOOGLE: u64 = 30_000;
const TOTAL: u64 = 100_000;
const DOMAINS: u64 = 8;
const OUTAGE: Duration = Duration::from_secs(60);

fn config(world: &World, node: &str) -> String {
    world.node_config_toml(
        node,
        SHARDS,
        "max_in_flight = 2000\nread_batch = 200",
        r#"
[sites.google]
mx_suffixes = ["google.test"]
rate = "2000/s"
max_connections = 6
[sites.default]
rate = "unlimited"
max_connections = 8
"#,
    )
}

/// `host:port` of a PostgreSQL URL.
fn host_port(url: &str) -> &str {
    let after = url.rsplit_once('@').map_or(url, |(_, r)| r);
    after.split_once('/').map_or(after, |(hp, _)| hp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_stops_nothing_and_loses_no_event() {
    let world = World::start(&scenario::zone(DOMAINS), scenario::usual_sinks()).await;
    let admin = admin_url();
    let pg = host_port(&admin).to_owned();
    let upstream: SocketAddr = tokio::net::lookup_host(pg.as_str())
        .await
        .expect("PostgreSQL address")
        .next()
        .expect("one address");
    let proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream,
        Duration::ZERO,
    )
    .await
    .expect("proxy");
    let through = proxy.local_addr().to_string();
    let api = TestApi::start_with_db(&world.redis.url, SHARDS, |url| {
        url.replacen(&pg, &through, 1)
    })
    .await;
    let direct = sqlx::PgPool::connect(&api.db.url)
        .await
        .expect("direct connection");
    let background = api.background();
    let list_id = api.generated_list(&direct, TOTAL, GOOGLE, DOMAINS).await;
    let cid = api.send_campaign(list_id, "outage").await;
    wait_for(Duration::from_secs(120), "campaign expanded", || {
        let api = &api;
        async move { (api.campaign_stats(cid).await["expanded"] == TOTAL).then_some(()) }
    })
    .await;

    let a = world.engine_process(ENGINE, &config(&world, "node-a"));
    let b = world.engine_process(ENGINE, &config(&world, "node-b"));
    let stats = world.sink.stats();
    wait_for(Duration::from_secs(60), "the first messages out", || {
        let s = stats.clone();
        async move { (s.distinct() >= 5_000).then_some(()) }
    })
    .await;

    // The outage.
    proxy.set_down(true);
    let down_at = hikyaku_engine::clock::now();
    let before = stats.distinct();
    let (s, ct, body) = api
        .call(
            Method::POST,
            "/v1/lists",
            Some(&api.key),
            Some(("application/json", br#"{"name":"during"}"#.to_vec())),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(body["status"], 503, "{body}");
    // At least the outage's length; longer only if a slow machine has not delivered yet.
    wait_for(
        OUTAGE * 3,
        "every recipient delivered while the database is away",
        || {
            let s = stats.clone();
            async move { (s.distinct() >= TOTAL).then_some(()) }
        },
    )
    .await;
    let (recorded_during,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM delivery_events WHERE campaign_id = $1")
            .bind(cid)
            .fetch_one(&direct)
            .await
            .expect("count");
    assert!(
        (recorded_during as u64) < TOTAL,
        "the recorder could not have recorded everything ({recorded_during})"
    );
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    proxy.set_down(false);

    api.wait_completed(cid, 120).await;
    let st = api.campaign_stats(cid).await;
    assert_eq!(st["by_status"]["delivered"], TOTAL, "{st}");
    let (rows, jobs): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT seq) FROM delivery_events WHERE campaign_id = $1",
    )
    .bind(cid)
    .fetch_one(&direct)
    .await
    .expect("count");
    assert_eq!(
        (rows as u64, jobs as u64),
        (TOTAL, TOTAL),
        "every event recorded once"
    );
    let (s, _) = api
        .json(Method::POST, "/v1/lists", json!({"name": "after"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "writes work again");

    assert!(a.terminate().await.success(), "node-a stops cleanly");
    assert!(b.terminate().await.success(), "node-b stops cleanly");
    background.stop().await;
    println!(
        "database away {OUTAGE:?}: {before} delivered before, {} after; {recorded_during} events \
         recorded before it came back; {} duplicates",
        stats.distinct(),
        stats.duplicates()
    );
}
