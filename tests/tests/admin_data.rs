//! The lifecycle of data through the admin CLI: suppression files in and out, tenants and keys
//! listed, the retention purge, and tenant retirement (stop, export, delete) — with refusals
//! that change nothing.

use axum::http::{Method, StatusCode};
use hikyaku_queue_schema::Keys;
use hikyaku_tests::api::{Cli, TestApi};
use hikyaku_tests::redis::TestRedis;

const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");

async fn count(api: &TestApi, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(&api.state.db)
        .await
        .expect("count");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_files_tenant_listing_and_the_retention_purge() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let tenant = api.tenant.to_string();
    let dir = std::env::temp_dir().join(format!(
        "hk-admin-data-{}-{}",
        std::process::id(),
        redis.port
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");

    // Import: a file with a bad line is refused whole, naming the line; the good file goes in
    // and the engines are told.
    let file = dir.join("in.csv");
    std::fs::write(
        &file,
        "email,reason\nA@Example.test,complaint\nb@example.test\nnot-an-address\n",
    )
    .expect("file");
    let (code, _, err) = cli.run(&[
        "suppressions",
        "import",
        "--tenant",
        &tenant,
        file.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert_eq!(count(&api, "SELECT count(*) FROM suppressions").await, 0);
    std::fs::write(
        &file,
        "email,reason\nA@Example.test,complaint\nb@example.test\n",
    )
    .expect("file");
    let r = cli.json(&[
        "suppressions",
        "import",
        "--tenant",
        &tenant,
        file.to_str().expect("utf8"),
    ]);
    assert_eq!(r["accepted"], 2, "{r}");
    let mut con = redis.con().await;
    let feed: u64 = redis::cmd("XLEN")
        .arg(Keys::suppressed())
        .query_async(&mut con)
        .await
        .expect("xlen");
    assert_eq!(feed, 2, "imported addresses reach the engines' feed");
    let out = dir.join("out.csv");
    let e = cli.json(&[
        "suppressions",
        "export",
        "--tenant",
        &tenant,
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(e["exported"], 2);
    let csv = std::fs::read_to_string(&out).expect("export");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "email,reason,source,created_at");
    assert!(
        lines[1].starts_with("a@example.test,complaint,import,"),
        "{csv}"
    );
    assert!(
        lines[2].starts_with("b@example.test,manual,import,"),
        "{csv}"
    );
    // An export imports back as it was (its extra columns ignored).
    let again = cli.json(&[
        "suppressions",
        "import",
        "--tenant",
        &tenant,
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(again["accepted"], 2, "{again}");
    let reasons: Vec<(String,)> =
        sqlx::query_as("SELECT reason FROM suppressions ORDER BY email_lower")
            .fetch_all(&api.state.db)
            .await
            .expect("reasons");
    assert_eq!(
        reasons,
        vec![("complaint".to_owned(),), ("manual".to_owned(),)]
    );
    // A wrong tenant: refused before the output file is touched.
    let (code, _, _) = cli.run(&[
        "suppressions",
        "export",
        "--tenant",
        "999999",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 3);
    assert_eq!(std::fs::read_to_string(&out).expect("kept"), csv);
    let (code, _, err) = cli.run(&[
        "suppressions",
        "import",
        "--tenant",
        "999999",
        file.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = cli.run(&[
        "suppressions",
        "import",
        "--tenant",
        &tenant,
        "/nonexistent/file.csv",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/file.csv"), "{err}");

    // Tenants and keys, secrets never shown again.
    let tenants = cli.json(&["tenant", "list"]);
    assert_eq!(tenants[0]["name"], "acme");
    assert_eq!(tenants[0]["active_keys"], 1);
    let created = cli.json(&["apikey", "create", "--tenant", &tenant]);
    let prefix = created["prefix"].as_str().expect("prefix").to_owned();
    let keys = cli.json(&["apikey", "list", "--tenant", &tenant]);
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    assert!(!keys
        .to_string()
        .contains(created["api_key"].as_str().expect("key")));
    let (code, _, _) = cli.run(&["apikey", "revoke", &prefix]);
    assert_eq!(code, 0);
    let (code, _, _) = cli.run(&["apikey", "revoke", &prefix]);
    assert_eq!(code, 3, "already revoked");

    // Purge: only events older than the retention go; short retentions are refused. The
    // deliveries of 40 and 35 days ago have day partitions (made here as the API makes the
    // coming days'), which the purge drops whole; an event of 60 days ago has none and sits in
    // the default partition, from which it is deleted.
    let today = chrono::Utc::now().date_naive();
    let old = |days: u64| {
        today
            .checked_sub_days(chrono::Days::new(days))
            .expect("date")
    };
    hikyaku_api::partitions::ensure(&api.state.db, old(40), 1)
        .await
        .expect("partition");
    hikyaku_api::partitions::ensure(&api.state.db, old(35), 1)
        .await
        .expect("partition");
    let partition_exists = |days: u64| {
        let name = hikyaku_api::partitions::name(old(days));
        let db = api.state.db.clone();
        async move {
            let (e,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
                .bind(name)
                .fetch_one(&db)
                .await
                .expect("regclass");
            e
        }
    };
    assert!(partition_exists(40).await && partition_exists(35).await);
    assert!(partition_exists(0).await, "today's partition made at start");
    assert!(
        {
            let ahead = hikyaku_api::partitions::name(
                today
                    .checked_add_days(chrono::Days::new(hikyaku_api::partitions::AHEAD_DAYS))
                    .expect("date"),
            );
            let (e,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
                .bind(ahead)
                .fetch_one(&api.state.db)
                .await
                .expect("regclass");
            e
        },
        "a week of partitions ready ahead"
    );
    let l = api.list_with_csv("email\nx@example.test\n").await;
    let cid = api.create_campaign(l, "hello").await;
    for (seq, age_days) in [(1, 40), (2, 35), (3, 1), (4, 60)] {
        for table in ["delivery_events", "deferral_events"] {
            let status = if table == "delivery_events" {
                ", status"
            } else {
                ""
            };
            let value = if table == "delivery_events" {
                ", 'delivered'"
            } else {
                ""
            };
            sqlx::query(&format!(
                "INSERT INTO {table} (campaign_id, seq, attempt, tenant_id{status}, reason, code, enhanced, detail, site, mx, rcpt{q}, at) \
                 VALUES ($1, $2, 1, $3{value}, 'accepted', 250, '2.0.0', 'ok', 'google', 'mx', 'x@example.test'{qv}, now() - make_interval(days => $4))",
                q = if table == "delivery_events" { ", queued_at" } else { "" },
                qv = if table == "delivery_events" { ", now()" } else { "" },
            ))
            .bind(cid)
            .bind(seq)
            .bind(api.tenant)
            .bind(age_days)
            .execute(&api.state.db)
            .await
            .expect("old event");
        }
    }
    let (code, _, err) = cli.run(&["purge", "--older-than", "12h"]);
    assert_eq!(code, 2, "{err}");
    let dry = cli.json(&["purge", "--older-than", "30d", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["tables"][0], serde_json::json!(["delivery_events", 3]));
    assert_eq!(
        count(&api, "SELECT count(*) FROM delivery_events").await,
        4,
        "dry run deletes nothing"
    );
    assert_eq!(
        count(&api, "SELECT count(*) FROM delivery_events_default").await,
        1,
        "the event of a day without a partition sits in the default partition"
    );
    let done = cli.json(&["purge", "--older-than", "30d"]);
    assert_eq!(done["tables"][0], serde_json::json!(["delivery_events", 3]));
    assert_eq!(done["tables"][1], serde_json::json!(["deferral_events", 3]));
    assert_eq!(count(&api, "SELECT count(*) FROM delivery_events").await, 1);
    assert_eq!(count(&api, "SELECT count(*) FROM deferral_events").await, 1);
    assert!(
        !partition_exists(40).await && !partition_exists(35).await,
        "whole days past the retention are dropped as partitions"
    );
    assert!(partition_exists(0).await, "today's partition stays");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_a_tenant_stops_it_exports_its_data_and_deletes_it() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let tenant = api.tenant.to_string();
    let other = api.other_tenant_key().await;
    let dir = std::env::temp_dir().join(format!("hk-retire-{}-{}", std::process::id(), redis.port));
    let _ = std::fs::remove_dir_all(&dir);

    let l = api
        .list_with_csv("email,name\na@example.test,A\nb@example.test,B\nc@example.test,C\n")
        .await;
    let cid = api.create_campaign(l, "hello {{name}}").await;
    api.send(cid).await;
    // Expansion enqueues the jobs (no engine here: they wait in the ready streams).
    hikyaku_api::expansion::expand(&api.state, cid)
        .await
        .expect("expansion");
    let (s, _) = api
        .json(
            Method::POST,
            "/v1/suppressions",
            serde_json::json!({ "email": "z@example.test" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut con = redis.con().await;
    let snap: bool = redis::cmd("HEXISTS")
        .arg(Keys::campaign(cid as u64))
        .arg("snap")
        .query_async(&mut con)
        .await
        .expect("hexists");
    assert!(snap, "the campaign is frozen in Redis");

    // Without --yes: refused, nothing changed.
    let (code, _, err) = cli.run(&[
        "tenant",
        "retire",
        &tenant,
        "--export-dir",
        dir.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(!dir.exists());
    assert_eq!(
        api.get("/v1/lists").await.0,
        StatusCode::OK,
        "the key still works"
    );

    let r = cli.json(&[
        "tenant",
        "retire",
        &tenant,
        "--export-dir",
        dir.to_str().expect("utf8"),
        "--yes",
    ]);
    assert_eq!(r["keys_revoked"], 1, "{r}");
    assert_eq!(r["campaigns_cancelled"], 1, "{r}");
    // Stopped: its key no longer opens the API.
    assert_eq!(api.get("/v1/lists").await.0, StatusCode::UNAUTHORIZED);
    // Exported.
    let subs = std::fs::read_to_string(dir.join("subscribers.ndjson")).expect("subscribers");
    assert_eq!(subs.lines().count(), 3);
    let first: serde_json::Value =
        serde_json::from_str(subs.lines().next().unwrap_or("")).expect("ndjson");
    assert_eq!(first["email"], "a@example.test");
    assert_eq!(first["attributes"]["name"], "A");
    let sup = std::fs::read_to_string(dir.join("suppressions.csv")).expect("suppressions");
    assert!(sup.contains("z@example.test"), "{sup}");
    let camps = std::fs::read_to_string(dir.join("campaigns.ndjson")).expect("campaigns");
    let camp: serde_json::Value =
        serde_json::from_str(camps.lines().next().unwrap_or("")).expect("campaign");
    assert_eq!(camp["id"], cid);
    assert_eq!(camp["status"], "cancelled");
    assert!(dir.join(format!("reports/{cid}.csv")).exists());
    let tenant_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("tenant.json")).expect("tenant"))
            .expect("json");
    assert_eq!(tenant_json["name"], "acme");
    // Deleted from the record; the other tenant untouched.
    for sql in [
        format!("SELECT count(*) FROM tenants WHERE id = {tenant}"),
        format!("SELECT count(*) FROM subscribers WHERE tenant_id = {tenant}"),
        format!("SELECT count(*) FROM suppressions WHERE tenant_id = {tenant}"),
        format!("SELECT count(*) FROM campaigns WHERE tenant_id = {tenant}"),
        format!("SELECT count(*) FROM api_keys WHERE tenant_id = {tenant}"),
    ] {
        assert_eq!(count(&api, &sql).await, 0, "{sql}");
    }
    assert_eq!(count(&api, "SELECT count(*) FROM tenants").await, 1);
    let (s, _, _) = api.call(Method::GET, "/v1/lists", Some(&other), None).await;
    assert_eq!(s, StatusCode::OK);
    // Redis: the snapshot (bodies) gone, the cancelled state kept so engines end the queued
    // jobs unsent, and set to expire.
    let (snap, state, ttl): (bool, Option<String>, i64) = redis::pipe()
        .cmd("HEXISTS")
        .arg(Keys::campaign(cid as u64))
        .arg("snap")
        .cmd("HGET")
        .arg(Keys::campaign(cid as u64))
        .arg("state")
        .cmd("TTL")
        .arg(Keys::campaign(cid as u64))
        .query_async(&mut con)
        .await
        .expect("redis");
    assert!(!snap);
    assert_eq!(state.as_deref(), Some("cancelled"));
    assert!(ttl > 0, "{ttl}");
    // A second retirement finds nothing; the export directory is not reused.
    let (code, _, _) = cli.run(&[
        "tenant",
        "retire",
        &tenant,
        "--export-dir",
        "/tmp/hk-never",
        "--yes",
    ]);
    assert_eq!(code, 3);
    let _ = std::fs::remove_dir_all(&dir);
}
