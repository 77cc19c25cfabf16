//! `hikyaku apikey revoke` takes what an operator is likely to paste — the key's prefix or the
//! whole key `hk_<prefix>_<secret>` — and revokes the key at once (the API answers 401 to it
//! next); the secret part is never printed or written to the audit trail, not even when the
//! key is already revoked or the input is malformed.

use axum::http::StatusCode;
use hikyaku_tests::api::{Cli, TestApi};
use hikyaku_tests::redis::TestRedis;

const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");

/// Every audit event as text (command, arguments, detail).
async fn audit_trail(api: &TestApi) -> String {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT command, args::text, detail FROM audit_events ORDER BY id")
            .fetch_all(&api.state.db)
            .await
            .expect("audit");
    rows.iter()
        .map(|(c, a, d)| format!("{c} {a} {d}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_key_revokes_by_its_prefix_and_its_secret_is_never_stored() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let created = cli.json(&["apikey", "create", "--tenant", &api.tenant.to_string()]);
    let key = created["api_key"].as_str().expect("key").to_owned();
    let prefix = created["prefix"].as_str().expect("prefix").to_owned();
    let secret = key
        .strip_prefix(&format!("hk_{prefix}_"))
        .expect("hk_<prefix>_<secret>")
        .to_owned();
    let (s, _, _) = api
        .call(axum::http::Method::GET, "/v1/lists", Some(&key), None)
        .await;
    assert_eq!(s, StatusCode::OK, "the new key works");

    let (code, out, err) = cli.run(&["apikey", "revoke", &key]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&prefix), "{out}");
    assert!(
        !out.contains(&secret) && !err.contains(&secret),
        "{out}{err}"
    );
    let (s, _, _) = api
        .call(axum::http::Method::GET, "/v1/lists", Some(&key), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the revoked key is refused");
    let (s, _, _) = api
        .call(axum::http::Method::GET, "/v1/lists", Some(&api.key), None)
        .await;
    assert_eq!(s, StatusCode::OK, "the tenant's other key still works");

    // Again (already revoked): not found, still no secret anywhere.
    let (code, out, err) = cli.run(&["apikey", "revoke", &key]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        !out.contains(&secret) && !err.contains(&secret),
        "{out}{err}"
    );
    // Malformed keys: bad input, never echoed.
    for bad in [
        format!("hk_{prefix}"),
        format!("hk_zz_{secret}"),
        format!("{prefix}_{secret}"),
        format!("hk_{prefix}_{secret}_extra"),
    ] {
        let (code, out, err) = cli.run(&["apikey", "revoke", &bad]);
        assert_eq!(code, 2, "{bad}: {out}{err}");
        assert!(
            !out.contains(&secret) && !err.contains(&secret),
            "{out}{err}"
        );
    }

    let trail = audit_trail(&api).await;
    assert!(trail.contains("apikey revoke"), "{trail}");
    assert!(trail.contains(&prefix), "the prefix is recorded: {trail}");
    assert!(
        !trail.contains(&secret) && !trail.contains(&secret[..16]),
        "no key material in the audit trail:\n{trail}"
    );
}
