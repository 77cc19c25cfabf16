use super::*;

use hikyaku_queue_schema::{CampaignSnapshot, Job};

use super::build::*;
use super::template::*;
use super::writers::*;
use crate::message::dkim::DkimKeys;
use crate::message::jis::Charset;
use hikyaku_queue_schema::JobId;

#[test]
fn redis_errors_that_pass_make_the_campaign_unavailable_not_unrenderable() {
    use redis::{ErrorKind, RedisError, ServerErrorKind};
    let server = |kind| RedisError::from((ErrorKind::Server(kind), "reply"));
    let passing = [
        server(ServerErrorKind::BusyLoading),
        server(ServerErrorKind::TryAgain),
        server(ServerErrorKind::ClusterDown),
        server(ServerErrorKind::MasterDown),
        RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    ];
    for e in &passing {
        assert!(
            matches!(
                RenderError::reading(7, e),
                RenderError::Unavailable { id: 7, .. }
            ),
            "{e}"
        );
    }
    for e in [
        server(ServerErrorKind::NoPerm),
        server(ServerErrorKind::ResponseError),
    ] {
        assert!(
            matches!(
                RenderError::reading(7, &e),
                RenderError::Redis { id: 7, .. }
            ),
            "{e}"
        );
    }
}

fn snapshot() -> CampaignSnapshot {
    CampaignSnapshot {
        id: 42,
        tenant: "acme".into(),
        from_name: "Acme News".into(),
        from_addr: "news@acme.test".into(),
        reply_to: "help@acme.test".into(),
        subject: "Hello {{first_name}}".into(),
        text_body: "Hi {{first_name}},\n.{{plan}} is yours.\nBye {{unknown}}\n".into(),
        html_body: "<p>Hi {{first_name}}</p>".into(),
        field_names: vec!["first_name".into(), "plan".into()],
        return_path: "bounce@acme.test".into(),
        message_id_domain: "acme.test".into(),
        headers: Vec::new(),
        verp_domain: String::new(),
        mobile_charset: String::new(),
        id_key: String::new(),
    }
}

/// `c`'s message for `j` as text (Date: x).
fn rendered(c: &Campaign, j: &Job, framing: Framing) -> String {
    let mut out = Vec::new();
    c.render(j, "Date: x\r\n", framing, Charset::Utf8, &mut out);
    String::from_utf8(out).expect("utf8")
}

fn job(fields: &[&str]) -> Job {
    Job {
        id: JobId {
            campaign: 42,
            seq: 7,
        },
        attempt: 0,
        queued_ms: 0,
        expires_ms: 0,
        priority: 0,
        rcpt: "taro@example.test".into(),
        fields: fields.iter().map(|s| (*s).to_owned()).collect(),
        last: None,
    }
}

/// The decoded text part of a rendered message (line ends as LF).
fn text_part(message: &str) -> String {
    let m = mail_parser::MessageParser::default()
        .parse(message.as_bytes())
        .expect("parses");
    m.body_text(0).expect("text part").replace("\r\n", "\n")
}

#[test]
fn merge_values_are_inserted_as_they_are_never_expanded_again() {
    let mut s = snapshot();
    s.subject = "{{a}} / {{b}} / {{c}}".into();
    s.text_body = "{{a}}|{{b}}|{{c}}\n".into();
    s.html_body = String::new();
    s.field_names = vec!["a".into(), "b".into(), "c".into(), "unsubscribe_url".into()];
    s.headers = vec!["X-Tag: {{a}}".into()];
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    // Each value names the next field: a pass per field would expand them in chain.
    let j = job(&["{{b}}", "{{c}}", "{{unsubscribe_url}}", "https://u.test/x"]);
    let m = rendered(&c, &j, Framing::Bdat);
    assert!(
        m.contains("Subject: {{b}} / {{c}} / {{unsubscribe_url}}\r\n"),
        "{m}"
    );
    assert!(m.contains("X-Tag: {{b}}\r\n"), "{m}");
    assert!(!m.contains("https://u.test/x"), "{m}");
    assert_eq!(text_part(&m).trim_end(), "{{b}}|{{c}}|{{unsubscribe_url}}");
    // ISO-2022-JP messages are built from the templates with the same one-pass fill.
    let mut out = Vec::new();
    c.render(
        &j,
        "Date: x\r\n",
        Framing::Bdat,
        Charset::Iso2022Jp,
        &mut out,
    );
    let jis = String::from_utf8(out).expect("7bit");
    assert!(jis.contains("{{b}} / {{c}} / {{unsubscribe_url}}"), "{jis}");
    assert!(!jis.contains("https://u.test/x"), "{jis}");
    assert_eq!(
        fill("{{{a}}}{{x}}{{a", &["a".into()], &["{{a}}".into()]),
        "{{{a}}}{{x}}{{a"
    );
}

