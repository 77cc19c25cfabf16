//! Injection: a table of attacks against every header-bound field, and SMTP smuggling through
//! bodies.
//!
//! - CR, LF, NUL (and the other C0/C1 controls) in a subject, sender name or address,
//!   Reply-To, subscriber address, merge value (API or import), test recipient or suppression
//!   are refused with 422 problem+json naming the field (or an import's invalid row), and
//!   nothing changes. Campaigns take no customer headers: the only extra header lines are the
//!   ones hikyaku writes.
//! - Bodies may hold line breaks, so they carry the smuggling sequences (`\n.\n`, `\r\n.\r\n`,
//!   bare CR, bare LF, a whole second SMTP transaction): they are normalized to CRLF and
//!   dot-stuffed, and the sink gets exactly one message per recipient, carrying the sequences as
//!   text, with no line ends but CRLF.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::world::{World, STANDARD_SITES};
use serde_json::json;

/// What an attacker puts in a one-line field.
const ATTACKS: [&str; 8] = [
    "x\r\nBcc: evil@evil.test",
    "x\nBcc: evil@evil.test",
    "x\rBcc: evil@evil.test",
    "x\0y",
    "x\r\n.\r\nMAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@gmail.test>\r\nDATA\r\n",
    "x\r\n\r\nbody-start",
    "x\u{85}Bcc: evil@evil.test",
    "x\u{1b}[2J",
];

async fn counts(api: &TestApi) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM lists), (SELECT count(*) FROM subscribers), \
         (SELECT count(*) FROM campaigns), (SELECT count(*) FROM suppressions)",
    )
    .fetch_one(&api.state.db)
    .await
    .expect("counts")
}

/// Puts `attack` inside an address where the field is one (`a<attack>@b.test`).
fn in_address(attack: &str) -> String {
    format!("a{attack}@b.test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_header_bound_fields_are_refused_and_change_nothing() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let l = api.list_with_csv("email\nhanako@gmail.test\n").await;
    let c = api.create_campaign(l, "hello").await;
    let before = counts(&api).await;
    let mut refused = 0;
    for attack in ATTACKS {
        // (method, path, body, field the problem must name)
        let mut cases: Vec<(Method, String, serde_json::Value, &str)> = Vec::new();
        let campaign = |field: &str, value: String| {
            let mut v = json!({"name": "c", "list_id": l, "from_addr": "n@a.test", "subject": "s", "text_body": "b"});
            v[field] = json!(value);
            v
        };
        for field in ["subject", "from_name"] {
            cases.push((
                Method::POST,
                "/v1/campaigns".into(),
                campaign(field, attack.into()),
                field,
            ));
            cases.push((
                Method::PATCH,
                format!("/v1/campaigns/{c}"),
                json!({ field: attack }),
                field,
            ));
        }
        for field in ["from_addr", "reply_to"] {
            cases.push((
                Method::POST,
                "/v1/campaigns".into(),
                campaign(field, in_address(attack)),
                field,
            ));
        }
        cases.push((
            Method::POST,
            format!("/v1/lists/{l}/subscribers"),
            json!({"email": in_address(attack)}),
            "email",
        ));
        cases.push((
            Method::POST,
            format!("/v1/lists/{l}/subscribers"),
            json!({"email": "new@b.test", "attributes": {"first_name": attack}}),
            "attributes",
        ));
        cases.push((
            Method::POST,
            format!("/v1/campaigns/{c}/test"),
            json!({"recipients": [in_address(attack)]}),
            "recipients",
        ));
        cases.push((
            Method::POST,
            "/v1/suppressions".into(),
            json!({"email": in_address(attack)}),
            "email",
        ));
        for (method, path, body, field) in cases {
            let (status, ct, problem) = api
                .call(
                    method.clone(),
                    &path,
                    Some(&api.key),
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path} with {attack:?} in {field}: {problem}"
            );
            assert_eq!(ct, "application/problem+json");
            assert_eq!(problem["field"], field, "{method} {path}: {problem}");
            refused += 1;
        }
        // An import row with the attack in a merge value or the address is an invalid row.
        let csv = format!(
            "email,first_name\n\"{}\",ok\nz@b.test,\"{}\"\n",
            in_address(attack).replace('"', "\"\""),
            attack.replace('"', "\"\"")
        );
        let (status, _, report) = api
            .call(
                Method::POST,
                &format!("/v1/lists/{l}/subscribers/import"),
                Some(&api.key),
                Some(("text/csv", csv.into_bytes())),
            )
            .await;
        // A CR or LF inside a quoted field cannot span lines: the line itself is refused.
        assert_eq!(status, StatusCode::OK, "{attack:?}: {report}");
        assert_eq!(report["accepted"], 0, "{attack:?}: {report}");
    }
    assert!(refused >= 80, "{refused} refusals");
    assert_eq!(counts(&api).await, before, "no attack changed anything");
    let (_, camp) = api.get(&format!("/v1/campaigns/{c}")).await;
    assert_eq!(camp["subject"], "s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_sequences_in_bodies_are_normalized_and_split_nothing() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let l = api
        .list_with_csv("email,first_name\nhanako@gmail.test,Hanako\nichiro@other.test,Ichiro\n")
        .await;
    let smuggled =
        "MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@gmail.test>\r\nDATA\r\nsmuggled\r\n";
    let body = format!(
        "Hello {{{{first_name}}}}\n.\n{smuggled}.\r\nlf-dot-crlf\n.\r\ncrlf-dot-lf\r\n.\nbare-cr\r.\rafter\r\n.\r\nend"
    );
    let (status, camp) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({"name": "c", "list_id": l, "from_addr": "n@a.test", "subject": "s",
                   "text_body": body, "html_body": format!("<p>{}</p>", body)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{camp}");
    let c = camp["id"].as_i64().expect("campaign");
    api.send(c).await;
    hikyaku_api::expansion::expand(&api.state, c)
        .await
        .expect("expand");
    let engine = world.engine(world.config("", STANDARD_SITES));
    let messages = world.captured_at_least(2).await;
    // Anything smuggled would arrive as a third message or a victim recipient: give it time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    engine.stop().await.expect("engine stops cleanly");
    let stats = world.sink.stats();
    assert_eq!(
        stats.accepted(),
        2,
        "one message per recipient, nothing more"
    );
    let mut rcpts: Vec<String> = stats
        .captured()
        .iter()
        .flat_map(|m| m.recipients.clone())
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, ["hanako@gmail.test", "ichiro@other.test"]);
    for m in &messages {
        let content = &m.content;
        for (i, &b) in content.iter().enumerate() {
            match b {
                b'\n' => assert!(i > 0 && content[i - 1] == b'\r', "bare LF at {i}"),
                b'\r' => assert_eq!(content.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                _ => {}
            }
        }
        let parsed = mail_parser::MessageParser::default()
            .parse(content)
            .expect("a MIME message");
        let text = parsed
            .body_text(0)
            .expect("text part")
            .replace("\r\n", "\n");
        assert!(
            text.contains("\n.\nMAIL FROM:<evil@evil.test>\nRCPT TO:<victim@gmail.test>\nDATA\nsmuggled\n.\nlf-dot-crlf\n.\ncrlf-dot-lf\n.\nbare-cr\n.\nafter\n.\nend"),
            "the sequences arrive as text, line ends normalized: {text:?}"
        );
        assert!(parsed.header("Bcc").is_none());
    }
}
