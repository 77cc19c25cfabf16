//! Internationalized domains: the API stores them as punycode A-labels, and addresses stored
//! before that (Unicode domains) are given their A-label form once, so a suppression made for
//! the Unicode spelling still suppresses the address when it is imported again.

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_domains_become_a_labels_and_old_suppressions_still_hold() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let db = &api.state.db;
    let (_, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "l"}))
        .await;
    let l = list["id"].as_i64().expect("list");
    let (s, sub) = api
        .json(
            Method::POST,
            &format!("/v1/lists/{l}/subscribers"),
            json!({"email": "Taro@例え.テスト"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sub}");
    assert_eq!(sub["email"], "Taro@xn--r8jz45g.xn--zckzah");

    // Rows as an older version stored them.
    sqlx::query("INSERT INTO suppressions (tenant_id, email_lower, reason, source) VALUES ($1, 'hanako@bücher.example', 'complaint', 'arf')")
        .bind(api.tenant)
        .execute(db)
        .await
        .expect("old suppression");
    sqlx::query("INSERT INTO subscribers (tenant_id, list_id, email, email_lower) VALUES ($1, $2, 'Jiro@Bücher.example', 'jiro@bücher.example')")
        .bind(api.tenant)
        .bind(l)
        .execute(db)
        .await
        .expect("old subscriber");
    sqlx::query("DELETE FROM data_fixes WHERE name = 'ascii-domains'")
        .execute(db)
        .await
        .expect("forget the fix");
    hikyaku_api::address::backfill_ascii_domains(db)
        .await
        .expect("backfill");
    hikyaku_api::address::backfill_ascii_domains(db)
        .await
        .expect("a second run does nothing");

    let sups: Vec<(String,)> =
        sqlx::query_as("SELECT email_lower FROM suppressions ORDER BY email_lower")
            .fetch_all(db)
            .await
            .expect("suppressions");
    assert_eq!(
        sups,
        [
            ("hanako@bücher.example".to_owned(),),
            ("hanako@xn--bcher-kva.example".to_owned(),)
        ]
    );
    let (email,): (String,) =
        sqlx::query_as("SELECT email FROM subscribers WHERE email_lower LIKE 'jiro@%'")
            .fetch_one(db)
            .await
            .expect("subscriber");
    assert_eq!(email, "Jiro@xn--bcher-kva.example");

    // Imported again (now A-label), the complained-about address is still suppressed.
    let (s, sub) = api
        .json(
            Method::POST,
            &format!("/v1/lists/{l}/subscribers"),
            json!({"email": "hanako@Bücher.example"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sub}");
    let (suppressed,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM suppressions WHERE tenant_id = $1 AND email_lower = $2)",
    )
    .bind(api.tenant)
    .bind(sub["email"].as_str().expect("email").to_lowercase())
    .fetch_one(db)
    .await
    .expect("lookup");
    assert!(suppressed, "{sub}");
}
