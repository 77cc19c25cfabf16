//! The API killed with SIGKILL in the middle of expanding a campaign, then restarted: every
//! recipient is enqueued exactly once.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::Method;
use hikyaku_queue_schema::Keys;
use hikyaku_tests::api::TestApi;
use hikyaku_tests::queue;
use hikyaku_tests::redis::{free_port, TestRedis};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::SHARDS;
use serde_json::json;

const API: &str = env!("CARGO_BIN_EXE_api-under-test");
const N: i64 = 150_000;

async fn queued(con: &mut hikyaku_queue_schema::Redis) -> u64 {
    let mut n = 0;
    for shard in 0..SHARDS {
        let len: u64 = redis::cmd("XLEN")
            .arg(Keys::ready(shard))
            .query_async(con)
            .await
            .expect("xlen");
        n += len;
    }
    n
}

fn start_api(api: &TestApi, redis: &TestRedis) -> std::process::Child {
    Command::new(API)
        .env("HIKYAKU_DATABASE_URL", &api.db.url)
        .env("HIKYAKU_REDIS_URL", &redis.url)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("HIKYAKU_TOKEN_SECRET", "test-secret-of-at-least-32-bytes!")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("api binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_expansion_then_restart_enqueues_each_recipient_once() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let (_, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "big"}))
        .await;
    let l = list["id"].as_i64().expect("list");
    sqlx::query(
        "INSERT INTO subscribers (list_id, tenant_id, email, email_lower) \
         SELECT $1, $2, 'u' || g || '@d' || (g % 13) || '.test', 'u' || g || '@d' || (g % 13) || '.test' \
         FROM generate_series(1, $3) AS g",
    )
    .bind(l)
    .bind(api.tenant)
    .bind(N)
    .execute(&api.state.db)
    .await
    .expect("subscribers");
    let cid = api.create_campaign(l, "hi {{email}}").await;
    api.send(cid).await;

    let mut con = redis.con().await;
    let mut child = start_api(&api, &redis);
    wait_for(Duration::from_secs(60), "expansion under way", || {
        let mut c = con.clone();
        async move { (queued(&mut c).await >= 20_000).then_some(()) }
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let at_kill = queued(&mut con).await;
    let (_, mid) = api.get(&format!("/v1/campaigns/{cid}")).await;
    assert!(
        (at_kill as i64) < N && mid["expansion_done"] == false,
        "killed mid-expansion ({at_kill} of {N} queued): {mid}"
    );

    let mut child = start_api(&api, &redis);
    let done = wait_for(
        Duration::from_secs(120),
        "expansion done after restart",
        || {
            let api = &api;
            async move {
                let (_, c) = api.get(&format!("/v1/campaigns/{cid}")).await;
                (c["expansion_done"] == true).then_some(c)
            }
        },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(
        done["expanded"].as_i64(),
        Some(N),
        "each counted once: {done}"
    );
    let jobs = queue::ready_jobs(&mut con).await;
    let total = jobs.len() as i64;
    let seqs: HashSet<u64> = jobs.iter().map(|j| j.id.seq).collect();
    assert_eq!(
        total, N,
        "no recipient enqueued twice (killed at {at_kill})"
    );
    assert_eq!(seqs.len() as i64, N, "and none missing");
}
