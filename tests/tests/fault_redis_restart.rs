//! Fault scenario 2: Redis restarted mid-campaign. Redis keeps an append-only file
//! (`appendonly yes`, `appendfsync everysec`, the setting the README requires); a campaign of
//! 100,000 recipients goes through the API (expander, recorder) to two engine nodes
//! (processes). When a third is delivered, Redis is shut down and started again two seconds
//! later. The engines and the API's expander and recorder reconnect by themselves with
//! backoff: every recipient is delivered, every job's end state is recorded once in
//! PostgreSQL, the queues end empty, and the duplicate count is reported.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_loadtest::sink::{Profile, ProviderKind};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::queue;
use hikyaku_tests::redis::TestRedis;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::World;
use serde_json::json;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");
const SHARDS: u16 = 4;
const GOOGLE: i64 = 30_000;
const TOTAL: i64 = 100_000;
const DOMAINS: i64 = 8;
const IN_FLIGHT: u64 = 2_000;

fn zone() -> String {
    let mut z = String::from("mx1.google.test A 127.0.0.2\nmx.other.test A 127.0.0.5\n");
    for i in 0..DOMAINS {
        let _ = writeln!(z, "g{i}.test MX 10 mx1.google.test");
        let _ = writeln!(z, "o{i}.test MX 10 mx.other.test");
    }
    z
}

fn rcpt(i: i64) -> String {
    if i < GOOGLE {
        format!("r{i}@g{}.test", i % DOMAINS)
    } else {
        format!("r{i}@o{}.test", i % DOMAINS)
    }
}

fn config(world: &World, node: &str) -> String {
    world.node_config_toml(
        node,
        SHARDS,
        &format!("max_in_flight = {IN_FLIGHT}\nread_batch = 200"),
        r#"
[sites.google]
mx_suffixes = ["google.test"]
rate = "unlimited"
max_connections = 6
[sites.default]
rate = "unlimited"
max_connections = 8
"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_campaign_loses_nothing() {
    let redis = TestRedis::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let mut world = World::start_on(
        redis,
        &zone(),
        vec![
            (
                Ipv4Addr::new(127, 0, 0, 2),
                Profile::provider(ProviderKind::Google),
            ),
            (Ipv4Addr::new(127, 0, 0, 5), Profile::plain("other")),
        ],
    )
    .await;
    let api = TestApi::start_on(&world.redis.url, SHARDS).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let expander = tokio::spawn(hikyaku_api::expansion::run(
        api.state.clone(),
        stop_rx.clone(),
    ));
    let recorders =
        hikyaku_api::recorder::spawn(api.state.clone(), api.redis_client.clone(), stop_rx);

    let (s, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "big"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{list}");
    let list_id = list["id"].as_i64().expect("id");
    // 100,000 subscribers straight into the table: the import path has tests of its own.
    sqlx::query(
        "INSERT INTO subscribers (list_id, tenant_id, email, email_lower) \
         SELECT $1, $2, e, e FROM (SELECT CASE WHEN g < $3 THEN 'r' || g || '@g' || (g % $5) || '.test' \
         ELSE 'r' || g || '@o' || (g % $5) || '.test' END AS e FROM generate_series(0, $4 - 1) AS g) s",
    )
    .bind(list_id)
    .bind(api.tenant)
    .bind(GOOGLE)
    .bind(TOTAL)
    .bind(DOMAINS)
    .execute(&api.state.db)
    .await
    .expect("subscribers");
    let (s, campaign) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({
                "name": "restart", "list_id": list_id, "from_name": "Acme",
                "from_addr": "news@acme.test", "subject": "Hello", "text_body": "News for {{email}}.\n"
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{campaign}");
    let cid = campaign["id"].as_i64().expect("id");
    let (s, sent) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{cid}/send"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{sent}");

    let a = world.engine_process(ENGINE, &config(&world, "node-a"));
    let b = world.engine_process(ENGINE, &config(&world, "node-b"));
    let stats = world.sink.stats();
    wait_for(
        Duration::from_secs(120),
        "a third of the campaign delivered",
        || {
            let s = stats.clone();
            async move { (s.distinct() as i64 >= TOTAL / 3).then_some(()) }
        },
    )
    .await;
    world.redis.shut_down();
    let at_restart = stats.distinct();
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.redis.start_again();
    assert!((at_restart as i64) < TOTAL, "restarted mid-campaign");

    let st = wait_for(Duration::from_secs(300), "campaign completed", || {
        let api = &api;
        async move {
            let (_, st) = api.get(&format!("/v1/campaigns/{cid}/stats")).await;
            (st["status"] == "completed").then_some(st)
        }
    })
    .await;
    assert_eq!(st["expanded"], TOTAL, "{st}");
    assert_eq!(st["by_status"]["delivered"], TOTAL, "{st}");
    assert_eq!(stats.distinct() as i64, TOTAL);
    for i in (0..TOTAL).step_by(97).chain([0, GOOGLE - 1, TOTAL - 1]) {
        assert!(stats.count_of(&rcpt(i)) >= 1, "{} delivered", rcpt(i));
    }
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM delivery_events WHERE campaign_id = $1")
            .bind(cid)
            .fetch_one(&api.state.db)
            .await
            .expect("count");
    assert_eq!(rows, TOTAL, "one recorded event per job");
    let mut con = world.redis.con().await;
    assert_eq!(queue::depths(&mut con, SHARDS).await, (0, 0, 0));

    assert!(a.terminate().await.success(), "node-a stops cleanly");
    assert!(b.terminate().await.success(), "node-b stops cleanly");
    let _ = stop_tx.send(true);
    let _ = expander.await;
    for r in recorders {
        let _ = r.await;
    }
    println!(
        "redis restarted at {at_restart}/{TOTAL} delivered: {} duplicates",
        stats.duplicates()
    );
    assert!(
        stats.duplicates() <= 2 * IN_FLIGHT,
        "duplicates ({}) bounded by the nodes' in-flight windows",
        stats.duplicates()
    );
}
