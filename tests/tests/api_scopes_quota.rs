//! API key scopes and the per-tenant sending quota.
//!
//! Scopes: a key made with `read` only may GET and nothing else; one with `send` only may work
//! campaigns and nothing else; every route of the OpenAPI document is walked with both, and a
//! refused request (403 problem+json naming the scope) changes nothing.
//! Quota: `send` refuses a campaign that would pass the month's quota (nothing changes), test
//! sends count, and the expander is the wall: a quota lowered after `send` pauses the campaign
//! before anything is enqueued; raised again, `resume` finishes it and the use is counted once.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::{Cli, TestApi};
use hikyaku_tests::redis::TestRedis;
use hikyaku_tests::wait_for;
use serde_json::json;

const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");

/// Lists, subscribers, campaigns of the whole record.
async fn counts(api: &TestApi) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM lists), (SELECT count(*) FROM subscribers), \
         (SELECT count(*) FROM campaigns)",
    )
    .fetch_one(&api.state.db)
    .await
    .expect("counts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_does_only_what_its_scopes_allow_on_every_route() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let tenant = api.tenant.to_string();
    let reader = cli.json(&["apikey", "create", "--tenant", &tenant, "--scope", "read"]);
    assert_eq!(reader["scopes"], json!(["read"]));
    let reader = reader["api_key"].as_str().expect("key").to_owned();
    let sender = cli.json(&["apikey", "create", "--tenant", &tenant, "--scope", "send"]);
    let sender = sender["api_key"].as_str().expect("key").to_owned();
    let listed = cli.json(&["apikey", "list", "--tenant", &tenant]);
    let scopes: Vec<String> = listed
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["scopes"].to_string())
        .collect();
    assert_eq!(
        scopes,
        [r#"["read","send","admin"]"#, r#"["read"]"#, r#"["send"]"#],
        "{listed}"
    );
    let (code, _, err) = cli.run(&["apikey", "create", "--tenant", &tenant, "--scope", "root"]);
    assert_ne!(code, 0, "an unknown scope is refused");
    assert!(err.contains("root"), "{err}");

    let (_, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "news"}))
        .await;
    let l = list["id"].as_i64().expect("list");
    let (_, sub) = api
        .json(
            Method::POST,
            &format!("/v1/lists/{l}/subscribers"),
            json!({"email": "a@b.test"}),
        )
        .await;
    let s = sub["id"].as_i64().expect("subscriber");
    let c = api.create_campaign(l, "hello").await;
    let before = counts(&api).await;

    let doc = hikyaku_api::openapi::ApiDoc::openapi_json();
    let mut walked = 0;
    for (template, ops) in doc["paths"].as_object().expect("paths") {
        if !template.starts_with("/v1/") {
            continue;
        }
        let path = template
            .replace("{sid}", &s.to_string())
            .replace("{email}", "nobody@b.test")
            .replace(
                "{id}",
                &if template.starts_with("/v1/campaigns") {
                    c
                } else {
                    l
                }
                .to_string(),
            );
        for method in ops.as_object().expect("operations").keys() {
            let m: Method = method.to_uppercase().parse().expect("method");
            let is_read = m == Method::GET;
            let is_campaign = template.starts_with("/v1/campaigns");
            for (who, key, allowed) in [
                ("read", &reader, is_read),
                ("send", &sender, !is_read && is_campaign),
            ] {
                if allowed {
                    continue;
                }
                // Bodies do not matter: the scope is checked before the body is read.
                let (status, ct, problem) = api
                    .call(
                        m.clone(),
                        &path,
                        Some(key),
                        Some(("application/json", b"{}".to_vec())),
                    )
                    .await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{m} {path} with a {who}-only key: {problem}"
                );
                assert_eq!(ct, "application/problem+json");
                let needed = if is_read {
                    "read"
                } else if is_campaign {
                    "send"
                } else {
                    "admin"
                };
                assert!(
                    problem["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains(&format!("`{needed}`"))),
                    "{m} {path}: {problem}"
                );
                walked += 1;
            }
        }
    }
    assert!(walked >= 20, "walked {walked} refusals");
    assert_eq!(
        counts(&api).await,
        before,
        "no refused request changed anything"
    );

    // What each key may do, it does.
    let (status, _, lists) = api
        .call(Method::GET, "/v1/lists", Some(&reader), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lists.as_array().map(Vec::len), Some(1));
    let body = json!({"name": "c2", "list_id": l, "from_addr": "n@a.test", "subject": "s", "text_body": "b"});
    let (status, _, made) = api
        .call(
            Method::POST,
            "/v1/campaigns",
            Some(&sender),
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
}

