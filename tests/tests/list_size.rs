//! List sizes: a tenant's lists hold at most `max_list_size` subscribers (set with
//! `hikyaku tenant quota N --list-size M`). A single add or an import batch that would pass
//! it is refused whole with 409 `list-full` and changes nothing; an import's earlier batches
//! stay (imports commit batch by batch) and the error names the first line not imported. The
//! count the triggers keep equals the rows after every kind of change, and migration 0010
//! counts the subscribers that were there before it.

use std::path::Path;

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::{Cli, TestApi, TestDb};
use hikyaku_tests::redis::TestRedis;
use serde_json::{json, Value};

const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");

/// Imports `rows` addresses `prefix{i}@l.test` as CSV into `list` with `key`.
async fn import(
    api: &TestApi,
    key: &str,
    list: i64,
    prefix: &str,
    rows: usize,
) -> (StatusCode, Value) {
    let csv: String = std::iter::once("email".to_owned())
        .chain((0..rows).map(|i| format!("{prefix}{i}@l.test")))
        .collect::<Vec<_>>()
        .join("\n");
    let (s, _, body) = api
        .call(
            Method::POST,
            &format!("/v1/lists/{list}/subscribers/import"),
            Some(key),
            Some(("text/csv", csv.into_bytes())),
        )
        .await;
    (s, body)
}

async fn add(api: &TestApi, key: &str, list: i64, email: &str) -> (StatusCode, Value) {
    let (s, _, body) = api
        .call(
            Method::POST,
            &format!("/v1/lists/{list}/subscribers"),
            Some(key),
            Some((
                "application/json",
                json!({ "email": email }).to_string().into_bytes(),
            )),
        )
        .await;
    (s, body)
}

