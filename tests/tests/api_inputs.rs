//! The API's answers to bad input and to the wrong tenant: a clear problem+json naming the
//! field, and no change to the data.

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use serde_json::json;

/// (what, path, key, body, expected status).
type RawCase<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<(&'a str, Vec<u8>)>,
    StatusCode,
);

async fn subscriber_id(api: &TestApi, list: i64) -> i64 {
    let (_, page) = api.get(&format!("/v1/lists/{list}/subscribers")).await;
    page[0]["id"].as_i64().expect("a subscriber")
}

async fn counts(api: &TestApi) -> (i64, i64, i64) {
    let q = |sql: &'static str| {
        let db = api.state.db.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&db).await.expect("count");
            n
        }
    };
    (
        q("SELECT count(*) FROM lists").await,
        q("SELECT count(*) FROM subscribers").await,
        q("SELECT count(*) FROM campaigns").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_problem_naming_the_field_and_changes_nothing() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let (_, list) = api
        .json(Method::POST, "/v1/lists", json!({"name": "news"}))
        .await;
    let list_id = list["id"].as_i64().expect("list id");
    let subs = format!("/v1/lists/{list_id}/subscribers");
    let before = counts(&api).await;

    let json_cases: Vec<(&str, String, serde_json::Value, StatusCode, Option<&str>)> = vec![
        (
            "unknown field",
            "/v1/lists".into(),
            json!({"name": "x", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("colour"),
        ),
        (
            "missing field",
            "/v1/lists".into(),
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            "wrong type",
            "/v1/lists".into(),
            json!({"name": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
        (
            "empty name",
            "/v1/lists".into(),
            json!({"name": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            "duplicate name",
            "/v1/lists".into(),
            json!({"name": "news"}),
            StatusCode::CONFLICT,
            Some("name"),
        ),
        (
            "invalid address",
            subs.clone(),
            json!({"email": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("email"),
        ),
        (
            "CR/LF in address",
            subs.clone(),
            json!({"email": "a@b.test\r\nBcc: c@d.test"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("email"),
        ),
        (
            "nested attribute",
            subs.clone(),
            json!({"email": "a@b.test", "attributes": {"x": {"y": 1}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("attributes"),
        ),
        (
            "CR/LF in attribute",
            subs.clone(),
            json!({"email": "a@b.test", "attributes": {"x": "1\r\nBcc: y"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("attributes"),
        ),
        (
            "CR/LF in subject",
            "/v1/campaigns".into(),
            json!({"name": "c", "list_id": list_id, "from_addr": "n@a.test", "subject": "Hi\r\nBcc: x@y.test", "text_body": "b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("subject"),
        ),
        (
            "control character in a body",
            "/v1/campaigns".into(),
            json!({"name": "c", "list_id": list_id, "from_addr": "n@a.test", "subject": "s", "text_body": "b\u{1}].\n"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("text_body"),
        ),
        (
            "unknown mobile charset",
            "/v1/campaigns".into(),
            json!({"name": "c", "list_id": list_id, "from_addr": "n@a.test", "subject": "s", "text_body": "b", "mobile_charset": "shift_jis"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("mobile_charset"),
        ),
        (
            "bad from",
            "/v1/campaigns".into(),
            json!({"name": "c", "list_id": list_id, "from_addr": "n", "subject": "s", "text_body": "b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("from_addr"),
        ),
        (
            "foreign list",
            "/v1/campaigns".into(),
            json!({"name": "c", "list_id": 999_999, "from_addr": "n@a.test", "subject": "s", "text_body": "b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("list_id"),
        ),
    ];
    for (what, path, body, status, field) in json_cases {
        let (s, ct, problem) = api
            .call(
                Method::POST,
                &path,
                Some(&api.key),
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await;
        assert_eq!(s, status, "{what}: {problem}");
        assert_eq!(ct, "application/problem+json", "{what}");
        assert_eq!(problem["status"], status.as_u16(), "{what}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {problem}"
        );
        if let Some(f) = field {
            assert_eq!(problem["field"], f, "{what}: {problem}");
        }
    }

    let raw_cases: Vec<RawCase> = vec![
        (
            "malformed JSON",
            "/v1/lists",
            Some(&api.key),
            Some(("application/json", b"{\"name\": ".to_vec())),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong content type",
            "/v1/lists",
            Some(&api.key),
            Some(("text/plain", b"name=x".to_vec())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no key",
            "/v1/lists",
            None,
            Some(("application/json", b"{\"name\":\"y\"}".to_vec())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bad key",
            "/v1/lists",
            Some("hk_00000000_nope"),
            Some(("application/json", b"{\"name\":\"y\"}".to_vec())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "oversized body",
            "/v1/lists",
            Some(&api.key),
            Some(("application/json", vec![b' '; 3 * 1024 * 1024])),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, path, key, body, status) in raw_cases {
        let (s, ct, problem) = api.call(Method::POST, path, key, body).await;
        assert_eq!(s, status, "{what}: {problem}");
        assert_eq!(ct, "application/problem+json", "{what}");
    }
    let import = format!("/v1/lists/{list_id}/subscribers/import");
    let (s, _, _) = api
        .call(
            Method::POST,
            &import,
            Some(&api.key),
            Some(("application/json", b"[]".to_vec())),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "import wants CSV or NDJSON"
    );
    let (s, _, p) = api
        .call(
            Method::POST,
            &import,
            Some(&api.key),
            Some(("text/csv", b"name,plan\nx,y\n".to_vec())),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "CSV without an email column: {p}"
    );

    // Odd paths and queries are problems too, never a 500 or plain text.
    for (path, status) in [
        ("/v1/lists/99999999999999999999999", StatusCode::BAD_REQUEST),
        ("/v1/lists/abc", StatusCode::BAD_REQUEST),
        (
            "/v1/suppressions?after=%00",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/suppressions?limit=abc",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/v1/suppressions?colour=red",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (s, ct, p) = api.call(Method::GET, path, Some(&api.key), None).await;
        assert_eq!(
            (s, ct.as_str()),
            (status, "application/problem+json"),
            "{path}: {p}"
        );
    }
    let (s, _, p) = api
        .call(
            Method::DELETE,
            "/v1/suppressions/a%00b",
            Some(&api.key),
            None,
        )
        .await;
    assert!(s.is_client_error(), "NUL in a path: {s} {p}");

    // A spreadsheet's byte-order mark does not hide the header.
    let bom = "\u{feff}email,first_name\nbom@x.test,B\n"
        .as_bytes()
        .to_vec();
    let (s, _, r) = api
        .call(
            Method::POST,
            &import,
            Some(&api.key),
            Some(("text/csv", bom)),
        )
        .await;
    assert_eq!(
        (s, r["accepted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{r}"
    );
    let sid = subscriber_id(&api, list_id).await;
    let (s, _, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/lists/{list_id}/subscribers/{sid}"),
            Some(&api.key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Suppressions in bulk: an import with a bad row is refused whole, naming its line and
    // field; without it, imported and exported as CSV.
    let body = b"email,reason\nx1@y.test,complaint\nnot-an-address\nX2@Y.test\n".to_vec();
    let (s, _, r) = api
        .call(
            Method::POST,
            "/v1/suppressions/import",
            Some(&api.key),
            Some(("text/csv", body)),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    assert_eq!(r["field"], "email", "{r}");
    assert!(
        r["detail"].as_str().is_some_and(|d| d.contains("line 3")),
        "{r}"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM suppressions")
        .fetch_one(&api.state.db)
        .await
        .expect("count");
    assert_eq!(n, 0, "nothing stored");
    let body = b"email,reason\nx1@y.test,complaint\nX2@Y.test\n".to_vec();
    let (s, _, r) = api
        .call(
            Method::POST,
            "/v1/suppressions/import",
            Some(&api.key),
            Some(("text/csv", body)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["accepted"].as_u64(), Some(2), "{r}");
    let (s, ct, _) = api
        .call(Method::GET, "/v1/suppressions/export", Some(&api.key), None)
        .await;
    assert_eq!((s, ct.starts_with("text/csv")), (StatusCode::OK, true));
    for email in ["x1@y.test", "x2@y.test"] {
        let (s, _, _) = api
            .call(
                Method::DELETE,
                &format!("/v1/suppressions/{email}"),
                Some(&api.key),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{email} was imported");
    }

    assert_eq!(
        counts(&api).await,
        before,
        "no bad request changed the data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_sees_nothing_on_any_route() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let other = api.other_tenant_key().await;
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
    let (_, camp) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({"name": "c", "list_id": l, "from_addr": "n@a.test", "subject": "s", "text_body": "b"}),
        )
        .await;
    let c = camp["id"].as_i64().expect("campaign");
    let before = counts(&api).await;

    // Every route of the OpenAPI document that takes an id, with this tenant's ids.
    let doc = hikyaku_api::openapi::ApiDoc::openapi_json();
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (template, ops) in paths {
        if !template.contains('{') {
            continue;
        }
        let path = template.replace("{sid}", &s.to_string()).replace(
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
            // A body the route would accept, so only the tenant check can refuse it.
            let json =
                |v: serde_json::Value| Some(("application/json", v.to_string().into_bytes()));
            let body = match (template.as_str(), &m) {
                (_, &Method::GET) | (_, &Method::DELETE) => None,
                (t, _) if t.ends_with("/import") => {
                    Some(("text/csv", b"email\nz@b.test\n".to_vec()))
                }
                (t, _) if t.ends_with("/subscribers") => json(json!({"email": "z@b.test"})),
                (t, _) if t.ends_with("/{sid}") => json(json!({"status": "active"})),
                (t, _) if t.starts_with("/v1/lists") => json(json!({"name": "x"})),
                (t, _) if t.ends_with("/schedule") => {
                    json(json!({"send_at": "2099-01-01T00:00:00Z"}))
                }
                (t, _) if t.ends_with("/test") => json(json!({"recipients": ["a@b.test"]})),
                _ => json(json!({})),
            };
            let (status, _, problem) = api.call(m.clone(), &path, Some(&other), body).await;
            assert!(
                status == StatusCode::NOT_FOUND,
                "{m} {path} with another tenant's key: {status} {problem}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "walked {checked} routes");
    assert_eq!(counts(&api).await, before, "nothing changed");
    let (_, _, lists) = api.call(Method::GET, "/v1/lists", Some(&other), None).await;
    assert_eq!(lists, json!([]), "the other tenant lists none of ours");
    let (_, _, camps) = api
        .call(Method::GET, "/v1/campaigns", Some(&other), None)
        .await;
    assert_eq!(camps, json!([]), "nor our campaigns");
}