#[test]
fn the_size_of_a_message_is_bounded_below_before_it_is_built() {
    let mut s = snapshot();
    s.text_body = "{{a}}\n".repeat(1000);
    s.html_body = "<p>{{a}}</p>".into();
    s.subject = "{{a}}".into();
    s.field_names = vec!["a".into()];
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    for value in [
        "x".repeat(2000),
        "日本".repeat(300),
        "a\r\nb".into(),
        String::new(),
    ] {
        let j = job(&[&value]);
        for charset in [Charset::Utf8, Charset::Iso2022Jp] {
            let least = c.min_len(&j, charset);
            let mut out = Vec::new();
            c.render(&j, "Date: x\r\n", Framing::Bdat, charset, &mut out);
            assert!(
                least <= out.len() as u64,
                "a lower bound: {least} <= {} ({charset:?})",
                out.len()
            );
        }
    }
    let big = job(&[&"x".repeat(2000)]);
    assert!(c.min_len(&big, Charset::Utf8) >= 1001 * 2000);
}

#[test]
fn ascii_values_keep_the_7bit_form_others_get_quoted_printable() {
    let c = Campaign::build(&snapshot(), &DkimKeys::default()).expect("builds");
    let ascii = rendered(&c, &job(&["Taro", "gold"]), Framing::Data);
    assert!(ascii.contains("Hi Taro,\r\n"), "{ascii}");
    assert!(ascii.contains("Content-Transfer-Encoding: 7bit"));
    assert!(!ascii.contains("quoted-printable"));
    assert!(
        ascii.contains("\r\n..gold is yours."),
        "a dot at line start is stuffed"
    );

    for values in [
        ["山田 太郎", "gold"],
        ["Taro", &"long ".repeat(300)],
        ["é", ".\r\n. ="],
    ] {
        let j = job(&values);
        let data = rendered(&c, &j, Framing::Data);
        assert!(
            data.contains("Content-Transfer-Encoding: quoted-printable"),
            "{data}"
        );
        assert!(data.is_ascii(), "no 8-bit octet travels");
        for line in data.split("\r\n") {
            assert!(line.len() <= 998, "{line}");
            assert!(line != ".", "nothing ends DATA early");
        }
        let mut raw = Vec::new();
        c.render(&j, "Date: x\r\n", Framing::Bdat, Charset::Utf8, &mut raw);
        assert_eq!(crate::smtp::dotstuff::stuff(&raw), data.as_bytes());
        let plan = values[1].replace(['\r', '\n'], "");
        assert_eq!(
            text_part(&data),
            format!(
                "Hi {},\n.{plan} is yours.\nBye {{{{unknown}}}}\n",
                values[0]
            )
        );
    }
}

#[test]
fn control_characters_cannot_forge_part_markers_or_headers() {
    let mut s = snapshot();
    s.subject = format!("Hi \x01[{}Reply-To: evil@x.test", "x".repeat(75));
    s.from_name = "A\x01[B".into();
    s.text_body = "Hi\n\x01].\nMAIL FROM:<x@y>\n\x01[\n".into();
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    for j in [job(&["Taro", "gold"]), job(&["太郎", "gold"])] {
        let text = rendered(&c, &j, Framing::Data);
        assert!(!text.split("\r\n").any(|l| l == "."), "{text}");
        assert!(!text.contains("\r\nReply-To: evil"), "{text}");
        assert!(!text.contains('\x01'), "{text}");
        assert!(text_part(&text).contains("\x01].\nMAIL FROM"), "{text}");
    }
    // Mostly Japanese: base64, and the bytes are content there too.
    s.text_body = "日本語の本文です。\x01]\x01(。\n".into();
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    let text = rendered(&c, &job(&["Taro", "gold"]), Framing::Data);
    assert!(text.contains("Content-Transfer-Encoding: base64"), "{text}");
    assert_eq!(text_part(&text), "日本語の本文です。\x01]\x01(。\n");
}

