//! Tenant walls in the admin CLI: every command that takes a tenant acts on that tenant only.
//! Two tenants with a campaign, a key and a suppression each; `campaign list --tenant`,
//! `apikey list --tenant`, `suppressions export --tenant` show only the named tenant's rows;
//! `suppressions import --tenant`, `tenant quota` and `apikey create --tenant` change only it; an
//! unknown tenant is an error (exit 3) that changes nothing.

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::{Cli, TestApi};
use hikyaku_tests::redis::TestRedis;
use serde_json::json;

const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_command_that_takes_a_tenant_stays_within_it() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let a = api.tenant;
    let b_key = api.other_tenant_key().await;
    let (b,): (i64,) = sqlx::query_as("SELECT max(id) FROM tenants")
        .fetch_one(&api.state.db)
        .await
        .expect("tenant b");
    assert_ne!(a, b);
    // Each tenant: a list, a campaign, a suppression.
    for (key, who) in [(api.key.clone(), "a"), (b_key.clone(), "b")] {
        let call = |m: Method, path: &str, body: serde_json::Value| {
            let key = key.clone();
            let path = path.to_owned();
            let api = &api;
            async move {
                api.call(
                    m,
                    &path,
                    Some(&key),
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await
            }
        };
        let (s, _, list) = call(Method::POST, "/v1/lists", json!({"name": who})).await;
        assert_eq!(s, StatusCode::CREATED, "{list}");
        let (s, _, camp) = call(
            Method::POST,
            "/v1/campaigns",
            json!({"name": format!("camp-{who}"), "list_id": list["id"], "from_addr": "n@a.test", "subject": "s", "text_body": "b"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{camp}");
        let (s, _, sup) = call(
            Method::POST,
            "/v1/suppressions",
            json!({"email": format!("{who}@suppressed.test")}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{sup}");
    }
    let (a, b) = (a.to_string(), b.to_string());

    let camps = cli.json(&["campaign", "list", "--tenant", &a]);
    let names: Vec<&str> = camps
        .as_array()
        .expect("campaigns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["camp-a"], "{camps}");

    let keys = cli.json(&["apikey", "list", "--tenant", &b]);
    let keys = keys.as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert!(keys
        .iter()
        .all(|k| k["tenant_id"].as_i64().map(|t| t.to_string()) == Some(b.clone())));

    let (code, csv, err) = cli.run(&["suppressions", "export", "--tenant", &a]);
    assert_eq!(code, 0, "{err}");
    assert!(csv.contains("a@suppressed.test"), "{csv}");
    assert!(!csv.contains("b@suppressed.test"), "{csv}");

    let file = std::env::temp_dir().join(format!("hikyaku-walls-{}.csv", std::process::id()));
    std::fs::write(&file, "email,reason\nnew@suppressed.test,manual\n").expect("file");
    let file_arg = file.display().to_string();
    cli.json(&["suppressions", "import", "--tenant", &b, &file_arg]);
    let _ = std::fs::remove_file(&file);
    let per_tenant: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT tenant_id, count(*) FROM suppressions GROUP BY tenant_id ORDER BY tenant_id",
    )
    .fetch_all(&api.state.db)
    .await
    .expect("counts");
    assert_eq!(
        per_tenant,
        [(api.tenant, 1), (b.parse().expect("id"), 2)],
        "the import went to tenant b only"
    );

    cli.json(&["tenant", "quota", &a, "--monthly", "7"]);
    let quotas: Vec<(i64, Option<i64>)> =
        sqlx::query_as("SELECT id, monthly_quota FROM tenants ORDER BY id")
            .fetch_all(&api.state.db)
            .await
            .expect("quotas");
    assert_eq!(
        quotas,
        [(api.tenant, Some(7)), (b.parse().expect("id"), None)]
    );

    let new_key = cli.json(&["apikey", "create", "--tenant", &a, "--scope", "read"]);
    let new_key = new_key["api_key"].as_str().expect("key");
    let (_, _, lists) = api
        .call(Method::GET, "/v1/lists", Some(new_key), None)
        .await;
    let names: Vec<&str> = lists
        .as_array()
        .expect("lists")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, ["a"], "the new key sees its tenant only");

    // An unknown tenant: an error naming it, and nothing changes.
    let before: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM api_keys), (SELECT count(*) FROM suppressions)",
    )
    .fetch_one(&api.state.db)
    .await
    .expect("counts");
    for args in [
        vec!["apikey", "create", "--tenant", "999999"],
        vec!["tenant", "quota", "999999", "--monthly", "1"],
        vec![
            "suppressions",
            "export",
            "--tenant",
            "999999",
            "--out",
            "/dev/null",
        ],
    ] {
        let (code, _, err) = cli.run(&args);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(err.contains("999999"), "{err}");
    }
    let after: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM api_keys), (SELECT count(*) FROM suppressions)",
    )
    .fetch_one(&api.state.db)
    .await
    .expect("counts");
    assert_eq!(before, after);
}
