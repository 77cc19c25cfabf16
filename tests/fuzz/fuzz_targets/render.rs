//! The template renderer: customer templates (subject, bodies, sender name) and per-recipient
//! merge values, both hostile. Never panics, and whatever goes in, the message that comes out
//! - has CRLF line ends only (no bare CR or LF that a receiver could read as a line end),
//!   no NUL, and ends in CRLF;
//! - in `DATA` framing has no line that is a lone `.` (it cannot end the data early and smuggle
//!   a second message into the session);
//! - has as many header fields as the same campaign rendered with empty merge values (merge
//!   values cannot add a header);
//! - is bounded by the templates plus each value once per placeholder (times what encoding
//!   can add): values are inserted as they are and never expanded again, so a value that
//!   names another field cannot multiply the message.
#![no_main]

use hikyaku_engine::message::dkim::DkimKeys;
use hikyaku_engine::message::jis::Charset;
use hikyaku_engine::message::{Campaign, Framing};
use hikyaku_queue_schema::{CampaignSnapshot, Job, JobId};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    subject: String,
    text_body: String,
    html_body: String,
    from_name: String,
    a: String,
    b: String,
    data: bool,
    mobile: bool,
}

fn render(c: &Campaign, values: [&str; 2], input: &Input) -> Vec<u8> {
    let job = Job {
        id: JobId {
            campaign: 1,
            seq: 2,
        },
        attempt: 0,
        queued_ms: 0,
        expires_ms: 0,
        priority: 0,
        rcpt: if input.mobile {
            "taro@docomo.ne.jp".into()
        } else {
            "taro@example.test".into()
        },
        fields: values.iter().map(|v| (*v).to_owned()).collect(),
        last: None,
    };
    let framing = if input.data {
        Framing::Data
    } else {
        Framing::Bdat
    };
    let charset = if input.mobile {
        Charset::Iso2022Jp
    } else {
        Charset::Utf8
    };
    let mut out = Vec::new();
    c.render(&job, "Date: x\r\n", framing, charset, &mut out);
    out
}

/// Header fields (lines before the first empty one that do not continue a field).
fn header_fields(msg: &[u8]) -> usize {
    msg.split(|&b| b == b'\n')
        .take_while(|l| *l != b"\r")
        .filter(|l| !l.starts_with(b" ") && !l.starts_with(b"\t"))
        .count()
}

fuzz_target!(|input: Input| {
    let snap = CampaignSnapshot {
        id: 1,
        tenant: "t".into(),
        from_name: input.from_name.clone(),
        from_addr: "news@example.test".into(),
        reply_to: String::new(),
        subject: input.subject.clone(),
        text_body: input.text_body.clone(),
        html_body: input.html_body.clone(),
        field_names: vec!["a".into(), "b".into()],
        return_path: "bounce@example.test".into(),
        message_id_domain: "example.test".into(),
        headers: vec!["X-Tag: {{b}}".into()],
        verp_domain: String::new(),
        mobile_charset: String::new(),
        id_key: String::new(),
    };
    let Ok(c) = Campaign::build(&snap, &DkimKeys::default()) else {
        return;
    };
    let msg = render(&c, [&input.a, &input.b], &input);
    assert!(msg.ends_with(b"\r\n"), "ends in CRLF");
    assert!(!msg.contains(&0), "no NUL");
    for (i, &b) in msg.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && msg[i - 1] == b'\r', "bare LF at {i}"),
            b'\r' => assert!(msg.get(i + 1) == Some(&b'\n'), "bare CR at {i}"),
            _ => {}
        }
    }
    if input.data {
        assert!(
            !msg.starts_with(b".\r\n") && !msg.windows(5).any(|w| w == b"\r\n.\r\n"),
            "a lone dot line"
        );
    }
    let templates = [
        &input.subject,
        &input.text_body,
        &input.html_body,
        &input.from_name,
    ];
    let occurrences = |p: &str| templates.iter().map(|t| t.matches(p).count()).sum::<usize>();
    let templates_len: usize = templates.iter().map(|t| t.len()).sum();
    // `X-Tag: {{b}}` adds one placeholder of b.
    let bound = templates_len
        + occurrences("{{a}}") * input.a.len()
        + (occurrences("{{b}}") + 1) * input.b.len();
    // Quoted-printable triples a byte, ISO-2022-JP escapes and RFC 2047 words add less than
    // that again; headers, MIME parts and boundaries are the constant.
    assert!(
        msg.len() <= 8 * bound + 8192,
        "message of {} bytes from templates of {templates_len} and values of {} + {}",
        msg.len(),
        input.a.len(),
        input.b.len()
    );
    let baseline = render(&c, ["", ""], &input);
    assert_eq!(
        header_fields(&msg),
        header_fields(&baseline),
        "merge values changed the header count"
    );
});