#[test]
fn non_ascii_templates_are_base64_when_mostly_non_ascii_else_quoted_printable() {
    let mut s = snapshot();
    s.text_body = "こんにちは {{first_name}} さん\n.今週のお知らせ。\n".repeat(3);
    s.html_body = "<p>static ASCII</p>".into();
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    let j = job(&["Taro", "gold"]);
    let text = rendered(&c, &j, Framing::Data);
    assert!(text.contains("Content-Transfer-Encoding: base64"), "{text}");
    assert!(!text.contains("quoted-printable"), "{text}");
    assert!(
        text.contains("<p>static ASCII</p>"),
        "the static part stays 7bit"
    );
    assert!(text.is_ascii());
    assert!(text
        .split("\r\n")
        .all(|l| l.len() <= 998 && !l.starts_with('.')));
    assert_eq!(
        text_part(&text),
        "こんにちは Taro さん\n.今週のお知らせ。\n".repeat(3)
    );
    let mut raw = Vec::new();
    c.render(&j, "Date: x\r\n", Framing::Bdat, Charset::Utf8, &mut raw);
    assert_eq!(crate::smtp::dotstuff::stuff(&raw), text.as_bytes());

    // Mostly ASCII with some Japanese: quoted-printable.
    s.text_body = "Weekly news for {{first_name}}: 今週 and more, as every week.\n".into();
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    let text = rendered(&c, &j, Framing::Data);
    assert!(
        text.contains("Content-Transfer-Encoding: quoted-printable"),
        "{text}"
    );
    assert_eq!(
        text_part(&text),
        "Weekly news for Taro: 今週 and more, as every week.\n"
    );
}

#[test]
fn renders_fields_headers_and_mime() {
    let c = Campaign::build(&snapshot(), &DkimKeys::default()).expect("builds");
    let text = rendered(&c, &job(&["太郎", "gold"]), Framing::Data);
    assert!(text
        .starts_with("Date: x\r\nMessage-ID: <hk.42.7@acme.test>\r\nTo: <taro@example.test>\r\n"));
    assert!(
        text.contains("Subject: Hello =?utf-8?b?"),
        "non-ASCII subject is RFC 2047 encoded: {text}"
    );
    assert!(text_part(&text).contains("Hi 太郎,\n"));
    assert!(text.contains("{{unknown}}"), "unknown names stay literal");
    assert!(text.contains("multipart/alternative"));
    assert!(
        text.contains("From: \"Acme News\" <news@acme.test>")
            || text.contains("From: Acme News <news@acme.test>")
    );
    assert!(!text.contains("placeholder.invalid"));
    assert_eq!(text.matches("Date:").count(), 1);
    assert!(text.ends_with("\r\n"));
    assert!(!text.contains("\r\n.\r\n"));
}

#[test]
fn bdat_framing_is_the_data_framing_unstuffed() {
    let c = Campaign::build(&snapshot(), &DkimKeys::default()).expect("builds");
    let j = job(&["Taro", "gold"]);
    let (mut data, mut raw) = (Vec::new(), Vec::new());
    c.render(&j, "Date: x\r\n", Framing::Data, Charset::Utf8, &mut data);
    c.render(&j, "Date: x\r\n", Framing::Bdat, Charset::Utf8, &mut raw);
    let raw_text = String::from_utf8(raw.clone()).expect("utf8");
    assert!(raw_text.contains("\r\n.gold is yours."), "{raw_text}");
    assert!(!raw_text.contains("\r\n..gold"));
    // Stuffing the raw form gives exactly the DATA form.
    assert_eq!(crate::smtp::dotstuff::stuff(&raw), data);
    assert!(raw.ends_with(b"\r\n"));
}

#[test]
fn merge_values_cannot_inject_headers_or_end_data() {
    let c = Campaign::build(&snapshot(), &DkimKeys::default()).expect("builds");
    let text = rendered(
        &c,
        &job(&["x\r\nBcc: victim@evil.test", ".\r\nMAIL FROM:<a>"]),
        Framing::Data,
    );
    assert!(!text.contains("\r\nBcc:"));
    assert!(!text.contains("\r\n.\r\n"));
    assert!(!text.contains("\r\nMAIL FROM"));
}

#[test]
fn dots_that_reach_a_line_start_through_fields_are_stuffed() {
    let mut s = snapshot();
    s.text_body = "{{first_name}}.\n{{plan}}\nend\n".into();
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    let j = job(&["", "\r."]);
    let (mut data, mut raw) = (Vec::new(), Vec::new());
    c.render(&j, "Date: x\r\n", Framing::Data, Charset::Utf8, &mut data);
    c.render(&j, "Date: x\r\n", Framing::Bdat, Charset::Utf8, &mut raw);
    let text = String::from_utf8(data.clone()).expect("utf8");
    assert!(
        !text.contains("\r\n.\r\n"),
        "no line ends DATA early: {text:?}"
    );
    assert_eq!(crate::smtp::dotstuff::stuff(&raw), data);
}