async fn new_list(api: &TestApi, key: &str, name: &str) -> i64 {
    let (s, _, list) = api
        .call(
            Method::POST,
            "/v1/lists",
            Some(key),
            Some((
                "application/json",
                json!({ "name": name }).to_string().into_bytes(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{list}");
    list["id"].as_i64().expect("list id")
}

/// Rows of `list` in the record, and the count the list shows.
async fn sizes(api: &TestApi, key: &str, list: i64) -> (i64, i64) {
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM subscribers WHERE list_id = $1")
        .bind(list)
        .fetch_one(&api.state.db)
        .await
        .expect("count");
    let (s, _, shown) = api
        .call(Method::GET, &format!("/v1/lists/{list}"), Some(key), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{shown}");
    (rows, shown["subscribers"].as_i64().expect("subscribers"))
}

fn assert_list_full(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["type"], "https://hikyaku.dev/problems/list-full",
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_list_takes_no_more_and_every_refusal_changes_nothing() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let tenant = api.tenant.to_string();
    let key = api.key.clone();
    let other = api.other_tenant_key().await;

    let shown = cli.json(&["tenant", "quota", &tenant]);
    assert_eq!(shown["max_list_size"], 10_000_000, "the default: {shown}");
    let set = cli.json(&["tenant", "quota", &tenant, "--list-size", "5"]);
    assert_eq!(set["max_list_size"], 5, "{set}");
    let (code, _, err) = cli.run(&["tenant", "quota", &tenant, "--list-size=-1"]);
    assert_ne!(code, 0);
    assert!(err.contains("--list-size"), "{err}");
    assert_eq!(cli.json(&["tenant", "quota", &tenant])["max_list_size"], 5);

    let l = new_list(&api, &key, "small").await;
    for i in 0..3 {
        let (s, b) = add(&api, &key, l, &format!("single{i}@l.test")).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    // Four more would make seven: the one batch is refused whole.
    let (s, b) = import(&api, &key, l, "four", 4).await;
    assert_list_full(s, &b);
    assert!(
        b["detail"].as_str().is_some_and(|d| d.contains("line 2")),
        "{b}"
    );
    assert_eq!(sizes(&api, &key, l).await, (3, 3));
    // Two fit exactly; a duplicate row is not a new subscriber.
    let (s, b) = import(&api, &key, l, "two", 2).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["accepted"], 2, "{b}");
    let (s, b) = import(&api, &key, l, "two", 2).await;
    assert_eq!(s, StatusCode::OK, "duplicates add nothing: {b}");
    assert_eq!(sizes(&api, &key, l).await, (5, 5));
    let (s, b) = add(&api, &key, l, "sixth@l.test").await;
    assert_list_full(s, &b);
    assert_eq!(sizes(&api, &key, l).await, (5, 5));

    // Another tenant's lists are not this tenant's limit.
    let theirs = new_list(&api, &other, "theirs").await;
    let (s, b) = import(&api, &other, theirs, "t", 20).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(sizes(&api, &other, theirs).await, (20, 20));

    // A removed subscriber makes room for one.
    let (_, _, page) = api
        .call(
            Method::GET,
            &format!("/v1/lists/{l}/subscribers"),
            Some(&key),
            None,
        )
        .await;
    let first = page[0]["id"].as_i64().expect("subscriber id");
    let (s, _, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/lists/{l}/subscribers/{first}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(sizes(&api, &key, l).await, (4, 4));
    let (s, b) = add(&api, &key, l, "sixth@l.test").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Lowered below a list's size: the list keeps its subscribers and takes no more.
    cli.json(&["tenant", "quota", &tenant, "--list-size", "2"]);
    let (s, b) = add(&api, &key, l, "seventh@l.test").await;
    assert_list_full(s, &b);
    assert_eq!(sizes(&api, &key, l).await, (5, 5));

    // An import over a batch (5,000 rows): the first batch stays, the second is refused whole
    // and the error names its first line (header = line 1, so row 5,001 is line 5,002).
    cli.json(&["tenant", "quota", &tenant, "--list-size", "6000"]);
    let big = new_list(&api, &key, "big").await;
    let (s, b) = import(&api, &key, big, "b", 7_000).await;
    assert_list_full(s, &b);
    let detail = b["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("line 5002") && detail.contains("5000 rows accepted"),
        "{b}"
    );
    assert_eq!(sizes(&api, &key, big).await, (5_000, 5_000));

    // Deleting a list (its subscribers go with it) and every other change kept the counts.
    let (s, _, _) = api
        .call(Method::DELETE, &format!("/v1/lists/{l}"), Some(&key), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let drift: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT l.id, l.subscriber_count, (SELECT count(*) FROM subscribers s WHERE s.list_id = l.id) \
         FROM lists l ORDER BY l.id",
    )
    .fetch_all(&api.state.db)
    .await
    .expect("counts");
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert!(
        drift.iter().all(|(_, kept, rows)| kept == rows),
        "{drift:?}"
    );

    // A subscriber never moves to another list (the counts would not follow); TRUNCATE
    // zeroes them.
    let moved = sqlx::query("UPDATE subscribers SET list_id = $1 WHERE list_id = $2")
        .bind(big)
        .bind(theirs)
        .execute(&api.state.db)
        .await;
    assert!(
        moved.is_err_and(|e| e.to_string().contains("stays in its list")),
        "a move is refused"
    );
    assert_eq!(sizes(&api, &other, theirs).await, (20, 20));
    sqlx::query("TRUNCATE subscribers")
        .execute(&api.state.db)
        .await
        .expect("truncate");
    assert_eq!(sizes(&api, &key, big).await, (0, 0));
    assert_eq!(sizes(&api, &other, theirs).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0010_counts_the_subscribers_already_there() {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let all = sqlx::migrate::Migrator::new(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/migrations"
    )))
    .await
    .expect("migrations");
    let mut before = sqlx::migrate::Migrator::new(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/migrations"
    )))
    .await
    .expect("migrations");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 10)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.expect("migrations 1–9");
    sqlx::raw_sql(
        "INSERT INTO tenants (name) VALUES ('t');
         INSERT INTO lists (tenant_id, name) VALUES (1, 'a'), (1, 'b'), (1, 'empty');
         INSERT INTO subscribers (list_id, tenant_id, email, email_lower)
              SELECT 1 + (i % 2), 1, 'r' || i || '@x.test', 'r' || i || '@x.test'
                FROM generate_series(1, 7) AS i;",
    )
    .execute(&pool)
    .await
    .expect("rows before 0010");
    all.run(&pool).await.expect("migration 0010");
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, subscriber_count FROM lists ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("counts");
    assert_eq!(
        counts,
        [
            ("a".to_owned(), 3),
            ("b".to_owned(), 4),
            ("empty".to_owned(), 0)
        ]
    );
    pool.close().await;
}
