//! Import and expansion: 100,000 NDJSON rows with duplicates and invalid lines are reported
//! exactly; the list expands into the shard streams once; replaying
//! it from the start (as after a crash between enqueuing a page and recording its cursor)
//! enqueues no recipient twice and counts each once. After the import, an expansion page is
//! planned as an index range (no sort of the list).

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::queue;
use hikyaku_tests::redis::TestRedis;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expansion_replayed_from_scratch_enqueues_nobody_twice() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let (_, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "big"}))
        .await;
    let l = list["id"].as_i64().expect("list");
    // 100,000 good rows, with a duplicate and an invalid row every 10,000 (line numbers known).
    let n = 100_000;
    let mut body = String::new();
    let (mut line, mut dup_lines, mut bad_lines) = (0u64, Vec::new(), Vec::new());
    for i in 0..n {
        body.push_str(&format!(
            "{{\"email\":\"user{i}@d{}.test\",\"attributes\":{{\"plan\":\"p{i}\"}}}}\n",
            i % 7
        ));
        line += 1;
        if i % 10_000 == 9_999 {
            body.push_str(&format!("{{\"email\":\"USER{i}@d{}.test\"}}\n", i % 7));
            line += 1;
            dup_lines.push(line);
            body.push_str("{\"email\": \"no-at-sign\"}\n");
            line += 1;
            bad_lines.push(line);
        }
    }
    let (s, _, report) = api
        .call(
            Method::POST,
            &format!("/v1/lists/{l}/subscribers/import"),
            Some(&api.key),
            Some(("application/x-ndjson", body.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"].as_i64(), Some(n));
    assert_eq!(report["duplicates"].as_u64(), Some(dup_lines.len() as u64));
    assert_eq!(report["duplicate_lines"], json!(dup_lines));
    assert_eq!(report["invalid"].as_u64(), Some(bad_lines.len() as u64));
    let invalid_lines: Vec<u64> = report["invalid_rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["line"].as_u64())
        .collect();
    assert_eq!(invalid_lines, bad_lines);

    // The import refreshed the planner's statistics: an expansion page is read in index order,
    // not by sorting the rest of the list (0.5–1 s per page at 1,000,000 subscribers).
    let plan: Vec<(String,)> =
        sqlx::query_as(&format!("EXPLAIN {}", hikyaku_api::expansion::PAGE_QUERY))
            .bind(l)
            .bind(0i64)
            .bind(1i64)
            .bind(10_000i64)
            .bind(vec!["plan".to_owned()])
            .fetch_all(&api.state.db)
            .await
            .expect("explain");
    let plan: Vec<String> = plan.into_iter().map(|(l,)| l).collect();
    assert!(
        !plan.iter().any(|l| l.contains("Sort")),
        "expansion page sorts: {plan:#?}"
    );

    let cid = api.create_campaign(l, "plan {{plan}}").await;
    api.send(cid).await;
    hikyaku_api::expansion::expand(&api.state, cid)
        .await
        .expect("expands");

    let mut con = redis.con().await;
    let first = queue::ready_jobs(&mut con).await;
    assert_eq!(first.len() as i64, n);
    let j = first
        .iter()
        .find(|j| j.rcpt == "user7@d0.test")
        .expect("job for user7");
    assert_eq!(j.fields[0], "p7", "merge values come from the attributes");
    // Then the computed fields every message's List-Unsubscribe needs: URL and token.
    assert_eq!(j.fields.len(), 3, "{:?}", j.fields);
    let token = &j.fields[2];
    assert_eq!(j.fields[1], format!("http://127.0.0.1:8080/u/{token}"));

    // Crash simulation: the record forgets all progress; the queues keep what was enqueued.
    sqlx::query("UPDATE campaigns SET expansion_cursor = 0, expanded = 0, expansion_done = false WHERE id = $1")
        .bind(cid)
        .execute(&api.state.db)
        .await
        .expect("reset");
    hikyaku_api::expansion::expand(&api.state, cid)
        .await
        .expect("expands again");
    let second = queue::ready_jobs(&mut con).await;
    assert_eq!(second.len() as i64, n, "no recipient enqueued twice");
    let (_, c) = api.get(&format!("/v1/campaigns/{cid}")).await;
    assert_eq!(c["expanded"].as_i64(), Some(n), "each counted once");
    assert_eq!(c["expansion_done"], true);
}