#[test]
fn static_subject_is_in_the_skeleton_and_bad_from_is_an_error() {
    let mut s = snapshot();
    s.subject = "Weekly news".into();
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    let text = rendered(&c, &job(&["a", "b"]), Framing::Data);
    assert_eq!(text.matches("Subject: Weekly news").count(), 1);
    s.from_addr = "not an address".into();
    assert!(matches!(
        Campaign::build(&s, &DkimKeys::default()),
        Err(RenderError::Invalid { .. })
    ));
}

#[test]
fn extra_headers_carry_per_recipient_values_safely() {
    let mut s = snapshot();
    s.field_names.push("unsubscribe_url".into());
    s.headers = vec![
        "List-Unsubscribe: <{{unsubscribe_url}}>".into(),
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click".into(),
        "Feedback-ID: 42:acme:newsletter:hikyaku".into(),
    ];
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    assert!(!c.signed());
    let text = rendered(
        &c,
        &job(&["a", "b", "https://u.test/u/t1\r\nBcc: x@evil.test"]),
        Framing::Bdat,
    );
    assert!(
        text.contains("\r\nList-Unsubscribe: <https://u.test/u/t1Bcc: x@evil.test>\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    assert!(text.contains("\r\nFeedback-ID: 42:acme:newsletter:hikyaku\r\n"));
    assert!(!text.contains("\r\nBcc:"));
    let head = &text[..text.find("\r\n\r\n").expect("header end")];
    assert!(
        head.contains("List-Unsubscribe:"),
        "extra headers are in the header"
    );

    for bad in [
        "No-Colon",
        "X-Bad: a\r\nBcc: b",
        "X-Kana: カナ",
        ": empty name",
    ] {
        s.headers = vec![bad.into()];
        assert!(
            matches!(
                Campaign::build(&s, &DkimKeys::default()),
                Err(RenderError::Invalid { .. })
            ),
            "{bad:?} refused"
        );
    }
}

#[test]
fn signed_campaigns_put_one_signature_per_key_first() {
    let ed = crate::message::dkim::DkimKey::from_pem(
        "acme.test",
        "ed",
        crate::message::dkim::Algorithm::Ed25519Sha256,
        include_bytes!("dkim/testdata/rfc8463-ed25519.pem"),
        "ed",
    )
    .expect("key");
    let rsa = crate::message::dkim::DkimKey::from_pem(
        "acme.test",
        "rsa",
        crate::message::dkim::Algorithm::RsaSha256,
        include_bytes!("dkim/testdata/rsa2048.pem"),
        "rsa",
    )
    .expect("key");
    let keys = DkimKeys::from_keys(vec![rsa, ed]);
    let c = Campaign::build(&snapshot(), &keys).expect("builds");
    assert!(c.signed());
    let text = rendered(&c, &job(&["Taro", "gold"]), Framing::Data);
    assert!(text.starts_with("DKIM-Signature:"), "{text}");
    assert_eq!(text.matches("DKIM-Signature:").count(), 2);
    assert!(text.contains("a=rsa-sha256") && text.contains("a=ed25519-sha256"));
    assert!(
        text.contains("\r\n..gold is yours."),
        "DATA framing still stuffs"
    );
    // Another From domain: unsigned.
    let mut s = snapshot();
    s.from_addr = "news@elsewhere.test".into();
    assert!(!Campaign::build(&s, &keys).expect("builds").signed());
}

fn test_keys() -> DkimKeys {
    let key = |sel: &str, alg, pem: &[u8]| {
        crate::message::dkim::DkimKey::from_pem("acme.test", sel, alg, pem, sel).expect("key")
    };
    DkimKeys::from_keys(vec![
        key(
            "rsa",
            crate::message::dkim::Algorithm::RsaSha256,
            include_bytes!("dkim/testdata/rsa2048.pem"),
        ),
        key(
            "ed",
            crate::message::dkim::Algorithm::Ed25519Sha256,
            include_bytes!("dkim/testdata/rfc8463-ed25519.pem"),
        ),
    ])
}

/// Every `bh=` value of a signed message.
fn body_hashes(message: &str) -> Vec<String> {
    message
        .match_indices("bh=")
        .map(|(i, _)| {
            message[i + 3..]
                .split(';')
                .next()
                .expect("tag")
                .replace(['\r', '\n', ' ', '\t'], "")
        })
        .collect()
}

#[test]
fn a_body_the_same_for_everyone_is_hashed_once_and_the_hash_is_right() {
    let mut s = snapshot();
    s.text_body = "Static news for everyone — 全員に同じ本文.\n".into();
    // One part: a multipart boundary is new with each build, and the check below
    // compares with a second build.
    s.html_body = String::new();
    let keys = test_keys();
    let c = Campaign::build(&s, &keys).expect("builds");
    assert!(c.body_hash.as_ref().is_some_and(|b| b.0.get().is_none()));
    let first = rendered(&c, &job(&["a", "b"]), Framing::Bdat);
    assert!(
        c.body_hash.as_ref().is_some_and(|b| b.0.get().is_some()),
        "kept after the first message"
    );
    let mut other = job(&["c", "d"]);
    other.id.seq = 8;
    other.rcpt = "jiro@example.test".into();
    let second = rendered(&c, &other, Framing::Bdat);
    // A fresh campaign computes the hash of the second message itself.
    let fresh = Campaign::build(&s, &keys).expect("builds");
    let computed = rendered(&fresh, &other, Framing::Bdat);
    let (a, b, want) = (
        body_hashes(&first),
        body_hashes(&second),
        body_hashes(&computed),
    );
    assert_eq!(want.len(), 2, "{computed}");
    assert_eq!(b, want, "the reused hash is the body's");
    assert_eq!(a, want);
    assert_ne!(first, second, "headers (and signatures) still differ");

    // Bodies with merge fields are hashed per message.
    let c = Campaign::build(&snapshot(), &keys).expect("builds");
    assert!(c.body_hash.is_none());
    let one = body_hashes(&rendered(&c, &job(&["Taro", "gold"]), Framing::Bdat));
    let two = body_hashes(&rendered(&c, &job(&["Jiro", "gold"]), Framing::Bdat));
    assert_ne!(one, two);
}

#[test]
fn envelope_sender_is_the_jobs_verp_address_when_the_campaign_has_a_bounce_domain() {
    use hikyaku_queue_schema::{ids, verp};
    let mut s = snapshot();
    let plain = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    let mut buf = String::new();
    assert_eq!(plain.envelope_from(&job(&[]), &mut buf), "bounce@acme.test");
    s.verp_domain = "bounces.acme.test".into();
    let untagged = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    assert_eq!(
        untagged.envelope_from(&job(&[]), &mut buf),
        "b-42-7@bounces.acme.test",
        "a snapshot without a key keeps the old form"
    );
    s.id_key = ids::campaign_key(b"token secret", 42);
    let verp = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    let from = verp.envelope_from(&job(&[]), &mut buf).to_owned();
    let (c, seq, tag) = verp::parse(&from, "bounces.acme.test").expect("a VERP address");
    assert_eq!((c, seq), (42, 7));
    assert!(ids::verify(b"token secret", 42, 7, tag), "{from}");
    // The Message-ID carries the same signed identity.
    let m = rendered(&verp, &job(&["Taro", "gold"]), Framing::Bdat);
    let id = m
        .split("Message-ID: <")
        .nth(1)
        .and_then(|r| r.split('>').next())
        .expect("a Message-ID");
    assert_eq!(ids::parse_message_id(id), Some((42, 7, tag)), "{id}");
}

/// Found by the `render` fuzz target: NUL in templates reached ISO-2022-JP messages.
#[test]
fn nul_and_controls_in_templates_never_reach_a_message() {
    let mut s = snapshot();
    s.subject = "\0a\rb".into();
    s.from_name = "\0N\nBcc: x@y.test".into();
    s.html_body = "\0<p>x</p>".into();
    s.text_body = "t\0ext".into();
    let c = Campaign::build(&s, &DkimKeys::default()).expect("builds");
    for charset in [Charset::Utf8, Charset::Iso2022Jp] {
        let mut j = job(&["A", "B"]);
        j.rcpt = "taro@docomo.ne.jp".into();
        let mut out = Vec::new();
        c.render(&j, "Date: x\r\n", Framing::Data, charset, &mut out);
        assert!(!out.contains(&0), "{charset:?}");
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("\r\nBcc:"), "{charset:?}: {text}");
    }
}

#[test]
fn date_line_is_a_header() {
    let mut d = DateLine::default();
    let line = d.get().to_owned();
    assert!(
        line.starts_with("Date: ") && line.ends_with("\r\n"),
        "{line}"
    );
}
