//! End to end through the API: a list imported, a campaign created and sent, expanded into the
//! queues (suppressed and unsubscribed addresses skipped), delivered by the engine to the sink,
//! every event recorded once in PostgreSQL, and the stats exact.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, STANDARD_SITES};
use serde_json::json;

const DOMAINS: [&str; 3] = ["gmail.test", "yahoo.test", "other.test"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_sent_through_the_api_is_delivered_and_recorded() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let expander = tokio::spawn(hikyaku_api::expansion::run(
        api.state.clone(),
        stop_rx.clone(),
    ));
    let recorders =
        hikyaku_api::recorder::spawn(api.state.clone(), api.redis_client.clone(), stop_rx);

    let (s, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "news"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{list}");
    let list_id = list["id"].as_i64().expect("id");

    let n = 300;
    let mut csv = String::from("email,first_name\n");
    for i in 0..n {
        csv.push_str(&format!("reader{i}@{},Reader {i}\n", DOMAINS[i % 3]));
    }
    csv.push_str("READER1@yahoo.test,dup\n"); // line n+2: same address, other case
    csv.push_str("not-an-address,x\n"); // line n+3
    csv.push_str("reader0@gmail.test,dup again\n"); // line n+4
    csv.push_str("too,many,fields\n"); // line n+5
    let (s, _, report) = api
        .call(
            Method::POST,
            &format!("/v1/lists/{list_id}/subscribers/import"),
            Some(&api.key),
            Some(("text/csv", csv.into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], n);
    assert_eq!(report["duplicates"], 2);
    assert_eq!(report["duplicate_lines"], json!([n + 2, n + 4]));
    assert_eq!(report["invalid"], 2);
    assert_eq!(report["invalid_rows"][0]["line"], n + 3);
    assert_eq!(report["invalid_rows"][1]["line"], n + 5);

    // One unsubscribes, one is suppressed for the tenant: neither may be enqueued.
    let (_, page) = api
        .get(&format!("/v1/lists/{list_id}/subscribers?limit=2"))
        .await;
    let first = page[0]["id"].as_i64().expect("id");
    let (s, _) = api
        .json(
            Method::PATCH,
            &format!("/v1/lists/{list_id}/subscribers/{first}"),
            json!({"status": "unsubscribed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    sqlx::query("INSERT INTO suppressions (tenant_id, email_lower, reason, source) VALUES ($1, 'reader2@other.test', 'complaint', 'test')")
        .bind(api.tenant)
        .execute(&api.state.db)
        .await
        .expect("suppress");

    let (s, campaign) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({
                "name": "weekly", "list_id": list_id, "from_name": "Acme", "from_addr": "news@acme.test",
                "subject": "Hello {{first_name}}", "text_body": "Dear {{first_name}},\nnews for {{email}}.\n"
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
    let (s, again) = api
        .json(
            Method::POST,
            &format!("/v1/campaigns/{cid}/send"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "sending twice is refused: {again}");

    let engine = world.engine(world.config("", STANDARD_SITES));
    let stats = wait_for(Duration::from_secs(60), "campaign completed", || {
        let api = &api;
        async move {
            let (_, st) = api.get(&format!("/v1/campaigns/{cid}/stats")).await;
            (st["status"] == "completed").then_some(st)
        }
    })
    .await;
    engine.stop().await.expect("engine stops");
    let _ = stop_tx.send(true);
    let _ = expander.await;
    for r in recorders {
        let _ = r.await;
    }

    let expected = n as i64 - 2;
    assert_eq!(stats["expanded"], expected, "{stats}");
    assert_eq!(stats["skipped"], 2);
    assert_eq!(stats["by_status"]["delivered"], expected);
    // reader0@gmail.test unsubscribed, reader2@other.test suppressed.
    assert_eq!(stats["by_site"]["google"]["delivered"], 99);
    assert_eq!(stats["by_site"]["yahoo"]["delivered"], 100);
    assert_eq!(stats["by_site"]["default"]["delivered"], 99);
    let sink = world.sink.stats();
    assert_eq!(sink.distinct() as i64, expected);
    assert_eq!(sink.duplicates(), 0);
    assert_eq!(
        sink.count_of(&page[0]["email"].as_str().expect("email").to_lowercase()),
        0,
        "unsubscribed: not sent"
    );
    assert_eq!(
        sink.count_of("reader2@other.test"),
        0,
        "suppressed: not sent"
    );
    let rows = api.recorded_events(cid).await;
    assert_eq!(rows, expected, "one recorded event per delivered job");
}
