//! The whole path on a Redis Cluster: a three-master cluster started on loopback ports, the API
//! and an engine given its `redis+cluster://` URL, a campaign imported, sent, expanded over eight
//! shards (whose keys the cluster spreads over its masters), delivered once per recipient and
//! recorded once; the admin queue statistics (a pipeline over every shard) read the cluster too.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_api::admin::Ctx;
use hikyaku_tests::api::TestApi;
use hikyaku_tests::cluster::TestCluster;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, STANDARD_SITES};
use serde_json::json;

const SHARDS: u16 = 8;
const DOMAINS: [&str; 7] = [
    "gmail.test",
    "corp.test",
    "yahoo.test",
    "aol.test",
    "docomo.test",
    "other.test",
    "implicit.test",
];
const PER_DOMAIN: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_runs_end_to_end_on_a_three_master_cluster() {
    let cluster = TestCluster::start();
    let mut world = World::standard().await;
    world.queue_url = cluster.url.clone();
    let api = TestApi::start_on(&cluster.url, SHARDS).await;
    assert!(api.redis_client.is_cluster());
    let background = api.background();

    let (s, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "news"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{list}");
    let list_id = list["id"].as_i64().expect("id");
    let mut csv = String::from("email\n");
    for i in 0..PER_DOMAIN {
        for d in DOMAINS {
            csv.push_str(&format!("reader{i}@{d}\n"));
        }
    }
    let (s, _, report) = api
        .call(
            Method::POST,
            &format!("/v1/lists/{list_id}/subscribers/import"),
            Some(&api.key),
            Some(("text/csv", csv.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let n = (PER_DOMAIN * DOMAINS.len()) as i64;
    assert_eq!(report["accepted"], n);

    let cid = api.send_campaign(list_id, "clustered").await;

    // Before any delivery: the statistics pipeline (split per shard by the connection layer)
    // answers each shard with its own depth, as single commands read it.
    wait_for(Duration::from_secs(60), "campaign expanded", || {
        let api = &api;
        async move { (api.campaign_stats(cid).await["expanded"] == n).then_some(()) }
    })
    .await;
    let ctx = Ctx::from_state(api.state.clone());
    let before = hikyaku_api::admin::queue::stats(&ctx, false)
        .await
        .expect("queue stats on a cluster");
    let mut con = api.state.redis.clone();
    let mut depths = Vec::new();
    for shard in 0..SHARDS {
        let len: u64 = redis::cmd("XLEN")
            .arg(hikyaku_queue_schema::Keys::ready(shard))
            .query_async(&mut con)
            .await
            .expect("xlen");
        depths.push(len);
    }
    let reported: Vec<u64> = before.shards.iter().map(|s| s.ready).collect();
    assert_eq!(reported, depths, "per-shard depths in shard order");
    assert_eq!(depths.iter().sum::<u64>() as i64, n);
    assert!(
        depths.iter().filter(|&&d| d > 0).count() >= 3,
        "jobs spread over shards: {depths:?}"
    );

    let engine = world.engine(
        hikyaku_engine::EngineConfig::from_toml(
            &world.node_config_toml("cluster-node", SHARDS, "", STANDARD_SITES),
            "test",
        )
        .expect("config"),
    );
    api.wait_completed(cid, 90).await;
    let stats = api.campaign_stats(cid).await;

    // The queues are spread over the masters, and the admin statistics read them all.
    let counts = cluster.key_counts();
    assert!(
        counts.iter().all(|&c| c > 0),
        "every master holds keys: {counts:?}"
    );
    let queues = hikyaku_api::admin::queue::stats(&ctx, true)
        .await
        .expect("queue stats on a cluster");
    assert_eq!(queues.shards.len(), SHARDS as usize);
    assert!(
        queues.shards.iter().all(|s| s.ready == 0 && s.retry == 0),
        "{queues:?}"
    );

    engine.stop().await.expect("engine stops");
    background.stop().await;
    assert_eq!(stats["expanded"], n, "{stats}");
    assert_eq!(stats["by_status"]["delivered"], n, "{stats}");
    let sink = world.sink.stats();
    assert_eq!(sink.distinct() as i64, n);
    assert_eq!(sink.duplicates(), 0);
    for d in DOMAINS {
        assert_eq!(sink.count_of(&format!("reader{}@{d}", PER_DOMAIN - 1)), 1);
    }
    let rows = api.recorded_events(cid).await;
    assert_eq!(rows, n, "one recorded event per delivered job");
}