/// This tenant's messages counted this month.
async fn used(cli: &Cli, tenant: &str) -> i64 {
    cli.json(&["tenant", "quota", tenant])["used"]
        .as_i64()
        .expect("used")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_quota_refuses_early_and_the_expander_holds_the_wall() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let tenant = api.tenant.to_string();
    let csv: String = std::iter::once("email".to_owned())
        .chain((0..8).map(|i| format!("r{i}@b.test")))
        .collect::<Vec<_>>()
        .join("\n");
    let l = api.list_with_csv(&csv).await;
    let c = api.create_campaign(l, "hello").await;
    let set = cli.json(&["tenant", "quota", &tenant, "--monthly", "5"]);
    assert_eq!(
        set,
        json!({"quota": 5, "used": 0, "max_list_size": 10_000_000})
    );

    // Eight recipients do not fit in five: refused, nothing changes.
    let (status, _, problem) = api
        .call(
            Method::POST,
            &format!("/v1/campaigns/{c}/send"),
            Some(&api.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/quota-exceeded")),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains("8")),
        "{problem}"
    );
    let (_, camp) = api.get(&format!("/v1/campaigns/{c}")).await;
    assert_eq!(camp["status"], "draft");
    let (status, _, problem) = api
        .call(
            Method::POST,
            &format!("/v1/campaigns/{c}/schedule"),
            Some(&api.key),
            Some((
                "application/json",
                br#"{"send_at":"2099-01-01T00:00:00Z"}"#.to_vec(),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "schedule too: {problem}");

    // Test sends count against it.
    let (status, body) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c}/test"),
            json!({"recipients": ["t1@b.test", "t2@b.test"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(used(&cli, &tenant).await, 2);
    let (status, _) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c}/test"),
            json!({"recipients": ["t1@b.test", "t2@b.test", "t3@b.test", "t4@b.test"]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "2 + 4 > 5");
    assert_eq!(
        used(&cli, &tenant).await,
        2,
        "a refused test send counts nothing"
    );

    // Room for the campaign at send time; the quota is lowered before the expander runs:
    // it pauses the campaign and enqueues nothing.
    cli.json(&["tenant", "quota", &tenant, "--monthly", "10"]);
    api.send(c).await;
    cli.json(&["tenant", "quota", &tenant, "--monthly", "6"]);
    let background = api.background();
    wait_for(
        Duration::from_secs(20),
        "campaign paused by the quota",
        || async {
            let (_, camp) = api.get(&format!("/v1/campaigns/{c}")).await;
            (camp["status"] == "paused").then_some(())
        },
    )
    .await;
    let (_, stats) = api.get(&format!("/v1/campaigns/{c}/stats")).await;
    assert_eq!(stats["expanded"], 0, "{stats}");
    assert_eq!(used(&cli, &tenant).await, 2);

    // Raised again, resume finishes it; the eight count once.
    cli.json(&["tenant", "quota", &tenant, "--unlimited"]);
    let (status, body) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c}/resume"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for(Duration::from_secs(20), "expansion done", || async {
        let (_, stats) = api.get(&format!("/v1/campaigns/{c}/stats")).await;
        (stats["expansion_done"] == true).then_some(stats)
    })
    .await;
    let (_, stats) = api.get(&format!("/v1/campaigns/{c}/stats")).await;
    assert_eq!(stats["expanded"], 8, "{stats}");
    assert_eq!(
        cli.json(&["tenant", "quota", &tenant]),
        json!({"quota": null, "used": 10, "max_list_size": 10_000_000})
    );
    background.stop().await;
}

/// Messages that never left — a campaign cancelled with its jobs still queued — give their
/// place in the quota back when their `cancelled` events are recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_unsent_messages_give_their_quota_back() {
    use hikyaku_tests::world::{World, STANDARD_SITES};
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let cli = Cli::new(CLI, &api, &world.redis);
    let tenant = api.tenant.to_string();
    let csv: String = std::iter::once("email".to_owned())
        .chain((0..20).map(|i| format!("r{i}@other.test")))
        .collect::<Vec<_>>()
        .join("\n");
    let l = api.list_with_csv(&csv).await;
    let c = api.create_campaign(l, "hello").await;
    cli.json(&["tenant", "quota", &tenant, "--monthly", "100"]);
    api.send(c).await;
    hikyaku_api::expansion::expand(&api.state, c)
        .await
        .expect("expand");
    assert_eq!(used(&cli, &tenant).await, 20, "counted when enqueued");
    let (status, body) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{c}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let background = api.background();
    let engine = world.engine(world.config("", STANDARD_SITES));
    wait_for(
        Duration::from_secs(30),
        "20 cancelled events recorded",
        || async {
            let (_, st) = api.get(&format!("/v1/campaigns/{c}/stats")).await;
            (st["by_status"]["cancelled"] == 20).then_some(())
        },
    )
    .await;
    engine.stop().await.expect("engine stops");
    background.stop().await;
    assert_eq!(world.sink.stats().accepted(), 0, "nothing sent");
    assert_eq!(used(&cli, &tenant).await, 0, "the quota has them back");
}
