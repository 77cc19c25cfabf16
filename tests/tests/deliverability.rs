//! A real hikyaku message, as the receiving side sees it: campaign through the API, engine with
//! DKIM keys (RSA-2048 and Ed25519, dual-signed), delivered to the sink. Its signatures verify
//! with dkimpy (an independent implementation, run through `/usr/bin/python3`; the test command
//! installs `python3-dkim`), the one-click headers are present and signed (changing them breaks
//! the signature), and POSTing the one-click URL unsubscribes and suppresses the recipient. Also
//! the RFC 8463 example message, signed here with the RFC's key, verifies against the RFC's
//! published record. A carrier site set to ISO-2022-JP gets 7bit messages that decode back
//! to the original Japanese text (signed, too), and a campaign with a character ISO-2022-JP
//! cannot carry fails there with an error naming it.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use hikyaku_engine::message::dkim::{Algorithm, DkimKey};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::world::{World, STANDARD_SITES};
use serde_json::json;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../engine/src/message/dkim/testdata")
        .join(name)
}

const ED25519_RECORD: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

fn rsa_record() -> String {
    let p = std::fs::read_to_string(testdata("rsa2048.pub.b64")).expect("public key");
    format!("v=DKIM1; k=rsa; p={}", p.trim())
}

static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs dkimpy on `message` with `records` (selector → TXT); its output and success.
fn dkimpy(message: &[u8], records: &[(&str, &str)]) -> (bool, String) {
    let python = std::env::var("HIKYAKU_DKIM_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let file = std::env::temp_dir().join(format!(
        "hikyaku-dkim-{}-{}.eml",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&file, message).expect("write message");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/dkim_verify.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(&file)
        .args(records.iter().map(|(s, t)| format!("{s}={t}")))
        .output()
        .unwrap_or_else(|e| panic!("{python} runs (ops/run-tests.sh installs python3-dkim): {e}"));
    let _ = std::fs::remove_file(&file);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named"),
        "dkimpy missing (ops/run-tests.sh installs python3-dkim): {text}"
    );
    (out.status.success(), text)
}

/// The unfolded value of the first header `name`.
fn header(message: &str, name: &str) -> Option<String> {
    let head = &message[..message.find("\r\n\r\n")?];
    let mut lines = head.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        if n.eq_ignore_ascii_case(name) {
            let mut value = v.trim().to_owned();
            while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(next.trim());
                lines.next();
            }
            return Some(value);
        }
    }
    None
}

#[test]
fn rfc8463_example_signed_here_verifies_with_the_rfc_record() {
    let message = std::fs::read(testdata("rfc8463-message.eml")).expect("RFC 8463 message");
    let message = message.as_slice();
    let pem = std::fs::read(testdata("rfc8463-ed25519.pem")).expect("key");
    let key = DkimKey::from_pem(
        "football.example.com",
        "brisbane",
        Algorithm::Ed25519Sha256,
        &pem,
        "rfc8463",
    )
    .expect("key");
    let mut signed = Vec::new();
    key.sign_into(message, &mut signed).expect("signs");
    signed.extend_from_slice(message);
    let (ok, out) = dkimpy(&signed, &[("brisbane", ED25519_RECORD)]);
    assert!(ok, "{out}");
    // Another key's record does not verify it.
    let (ok, out) = dkimpy(&signed, &[("brisbane", &rsa_record())]);
    assert!(!ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_message_is_signed_with_one_click_headers_that_work() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let l = api
        .list_with_csv("email,first_name\nhanako@gmail.test,Hanako\nichiro@other.test,Ichiro\n")
        .await;
    let cid = api
        .create_campaign(l, "Hello {{first_name}},\n.dot line\nnews.\n")
        .await;
    api.send(cid).await;
    hikyaku_api::expansion::expand(&api.state, cid)
        .await
        .expect("expand");

    let dkim = format!(
        "[[dkim]]\ndomain = \"a.test\"\nselector = \"rsa2026\"\nalgorithm = \"rsa-sha256\"\nkey_file = {rsa:?}\n\n\
         [[dkim]]\ndomain = \"a.test\"\nselector = \"ed2026\"\nalgorithm = \"ed25519-sha256\"\nkey_file = {ed:?}\n",
        rsa = testdata("rsa2048.pem").display().to_string(),
        ed = testdata("rfc8463-ed25519.pem").display().to_string(),
    );
    let engine = world.engine(world.config("", &format!("{STANDARD_SITES}\n{dkim}")));
    let messages = world.captured_at_least(2).await;
    engine.stop().await.expect("engine stops cleanly");

    let records = [
        ("rsa2026", rsa_record()),
        ("ed2026", ED25519_RECORD.to_owned()),
    ];
    let records: Vec<(&str, &str)> = records.iter().map(|(s, t)| (*s, t.as_str())).collect();
    let hanako = messages
        .iter()
        .find(|m| m.recipients == ["hanako@gmail.test"])
        .expect("hanako's message");
    let text = String::from_utf8(hanako.content.clone()).expect("utf-8 message");

    // Both signatures verify with an independent verifier.
    let (ok, out) = dkimpy(&hanako.content, &records);
    assert!(ok, "{out}\n{text}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" ok")).count(),
        2,
        "{out}"
    );
    assert!(text.contains("a=rsa-sha256") && text.contains("a=ed25519-sha256"));

    // One-click headers, signed.
    let lu = header(&text, "List-Unsubscribe").expect("List-Unsubscribe");
    let url = lu
        .split_once("<http://127.0.0.1:8080")
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(path, _)| path.to_owned())
        .unwrap_or_else(|| panic!("https/http one-click URL in {lu}"));
    assert!(url.starts_with("/u/"), "{lu}");
    let token = url.trim_start_matches("/u/");
    assert!(
        lu.contains(&format!(
            "<mailto:unsubscribe@bounces.acme.test?subject=unsubscribe%20{token}>"
        )),
        "{lu}"
    );
    assert_eq!(
        header(&text, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let feedback = header(&text, "Feedback-ID").expect("Feedback-ID");
    assert_eq!(feedback, format!("{cid}:{}:newsletter:hikyaku", api.tenant));
    for sig in text.match_indices("DKIM-Signature:") {
        let value = header(&text[sig.0..], "DKIM-Signature").expect("signature");
        let h: String = value
            .split(';')
            .find_map(|t| t.trim().strip_prefix("h="))
            .expect("h=")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for name in [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "list-unsubscribe",
            "list-unsubscribe-post",
            "feedback-id",
        ] {
            assert!(
                h.split(':').any(|x| x.eq_ignore_ascii_case(name)),
                "{name} in h={h}"
            );
        }
    }
    assert!(
        text.contains("\r\n.dot line\r\n"),
        "content arrives unstuffed"
    );
    let tampered = text.replacen(&url, "/u/forged", 1);
    let (ok, out) = dkimpy(tampered.as_bytes(), &records);
    assert!(!ok, "a changed List-Unsubscribe must fail: {out}");

    // The receiver's one-click POST unsubscribes and suppresses at once.
    let (s, _, _) = api
        .call(
            Method::POST,
            &url,
            None,
            Some((
                "application/x-www-form-urlencoded",
                b"List-Unsubscribe=One-Click".to_vec(),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (status,): (String,) =
        sqlx::query_as("SELECT status FROM subscribers WHERE email_lower = 'hanako@gmail.test'")
            .fetch_one(&api.state.db)
            .await
            .expect("subscriber");
    assert_eq!(status, "unsubscribed");
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM suppressions WHERE email_lower = 'hanako@gmail.test'")
            .fetch_one(&api.state.db)
            .await
            .expect("suppression");
    assert_eq!(n, 1);
}

/// Decodes `=?ISO-2022-JP?B?…?=` words (folded) back to text.
fn decode_words(v: &str) -> String {
    use base64::Engine as _;
    v.split_whitespace()
        .map(|w| {
            let b64 = w
                .strip_prefix("=?ISO-2022-JP?B?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap_or_else(|| panic!("an encoded word: {w}"));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64");
            encoding_rs::ISO_2022_JP.decode(&bytes).0.into_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_site_in_iso_2022_jp_decodes_back_to_the_original() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let l = api
        .list_with_csv("email,first_name\nhanako@docomo.test,花子😀\n")
        .await;
    let subject = "【お知らせ】{{first_name}}様、今週の新商品のご案内です";
    let body =
        "{{first_name}}様\n\nいつもご利用ありがとうございます。\n.今週のおすすめはこちら。\n";
    let (s, c) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({"name": "jp", "list_id": l, "from_addr": "n@a.test", "from_name": "飛脚ストア",
                   "subject": subject, "text_body": body}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let good = c["id"].as_i64().expect("id");
    let (s, c) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({"name": "emoji", "list_id": l, "from_addr": "n@a.test",
                   "subject": "今週の 🎉 セール", "text_body": "本文"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let bad = c["id"].as_i64().expect("id");
    for cid in [good, bad] {
        api.send(cid).await;
        hikyaku_api::expansion::expand(&api.state, cid)
            .await
            .expect("expand");
    }
    assert!(STANDARD_SITES.contains("[sites.docomo]\n"));
    let sites = format!(
        "{}\n[[dkim]]\ndomain = \"a.test\"\nselector = \"ed2026\"\nalgorithm = \"ed25519-sha256\"\nkey_file = {:?}\n",
        STANDARD_SITES.replace("[sites.docomo]\n", "[sites.docomo]\ncharset = \"iso-2022-jp\"\n"),
        testdata("rfc8463-ed25519.pem").display().to_string()
    );
    let engine = world.engine(world.config("", &sites));
    let mut con = world.redis.con().await;
    let events = hikyaku_tests::queue::wait_events(&con, 2, Duration::from_secs(30)).await;
    engine.stop().await.expect("engine stops cleanly");

    let failed = events
        .iter()
        .find(|e| e.id.campaign == bad as u64)
        .expect("the emoji campaign's event");
    assert_eq!(failed.status.as_str(), "bounced", "{failed:?}");
    assert!(
        failed.text.contains("'🎉'") && failed.text.contains("ISO-2022-JP"),
        "the error names the character: {failed:?}"
    );
    let sent = world
        .sink
        .stats()
        .captured()
        .into_iter()
        .find(|m| m.recipients == ["hanako@docomo.test"])
        .expect("the Japanese message");
    assert!(sent.content.is_ascii(), "7bit on the wire");
    let text = String::from_utf8(sent.content.clone()).expect("ascii");
    assert!(
        text.contains("Content-Type: text/plain; charset=ISO-2022-JP\r\n"),
        "{text}"
    );
    assert!(text.contains("Content-Transfer-Encoding: 7bit\r\n"));
    // Subject and sender name decode to the original (the emoji of the merge value → 〓).
    assert_eq!(
        decode_words(&header(&text, "Subject").expect("Subject")),
        "【お知らせ】花子〓様、今週の新商品のご案内です"
    );
    let from = header(&text, "From").expect("From");
    let (name, addr) = from.rsplit_once(' ').expect("name and address");
    assert_eq!(decode_words(name), "飛脚ストア");
    assert_eq!(addr, "<n@a.test>");
    // The body decodes back to the filled template.
    let raw_body = &sent.content[text.find("\r\n\r\n").expect("body") + 4..];
    let (decoded, _, bad_bytes) = encoding_rs::ISO_2022_JP.decode(raw_body);
    assert!(!bad_bytes);
    assert_eq!(
        decoded,
        "花子〓様\r\n\r\nいつもご利用ありがとうございます。\r\n.今週のおすすめはこちら。\r\n"
    );
    // Signed like every other message.
    let (ok, out) = dkimpy(&sent.content, &[("ed2026", ED25519_RECORD)]);
    assert!(ok, "{out}");
    let _ = &mut con;
}

/// A campaign can choose ISO-2022-JP for carrier recipients itself: the docomo.ne.jp address
/// gets a 7bit ISO-2022-JP message though its site policy says nothing, the Gmail address the
/// UTF-8 message (base64: the text is mostly Japanese). Templates it cannot carry, or an
/// unknown charset, are refused at creation with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_mobile_charset_applies_to_carrier_recipients_only() {
    let zone = format!(
        "{}docomo.ne.jp MX 10 mfsmax.docomo.test\n",
        hikyaku_tests::world::STANDARD_ZONE
    );
    let world = World::start(&zone, hikyaku_tests::world::standard_sinks()).await;
    let api = TestApi::start(&world.redis).await;
    let l = api
        .list_with_csv("email,first_name\nhanako@docomo.ne.jp,花子\ntaro@gmail.test,太郎\n")
        .await;
    for (body, field) in [
        (
            json!({"subject": "🎉 セール", "text_body": "本文", "mobile_charset": "iso-2022-jp"}),
            "subject",
        ),
        (
            json!({"subject": "s", "text_body": "本文", "mobile_charset": "shift_jis"}),
            "mobile_charset",
        ),
    ] {
        let mut c = json!({"name": "x", "list_id": l, "from_addr": "n@a.test"});
        c.as_object_mut()
            .expect("object")
            .extend(body.as_object().expect("object").clone());
        let (s, problem) = api.json(Method::POST, "/v1/campaigns", c).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let body = "{{first_name}}様\n今週のお知らせです。\n";
    let (s, c) = api
        .json(
            Method::POST,
            "/v1/campaigns",
            json!({"name": "jp", "list_id": l, "from_addr": "n@a.test", "subject": "お知らせ",
                   "text_body": body, "mobile_charset": "iso-2022-jp"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["mobile_charset"], "iso-2022-jp");
    let cid = c["id"].as_i64().expect("id");
    api.send(cid).await;
    hikyaku_api::expansion::expand(&api.state, cid)
        .await
        .expect("expand");
    let engine = world.engine(world.config("", STANDARD_SITES));
    let con = world.redis.con().await;
    let events = hikyaku_tests::queue::wait_events(&con, 2, Duration::from_secs(30)).await;
    engine.stop().await.expect("engine stops cleanly");
    assert!(
        events.iter().all(|e| e.status.as_str() == "delivered"),
        "{events:?}"
    );
    let captured = world.sink.stats().captured();
    let message = |rcpt: &str| {
        let m = captured
            .iter()
            .find(|m| m.recipients == [rcpt])
            .expect("captured");
        String::from_utf8(m.content.clone()).expect("7bit on the wire")
    };
    let docomo = message("hanako@docomo.ne.jp");
    assert!(docomo.contains("charset=ISO-2022-JP"), "{docomo}");
    let raw_body = &docomo.as_bytes()[docomo.find("\r\n\r\n").expect("body") + 4..];
    let (decoded, _, bad) = encoding_rs::ISO_2022_JP.decode(raw_body);
    assert!(!bad);
    assert_eq!(decoded, "花子様\r\n今週のお知らせです。\r\n");
    let gmail = message("taro@gmail.test");
    assert!(!gmail.contains("ISO-2022-JP"), "{gmail}");
    assert!(
        gmail.contains("Content-Transfer-Encoding: base64"),
        "{gmail}"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(gmail.as_bytes())
        .expect("parses");
    assert_eq!(
        parsed.body_text(0).expect("text").replace("\r\n", "\n"),
        "太郎様\n今週のお知らせです。\n"
    );
}
