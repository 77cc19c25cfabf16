//! Building each recipient's message from the campaign snapshot.
//!
//! Per campaign, once: lettre composes the message (MIME structure, RFC 2047 headers, address
//! syntax) with placeholders, the result is dot-stuffed and cut into a skeleton of literal
//! segments and merge-field slots. Per recipient: the skeleton is copied with the slots filled,
//! behind a few per-message headers (Date, Message-ID, To, and Subject when it has merge
//! fields, and the snapshot's extra header lines — List-Unsubscribe, Feedback-ID … — with
//! their per-recipient values). That is one memcpy-like pass per message instead of a MIME
//! build. Bodies are 7bit when the templates and the job's values allow it, else base64 when
//! the text is mostly non-ASCII (filled, then encoded per message) or quoted-printable
//! ([`crate::qp`], written around the values as they are spliced in): lines stay within RFC
//! 5322's 998 bytes and no 8-bit octet travels. A campaign whose From domain has DKIM keys ([`crate::dkim`]) is rendered raw into a
//! scratch buffer, signed with every key, and written behind its `DKIM-Signature` lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hikyaku_queue_schema::keys::{SNAPSHOT_FIELD, STATE_FIELD};
use hikyaku_queue_schema::Redis;
use hikyaku_queue_schema::{CampaignSnapshot, Job, Keys};
use lettre::message::header::{ContentTransferEncoding, ContentType, Date, Headers, Subject};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::Message;

use crate::campaigns::{CampaignStates, RunState};
use crate::clock;
use crate::dkim::{BodyHash, DkimKey, DkimKeys};
use crate::jis::Charset;
use crate::qp::QpWriter;
use crate::smtp::dotstuff;

/// Why a campaign cannot be rendered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// No snapshot in Redis for the campaign.
    #[error("campaign {0} has no snapshot in Redis")]
    Missing(u64),
    /// Redis answered the read with an error that asking again will not change (a wrong
    /// type, a refused command).
    #[error("reading campaign {id}: {error}")]
    Redis {
        /// Campaign.
        id: u64,
        /// The error.
        error: String,
    },
    /// Redis could not be asked for now: the connection is down or being re-made, the server
    /// is loading its data after a restart, a cluster is failing over. Nothing is wrong with
    /// the job: it goes back uncharged ([`crate::report::Reporter::store_unavailable`]).
    #[error("reading campaign {id}: Redis unavailable: {error}")]
    Unavailable {
        /// Campaign.
        id: u64,
        /// The error.
        error: String,
    },
    /// A newer release wrote the snapshot for its own nodes
    /// ([`hikyaku_queue_schema::DecodeError::TooNew`]): the job waits for one of them.
    #[error("campaign {id}: snapshot version {version} is for a newer release")]
    TooNew {
        /// Campaign.
        id: u64,
        /// The snapshot's version.
        version: u8,
    },
    /// The snapshot is malformed or its content cannot be encoded.
    #[error("campaign {id}: {error}")]
    Invalid {
        /// Campaign.
        id: u64,
        /// What is wrong.
        error: String,
    },
}

impl RenderError {
    /// The error of reading campaign `id` from Redis: [`RenderError::Unavailable`] when asking
    /// again later can succeed (the client would reconnect, wait or retry: the redis crate's
    /// own [`redis::RetryMethod`]), else [`RenderError::Redis`].
    pub fn reading(id: u64, e: &redis::RedisError) -> Self {
        let error = e.to_string();
        if matches!(e.retry_method(), redis::RetryMethod::NoRetry) {
            Self::Redis { id, error }
        } else {
            Self::Unavailable { id, error }
        }
    }
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(std::ops::Range<usize>),
    Field(usize),
    /// A quoted-printable body starts: what follows is escaped ([`crate::qp`]) until
    /// [`Segment::QpEnd`].
    QpStart,
    /// The quoted-printable body ends.
    QpEnd,
    /// The N-th base64 body of the message: its template is [`Variant::base64`]`[N]`, filled
    /// and encoded per message.
    Base64(usize),
}

/// Marks where a quoted-printable body starts and ends in the composed message. No other 0x01
/// can be there: [`clean_header`] drops control characters from header text, a body holding
/// one is quoted-printable (which escapes it) or base64 (kept apart), and the markers are
/// counted after composing.
const QP_START: &[u8] = b"\x01[";
const QP_END: &[u8] = b"\x01]";
/// Stands for a whole base64 body in the composed message.
const BASE64_BODY: &[u8] = b"\x01(";

/// The largest message the engine builds, whatever the destination announces: a campaign whose
/// merge values would make a message larger is refused for that recipient (`552 5.3.4`, not
/// sent) before it is built. 64 MiB is beyond what any mailbox provider takes.
pub const MAX_MESSAGE_BYTES: u64 = 64 << 20;

/// The size of a skeleton before the job's values: its literal bytes and how many times each
/// merge field appears in it.
#[derive(Debug, Clone, Default)]
struct Size {
    literal: usize,
    /// Occurrences per field index.
    fields: Vec<usize>,
}

impl Size {
    fn of(segments: &[Segment], fields: usize, base64: &[Skeleton]) -> Self {
        let mut size = Size {
            literal: 0,
            fields: vec![0; fields],
        };
        for seg in segments {
            match seg {
                Segment::Literal(r) => size.literal += r.len(),
                Segment::Field(i) => {
                    if let Some(n) = size.fields.get_mut(*i) {
                        *n += 1;
                    }
                }
                Segment::Base64(n) => {
                    if let Some(t) = base64.get(*n) {
                        size.add(&Size::of(&t.segments, fields, &[]));
                    }
                }
                Segment::QpStart | Segment::QpEnd => {}
            }
        }
        size
    }

    fn add(&mut self, other: &Size) {
        self.literal += other.literal;
        for (a, b) in self.fields.iter_mut().zip(&other.fields) {
            *a += b;
        }
    }

    /// The bytes of the filled text: literal bytes plus each value once per occurrence
    /// (`len`: a value's length as written).
    fn filled(&self, values: &[String], len: impl Fn(&str) -> usize) -> u64 {
        let values: u64 = self
            .fields
            .iter()
            .zip(values)
            .filter(|(&n, _)| n > 0)
            .map(|(&n, v)| (n as u64).saturating_mul(len(v) as u64))
            .fold(0, u64::saturating_add);
        (self.literal as u64).saturating_add(values)
    }
}

/// How the content travels: after `DATA` (dot-stuffed, ended by the caller's `.`) or in a
/// `BDAT` chunk (octets as they are, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Dot-stuffed for `DATA`.
    Data,
    /// Raw for `BDAT`.
    Bdat,
}

/// The campaign's message in both framings.
#[derive(Debug)]
struct Variant {
    data: Skeleton,
    bdat: Skeleton,
    /// Templates (CRLF, raw) of the base64 bodies, in message order.
    base64: Vec<Skeleton>,
    /// The raw (`BDAT`) form's size before values, base64 templates included unencoded,
    /// with the per-message header lines around it.
    size: Size,
}

/// The campaign's message in one framing, cut at its merge fields.
#[derive(Debug)]
struct Skeleton {
    text: Vec<u8>,
    segments: Vec<Segment>,
}

impl Skeleton {
    fn new(text: Vec<u8>, names: &[String]) -> Self {
        let segments = split_fields(&text, names, true);
        Skeleton { text, segments }
    }

    /// Appends the text with the job's values in the fields (CR, LF and NUL dropped from
    /// them), as it is: for header lines and base64 templates, which hold no markers (header
    /// lines are checked printable at build; base64 templates are cut at fields only).
    fn fill_into(&self, job: &Job, out: &mut Vec<u8>) {
        for seg in &self.segments {
            match seg {
                Segment::Literal(r) => out.extend_from_slice(&self.text[r.clone()]),
                Segment::Field(i) => {
                    let value = job.fields.get(*i).map_or("", String::as_str);
                    out.extend(value.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
                }
                Segment::QpStart | Segment::QpEnd | Segment::Base64(_) => {}
            }
        }
    }

    /// A template cut at its merge fields only (a base64 body's: its bytes are all content).
    fn fields_only(text: Vec<u8>, names: &[String]) -> Self {
        let segments = split_fields(&text, names, false);
        Skeleton { text, segments }
    }
}

/// A campaign ready to render: skeleton and per-message header parts.
#[derive(Debug)]
pub struct Campaign {
    /// Envelope sender (of every message when `verp_domain` is empty).
    pub return_path: String,
    /// Domain of per-job VERP envelope senders, or empty.
    verp_domain: String,
    /// The body contains 8-bit text (never, today: bodies are 7bit, quoted-printable or
    /// base64).
    pub eight_bit: bool,
    /// The message with 7bit bodies and merge values written as they are: for jobs whose
    /// body values are ASCII and keep every line within 998 bytes ([`Campaign::plain_fits`]).
    /// `None` when a template is not 7bit-clean.
    plain: Option<Variant>,
    /// The message with quoted-printable or base64 bodies where they need it: for every other
    /// job.
    /// `None` when the plain form always serves (no merge fields in the bodies).
    qp: Option<Variant>,
    /// Merge fields that appear in a body.
    body_fields: Vec<usize>,
    /// Longest body line holding a merge field, and most fields on one body line: bounds the
    /// longest line a job's values can make.
    field_lines: (usize, usize),
    /// Campaign's charset for Japanese mobile carrier recipients, over the site's.
    mobile_charset: Option<Charset>,
    tenant: String,
    subject_template: Option<String>,
    /// The snapshot's extra header lines, CRLF-ended, cut at their merge fields.
    headers: Skeleton,
    /// Keys signing every message (none: unsigned).
    dkim: Vec<Arc<DkimKey>>,
    /// The body hash of a campaign whose body is the same for everyone (no merge field in it).
    body_hash: Option<BodyHash>,
    /// The templates as written, for messages built per recipient in ISO-2022-JP.
    texts: Texts,
    /// Why the templates cannot be written in ISO-2022-JP, if they cannot.
    jis_error: Option<String>,
    field_names: Vec<String>,
    message_id_domain: String,
    id: u64,
    /// Tags the job identifiers (VERP address, Message-ID) with the campaign's key; `None` for
    /// a snapshot without one (untagged identifiers).
    tagger: Option<hikyaku_queue_schema::ids::Tagger>,
    /// Size of the parts around the skeleton: extra header lines and the subject template.
    around: Size,
    /// Size of the templates as written (ISO-2022-JP messages are built from them).
    texts_size: Size,
}

/// A campaign's templates and sender, as the snapshot has them.
#[derive(Debug, Default)]
struct Texts {
    from_name: String,
    from_addr: String,
    reply_to: String,
    subject: String,
    text: String,
    html: String,
}

thread_local! {
    /// The last job tag computed on this thread: (campaign, seq, tag).
    static LAST_TAG: std::cell::Cell<(u64, u64, [u8; hikyaku_queue_schema::ids::TAG_LEN])> =
        const { std::cell::Cell::new((0, 0, [0; hikyaku_queue_schema::ids::TAG_LEN])) };
    /// The raw message being signed, reused across messages of a thread.
    static UNSIGNED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

const PLACEHOLDER_RCPT: &str = "hk-rcpt@placeholder.invalid";

impl Campaign {
    /// Builds the skeleton from a snapshot, signing with the keys `dkim` holds for the From
    /// domain. A sample message is signed once here, so a key that cannot sign this campaign
    /// fails the campaign, not each message.
    pub fn build(s: &CampaignSnapshot, dkim: &DkimKeys) -> Result<Self, RenderError> {
        // The API refuses control characters in these, but the snapshot crossed Redis: no NUL
        // reaches a message from a template, and one-line fields lose every control.
        let s = &CampaignSnapshot {
            from_name: clean_header(&s.from_name),
            subject: clean_header(&s.subject),
            text_body: s.text_body.replace('\0', ""),
            html_body: s.html_body.replace('\0', ""),
            ..s.clone()
        };
        let invalid = |error: String| RenderError::Invalid { id: s.id, error };
        let from_addr = s
            .from_addr
            .parse()
            .map_err(|e| invalid(format!("from_addr {:?}: {e}", s.from_addr)))?;
        let from = Mailbox::new(
            (!s.from_name.is_empty()).then(|| clean_header(&s.from_name)),
            from_addr,
        );
        if !s.return_path.is_empty() {
            s.return_path
                .parse::<lettre::Address>()
                .map_err(|e| invalid(format!("return_path {:?}: {e}", s.return_path)))?;
        }
        let templated_subject = s.subject.contains("{{");
        let mut builder = Message::builder().from(from).to(PLACEHOLDER_RCPT
            .parse()
            .map_err(|e| invalid(format!("{e}")))?);
        if !s.reply_to.is_empty() {
            let rt = s
                .reply_to
                .parse()
                .map_err(|e| invalid(format!("reply_to {:?}: {e}", s.reply_to)))?;
            builder = builder.reply_to(rt);
        }
        if !templated_subject {
            builder = builder.subject(clean_header(&s.subject));
        }
        let bodies = [&s.text_body, &s.html_body];
        let body_fields: Vec<usize> = (0..s.field_names.len())
            .filter(|&i| {
                let p = format!("{{{{{}}}}}", s.field_names[i]);
                bodies.iter().any(|b| b.contains(&p))
            })
            .collect();
        let placeholders: Vec<String> = body_fields
            .iter()
            .map(|&i| format!("{{{{{}}}}}", s.field_names[i]))
            .collect();
        let mut field_lines = (0, 0);
        let mut seven_bit_clean = true;
        for line in bodies.iter().flat_map(|b| b.split(['\r', '\n'])) {
            seven_bit_clean &= line.len() <= 998 && !line.bytes().any(needs_escape_in_7bit);
            let n: usize = placeholders
                .iter()
                .map(|p| line.matches(p.as_str()).count())
                .sum();
            if n > 0 {
                field_lines = (field_lines.0.max(line.len()), field_lines.1.max(n));
            }
        }
        // One form of the message: bodies that need it (`qp`: non-ASCII, fields or long lines)
        // encoded — base64 when mostly non-ASCII (Japanese text: 4 bytes for 3 instead of
        // quoted-printable's 9), else quoted-printable — the others 7bit as written. lettre gets
        // them as already encoded.
        let compose = |qp: bool| -> Result<Variant, RenderError> {
            let qp_parts = std::cell::Cell::new(0usize);
            let base64 = std::cell::RefCell::new(Vec::new());
            let part = |ct: ContentType, text: &str| -> SinglePart {
                let needs_qp = qp
                    && (placeholders.iter().any(|p| text.contains(p.as_str()))
                        || text
                            .split(['\r', '\n'])
                            .any(|l| l.len() > 998 || l.bytes().any(needs_escape_in_7bit)));
                let high = text.bytes().filter(|b| *b >= 0x80).count();
                let body = if needs_qp && high * 3 > text.len() {
                    base64.borrow_mut().push(Skeleton::fields_only(
                        crlf(text).into_bytes(),
                        &s.field_names,
                    ));
                    Body::dangerous_pre_encoded(
                        BASE64_BODY.to_vec(),
                        ContentTransferEncoding::Base64,
                    )
                } else if needs_qp {
                    qp_parts.set(qp_parts.get() + 1);
                    let mut b = QP_START.to_vec();
                    b.extend_from_slice(&crate::qp::escape_template(text));
                    b.extend_from_slice(QP_END);
                    Body::dangerous_pre_encoded(b, ContentTransferEncoding::QuotedPrintable)
                } else {
                    Body::dangerous_pre_encoded(
                        crlf(text).into_bytes(),
                        ContentTransferEncoding::SevenBit,
                    )
                };
                SinglePart::builder().header(ct).body(body)
            };
            let b = builder.clone();
            let message = if s.html_body.is_empty() {
                b.singlepart(part(ContentType::TEXT_PLAIN, &s.text_body))
            } else {
                b.multipart(
                    MultiPart::alternative()
                        .singlepart(part(ContentType::TEXT_PLAIN, &s.text_body))
                        .singlepart(part(ContentType::TEXT_HTML, &s.html_body)),
                )
            }
            .map_err(|e| invalid(e.to_string()))?;
            let stripped = strip_headers(&message.formatted(), &["to", "date", "message-id"]);
            let data = Skeleton::new(dotstuff::stuff(&stripped), &s.field_names);
            let count =
                |want: fn(&Segment) -> bool| data.segments.iter().filter(|g| want(g)).count();
            let starts = count(|g| matches!(g, Segment::QpStart));
            let base64 = base64.into_inner();
            if starts != qp_parts.get()
                || count(|g| matches!(g, Segment::QpEnd)) != starts
                || count(|g| matches!(g, Segment::Base64(_))) != base64.len()
            {
                return Err(invalid("a control character reached the message".into()));
            }
            let mut raw = Vec::with_capacity(stripped.len());
            dotstuff::canonical_into(&mut raw, &stripped);
            let bdat = Skeleton::new(raw, &s.field_names);
            let size = Size::of(&bdat.segments, s.field_names.len(), &base64);
            Ok(Variant {
                data,
                bdat,
                base64,
                size,
            })
        };
        let plain = seven_bit_clean.then(|| compose(false)).transpose()?;
        let qp = (!seven_bit_clean || !body_fields.is_empty())
            .then(|| compose(true))
            .transpose()?;
        let eight_bit = [&plain, &qp]
            .into_iter()
            .flatten()
            .any(|v| !v.bdat.text.is_ascii());
        let mobile_charset = match s.mobile_charset.as_str() {
            "" => None,
            c => Some(Charset::parse(c).ok_or_else(|| {
                invalid(format!(
                    "mobile_charset {c:?}: expected utf-8 or iso-2022-jp"
                ))
            })?),
        };
        let mut lines = Vec::new();
        for h in &s.headers {
            let valid_name = h.split_once(':').is_some_and(|(n, _)| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            });
            if !valid_name
                || !h.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
                || h.len() > 998
            {
                return Err(invalid(format!(
                    "header {h:?} is not one ASCII `Name: value` line"
                )));
            }
            lines.extend_from_slice(h.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        let headers = Skeleton::new(lines, &s.field_names);
        let from_domain = s.from_addr.rsplit_once('@').map_or("", |(_, d)| d);
        let jis_error = [
            ("sender name", &s.from_name),
            ("subject", &s.subject),
            ("text body", &s.text_body),
            ("HTML body", &s.html_body),
        ]
        .into_iter()
        .find_map(|(part, t)| {
            crate::jis::first_unmappable(t).map(|c| {
                format!(
                    "character {c:?} (U+{:04X}) in the {part} cannot be carried by ISO-2022-JP",
                    u32::from(c)
                )
            })
        });
        let static_body = body_fields.is_empty();
        let n_fields = s.field_names.len();
        let mut around = Size::of(&headers.segments, n_fields, &[]);
        if templated_subject {
            around.add(&Size::of(
                &split_fields(s.subject.as_bytes(), &s.field_names, false),
                n_fields,
                &[],
            ));
        }
        let mut texts_size = around.clone();
        for t in [&s.from_name, &s.text_body, &s.html_body] {
            texts_size.add(&Size::of(
                &split_fields(t.as_bytes(), &s.field_names, false),
                n_fields,
                &[],
            ));
        }
        let (mut plain, mut qp) = (plain, qp);
        for v in [&mut plain, &mut qp].into_iter().flatten() {
            v.size.add(&around);
        }
        let campaign = Campaign {
            return_path: s.return_path.clone(),
            verp_domain: s.verp_domain.clone(),
            eight_bit,
            plain,
            qp,
            body_fields,
            field_lines,
            mobile_charset,
            tenant: s.tenant.clone(),
            subject_template: templated_subject.then(|| s.subject.clone()),
            headers,
            dkim: dkim.for_domain(from_domain),
            body_hash: static_body.then(BodyHash::default),
            texts: Texts {
                from_name: clean_header(&s.from_name),
                from_addr: s.from_addr.clone(),
                reply_to: s.reply_to.clone(),
                subject: s.subject.clone(),
                text: s.text_body.clone(),
                html: s.html_body.clone(),
            },
            jis_error,
            field_names: s.field_names.clone(),
            message_id_domain: s.message_id_domain.clone(),
            id: s.id,
            tagger: hikyaku_queue_schema::ids::Tagger::new(&s.id_key),
            around,
            texts_size,
        };
        if !campaign.dkim.is_empty() {
            let mut sample = Vec::new();
            let job = Job {
                id: hikyaku_queue_schema::JobId {
                    campaign: s.id,
                    seq: 0,
                },
                attempt: 0,
                queued_ms: 0,
                expires_ms: 0,
                priority: 0,
                rcpt: "sample@example.invalid".into(),
                fields: vec![String::new(); s.field_names.len()],
                last: None,
            };
            campaign.render_unsigned(
                &job,
                "Date: x\r\n",
                Framing::Bdat,
                Charset::Utf8,
                &mut sample,
            );
            for key in &campaign.dkim {
                key.sign_into(&sample, &mut Vec::new())
                    .map_err(|e| invalid(e.to_string()))?;
            }
        }
        Ok(campaign)
    }

    /// The envelope sender (MAIL FROM) of `job`'s message: its VERP address (written into
    /// `buf`, a connection's reusable buffer) when the campaign has a bounce domain, else the
    /// campaign's return path.
    pub fn envelope_from<'a>(&'a self, job: &Job, buf: &'a mut String) -> &'a str {
        if self.verp_domain.is_empty() {
            return &self.return_path;
        }
        buf.clear();
        match self.tag(job.id.seq) {
            Some(tag) => hikyaku_queue_schema::verp::write(
                buf,
                job.id.campaign,
                job.id.seq,
                &tag,
                &self.verp_domain,
            ),
            // A snapshot from before tags: the untagged form its messages always had.
            None => {
                use std::fmt::Write as _;
                let _ = write!(
                    buf,
                    "{}{}-{}@{}",
                    hikyaku_queue_schema::verp::PREFIX,
                    job.id.campaign,
                    job.id.seq,
                    self.verp_domain
                );
            }
        }
        buf
    }

    /// The MAC tag of job `seq` ([`hikyaku_queue_schema::ids`]), computed once per message:
    /// the envelope sender and the Message-ID both carry it.
    fn tag(&self, seq: u64) -> Option<[u8; hikyaku_queue_schema::ids::TAG_LEN]> {
        let tagger = self.tagger.as_ref()?;
        Some(LAST_TAG.with(|last| {
            let (c, s, t) = last.get();
            if c == self.id && s == seq && t[0] != 0 {
                return t;
            }
            let t = tagger.tag(seq);
            last.set((self.id, seq, t));
            t
        }))
    }

    /// Approximate memory held by the rendered campaign, bytes.
    pub fn footprint(&self) -> usize {
        let variant = |v: &Option<Variant>| {
            v.as_ref().map_or(0, |v| {
                v.data.text.len()
                    + v.bdat.text.len()
                    + v.base64.iter().map(|b| b.text.len()).sum::<usize>()
            })
        };
        let t = &self.texts;
        variant(&self.plain)
            + variant(&self.qp)
            + self.headers.text.len()
            + t.subject.len()
            + t.text.len()
            + t.html.len()
            + t.from_name.len()
    }

    /// A lower bound of the size of `job`'s message in `charset` (the site's, as given to
    /// [`Campaign::render`]), computed from the templates and the values' lengths without
    /// building it: the templates' bytes plus each value once per placeholder. Encodings only
    /// add to that (quoted-printable, base64, DKIM headers), but ISO-2022-JP writes a Japanese
    /// character in 2 bytes for UTF-8's 3 (and a value's emoji as a 2-byte `〓`), so it counts
    /// half.
    pub fn min_len(&self, job: &Job, charset: Charset) -> u64 {
        self.bound(job, charset, |v| {
            v.len() - v.bytes().filter(|b| matches!(b, b'\r' | b'\n' | 0)).count()
        })
    }

    /// `job`'s [`Campaign::min_len`] when it is over `max` bytes, else `None`; on the hot path,
    /// so the values are scanned only when their plain lengths could make it that large.
    pub fn over(&self, job: &Job, charset: Charset, max: u64) -> Option<u64> {
        if self.bound(job, charset, str::len) <= max {
            return None;
        }
        Some(self.min_len(job, charset)).filter(|&least| least > max)
    }

    /// The size of `job`'s message with each value counted as `len` says: the smaller of the
    /// two forms (whichever the job gets, it is no smaller), or the templates' for
    /// ISO-2022-JP (halved: see [`Campaign::min_len`]).
    fn bound(&self, job: &Job, charset: Charset, len: impl Fn(&str) -> usize + Copy) -> u64 {
        if self.charset_for(charset, job.domain()) == Charset::Iso2022Jp {
            return self.texts_size.filled(&job.fields, len) / 2;
        }
        [&self.plain, &self.qp]
            .into_iter()
            .flatten()
            .map(|v| v.size.filled(&job.fields, len))
            .min()
            .unwrap_or_else(|| self.around.filled(&job.fields, len))
    }

    /// Why this campaign cannot be sent in ISO-2022-JP (a template character it cannot carry).
    pub fn jis_error(&self) -> Option<&str> {
        self.jis_error.as_deref()
    }

    /// Whether messages are DKIM-signed.
    pub fn signed(&self) -> bool {
        !self.dkim.is_empty()
    }

    /// Appends the recipient's message (ending in CRLF) to `out`, dot-stuffed for
    /// [`Framing::Data`], DKIM-signed when the campaign has keys. `date` is a complete
    /// `Date: …\r\n` header line; `charset` is the site's ([`Campaign::charset_for`] decides).
    pub fn render(
        &self,
        job: &Job,
        date: &str,
        framing: Framing,
        charset: Charset,
        out: &mut Vec<u8>,
    ) {
        let charset = self.charset_for(charset, job.domain());
        if self.dkim.is_empty() {
            return self.render_unsigned(job, date, framing, charset, out);
        }
        UNSIGNED.with_borrow_mut(|raw| {
            raw.clear();
            self.render_unsigned(job, date, Framing::Bdat, charset, raw);
            // ISO-2022-JP bodies are built per message (with their own MIME boundary).
            let body = self.body_hash.as_ref().filter(|_| charset == Charset::Utf8);
            for key in &self.dkim {
                if let Err(e) = key.sign_reusing(raw, body, out) {
                    // The campaign signed a sample at build time: this is not expected.
                    tracing::error!(campaign = self.id, domain = key.domain(), error = %e, "message sent without this DKIM signature");
                }
            }
            match framing {
                Framing::Bdat => out.extend_from_slice(raw),
                Framing::Data => dotstuff::stuff_into(out, raw),
            }
        });
    }

    fn render_unsigned(
        &self,
        job: &Job,
        date: &str,
        framing: Framing,
        charset: Charset,
        out: &mut Vec<u8>,
    ) {
        if charset == Charset::Iso2022Jp {
            match framing {
                Framing::Bdat => self.write_jis(job, date, out),
                Framing::Data => {
                    let mut raw = Vec::new();
                    self.write_jis(job, date, &mut raw);
                    dotstuff::stuff_into(out, &raw);
                }
            }
            return;
        }
        let Some(variant) = self.variant(job) else {
            unreachable!("build makes at least one form")
        };
        let skeleton = match framing {
            Framing::Data => &variant.data,
            Framing::Bdat => &variant.bdat,
        };
        out.reserve(skeleton.text.len() + 256);
        self.write_ids(job, date, out);
        if let Some(t) = &self.subject_template {
            let subject = fill(t, &self.field_names, &job.fields);
            let mut h = Headers::new();
            h.set(Subject::from(clean_header(&subject)));
            let line = h.to_string();
            match framing {
                Framing::Data => dotstuff::stuff_into(out, line.as_bytes()),
                Framing::Bdat => dotstuff::canonical_into(out, line.as_bytes()),
            }
        }
        self.write_extra_headers(job, out);
        // DATA framing: a segment that lands at a line start with '.' is stuffed here when
        // the skeleton could not know (after a field, or a field's first byte).
        let mut after_field = false;
        let mut qp: Option<QpWriter> = None;
        for seg in &skeleton.segments {
            match seg {
                Segment::QpStart => qp = Some(QpWriter::new()),
                Segment::Base64(n) => {
                    if let Some(t) = variant.base64.get(*n) {
                        write_base64(t, job, out);
                    }
                }
                Segment::QpEnd => {
                    if let Some(mut w) = qp.take() {
                        w.finish(out);
                    }
                }
                Segment::Literal(r) if qp.is_some() => {
                    if let Some(w) = qp.as_mut() {
                        w.literal(out, &skeleton.text[r.clone()]);
                    }
                }
                Segment::Field(i) if qp.is_some() => {
                    if let Some(w) = qp.as_mut() {
                        w.value(out, job.fields.get(*i).map_or("", String::as_str));
                    }
                }
                Segment::Literal(r) => {
                    let lit = &skeleton.text[r.clone()];
                    if framing == Framing::Data
                        && after_field
                        && out.last() == Some(&b'\n')
                        && lit.first() == Some(&b'.')
                    {
                        out.push(b'.');
                    }
                    out.extend_from_slice(lit);
                    after_field = false;
                }
                Segment::Field(i) => {
                    let value = job.fields.get(*i).map_or("", String::as_str);
                    let mut bytes = value.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0));
                    if let Some(first) = bytes.next() {
                        if framing == Framing::Data && first == b'.' && out.last() == Some(&b'\n') {
                            out.push(b'.');
                        }
                        out.push(first);
                        out.extend(bytes);
                    }
                    after_field = true;
                }
            }
        }
    }
}

impl Campaign {
    /// The form of the message `job` gets (UTF-8): the 7bit one when its values fit it, else
    /// the encoded one (`None` never happens: build makes at least one).
    fn variant(&self, job: &Job) -> Option<&Variant> {
        match (&self.plain, &self.qp) {
            (Some(plain), Some(qp)) => Some(if self.plain_fits(job) { plain } else { qp }),
            (Some(v), None) | (None, Some(v)) => Some(v),
            (None, None) => None,
        }
    }

    /// Whether `job`'s body values can go into the 7bit form: printable ASCII, and no line made
    /// longer than 998 bytes.
    fn plain_fits(&self, job: &Job) -> bool {
        let mut longest = 0;
        for &i in &self.body_fields {
            let v = job.fields.get(i).map_or("", String::as_str);
            if v.bytes().any(needs_escape_in_7bit) {
                return false;
            }
            longest = longest.max(v.len());
        }
        let (line, fields) = self.field_lines;
        line + fields * longest <= 998
    }

    /// The charset `job`'s message is written in: the campaign's mobile charset for carrier
    /// recipients when it has one, else the site's.
    pub fn charset_for(&self, site: Charset, domain: &str) -> Charset {
        match self.mobile_charset {
            Some(c) if hikyaku_queue_schema::carriers::is_carrier(domain) => c,
            _ => site,
        }
    }

    /// The owning tenant, as the snapshot names it.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The per-message identity lines: `date`, Message-ID (`hk.<campaign>.<seq>.<tag>@…`,
    /// which complaints are mapped back by; [`hikyaku_queue_schema::ids`]) and To.
    fn write_ids(&self, job: &Job, date: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"Message-ID: <hk.");
        push_display(out, self.id);
        out.push(b'.');
        push_display(out, job.id.seq);
        if let Some(tag) = self.tag(job.id.seq) {
            out.push(b'.');
            out.extend_from_slice(&tag);
        }
        out.push(b'@');
        out.extend_from_slice(self.message_id_domain.as_bytes());
        out.extend_from_slice(b">\r\nTo: <");
        // The dispatcher refused addresses with control characters; filter anyway, bytewise.
        out.extend(job.rcpt.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
        out.extend_from_slice(b">\r\n");
    }

    /// The snapshot's extra header lines with the job's values. Header lines never start with
    /// '.', and values lose CR/LF/NUL: no framing needed.
    fn write_extra_headers(&self, job: &Job, out: &mut Vec<u8>) {
        self.headers.fill_into(job, out);
    }

    /// The whole message in ISO-2022-JP (7bit), built for this recipient (raw, CRLF).
    fn write_jis(&self, job: &Job, date: &str, out: &mut Vec<u8>) {
        use crate::jis::{carriable, encode_body, header_value};
        let t = &self.texts;
        let values: Vec<String> = job
            .fields
            .iter()
            .map(|v| carriable(v).replace(['\r', '\n', '\0'], ""))
            .collect();
        // Values are made carriable above; templates were checked at build (`jis_error`), and a
        // site never renders a campaign that has one.
        let filled = |template: &str| fill(template, &self.field_names, &values);
        self.write_ids(job, date, out);
        out.extend_from_slice(b"From: ");
        if !t.from_name.is_empty() {
            let name = carriable(&t.from_name);
            if name.is_ascii() {
                let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
                out.extend_from_slice(format!("\"{quoted}\" ").as_bytes());
            } else {
                out.extend_from_slice(header_value(&name).as_bytes());
                out.push(b' ');
            }
        }
        out.extend_from_slice(format!("<{}>\r\n", t.from_addr).as_bytes());
        if !t.reply_to.is_empty() {
            out.extend_from_slice(format!("Reply-To: <{}>\r\n", t.reply_to).as_bytes());
        }
        let subject = clean_header(&filled(&t.subject));
        out.extend_from_slice(format!("Subject: {}\r\n", header_value(&subject)).as_bytes());
        self.write_extra_headers(job, out);
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        let part = |out: &mut Vec<u8>, subtype: &str, text: &str| {
            out.extend_from_slice(
                format!(
                    "Content-Type: text/{subtype}; charset=ISO-2022-JP\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                )
                .as_bytes(),
            );
            encode_body(text, out);
        };
        if t.html.is_empty() {
            part(out, "plain", &filled(&t.text));
        } else {
            // Random per message: no body line can be it by chance.
            let boundary = format!("=_hk_alt_{}_{:016x}", self.id, fastrand::u64(..));
            out.extend_from_slice(
                format!("Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n")
                    .as_bytes(),
            );
            part(out, "plain", &filled(&t.text));
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            part(out, "html", &filled(&t.html));
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        }
    }
}

fn push_display(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    let _ = write!(out, "{n}");
}

/// Removes control characters but tab (CR, LF and NUL among them): nothing from input may
/// start a new header line.
fn clean_header(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect()
}

/// `text` with CRLF line ends (bare CR or LF become CRLF).
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n")
}

thread_local! {
    /// A base64 body being filled, reused across messages of a thread.
    static BASE64_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A base64 body: the template filled with the job's values (CR, LF and NUL dropped from
/// them), encoded in lines of 76 characters. Base64 never starts a line with `.`, so it serves
/// both framings.
fn write_base64(template: &Skeleton, job: &Job, out: &mut Vec<u8>) {
    use base64::Engine as _;
    BASE64_SCRATCH.with_borrow_mut(|raw| {
        raw.clear();
        template.fill_into(job, raw);
        out.reserve(raw.len() / 57 * 78 + 80);
        for chunk in raw.chunks(57) {
            let start = out.len();
            out.resize(start + 76, 0);
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(chunk, &mut out[start..])
                .unwrap_or(0); // 76 bytes hold 57 encoded: cannot fail.
            out.truncate(start + n);
            out.extend_from_slice(b"\r\n");
        }
    });
}

/// Whether a body byte keeps a part from going as written in 7bit: 8-bit octets and control
/// characters other than tab (line ends are split off before).
fn needs_escape_in_7bit(b: u8) -> bool {
    !(b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Replaces every `{{name}}` of a merge field in `template` with the job's value, in one pass
/// over the template: values go in as they are and are never scanned again, so a value that
/// holds `{{other}}` (or `{{unsubscribe_url}}`) stays that text, and the result is at most the
/// template plus one value per placeholder. Placeholders are found as [`split_fields`] finds
/// them.
fn fill(template: &str, names: &[String], values: &[String]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        if let Some(close) = after.find("}}") {
            if let Some(i) = names.iter().position(|n| n.as_str() == &after[..close]) {
                out.push_str(&rest[..start]);
                out.push_str(values.get(i).map_or("", String::as_str));
                rest = &after[close + 2..];
                continue;
            }
        }
        // Not a merge field: keep one brace and look again from the next one.
        out.push_str(&rest[..start + 1]);
        rest = &rest[start + 1..];
    }
    out.push_str(rest);
    out
}

/// Drops the named headers (with their continuation lines) from a formatted message.
fn strip_headers(msg: &[u8], names: &[&str]) -> Vec<u8> {
    let end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(msg.len(), |p| p + 2);
    let (head, body) = msg.split_at(end);
    let mut out = Vec::with_capacity(msg.len());
    let mut skipping = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let name = line.split(|&b| b == b':').next().unwrap_or(b"");
            skipping = names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

/// Cuts `text` at every `{{name}}` whose name is a merge field.
fn split_fields(text: &[u8], names: &[String], markers: bool) -> Vec<Segment> {
    let mut segs = Vec::new();
    let mut lit_start = 0;
    let mut i = 0;
    let mut base64 = 0;
    while i + 1 < text.len() {
        if markers && text[i] == 0x01 {
            let marker = &text[i..(i + 2).min(text.len())];
            let seg = if marker == QP_START {
                Segment::QpStart
            } else if marker == QP_END {
                Segment::QpEnd
            } else if marker == BASE64_BODY {
                base64 += 1;
                Segment::Base64(base64 - 1)
            } else {
                i += 1;
                continue;
            };
            if lit_start < i {
                segs.push(Segment::Literal(lit_start..i));
            }
            segs.push(seg);
            i += 2;
            lit_start = i;
            continue;
        }
        if text[i] == b'{' && text[i + 1] == b'{' {
            if let Some(close) = text[i + 2..].windows(2).position(|w| w == b"}}") {
                let name = &text[i + 2..i + 2 + close];
                if let Some(idx) = names.iter().position(|n| n.as_bytes() == name) {
                    if lit_start < i {
                        segs.push(Segment::Literal(lit_start..i));
                    }
                    segs.push(Segment::Field(idx));
                    i += 2 + close + 2;
                    lit_start = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    if lit_start < text.len() {
        segs.push(Segment::Literal(lit_start..text.len()));
    }
    segs
}

/// The per-engine campaign cache (snapshots never change once written). Bounded: a campaign
/// leaves it when the node forgets it (no job of it held for a while,
/// [`CampaignStates::forget_idle`]), and beyond [`MAX_CACHED_BYTES`] of rendered templates
/// the least recently used leave first (they are built again if needed).
#[derive(Debug)]
pub struct Renderer {
    con: Redis,
    states: Arc<CampaignStates>,
    dkim: Arc<DkimKeys>,
    cache: Mutex<HashMap<u64, Cached>>,
}

/// Rendered templates kept at most, in bytes (approximately: the skeletons and texts).
pub const MAX_CACHED_BYTES: usize = 256 << 20;

#[derive(Debug)]
struct Cached {
    campaign: Arc<Campaign>,
    bytes: usize,
    last_used_ms: std::sync::atomic::AtomicU64,
}

impl Renderer {
    /// A renderer reading snapshots over `con`, recording run states in `states`, signing
    /// with `dkim`.
    pub fn new(con: Redis, states: Arc<CampaignStates>, dkim: Arc<DkimKeys>) -> Self {
        Renderer {
            con,
            states,
            dkim,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The run state of `campaign`: as known while jobs of it are held, else read from Redis
    /// (and known from then on). Asked before each message is admitted, so no message of a
    /// paused or cancelled campaign goes out on a state the node has not read.
    pub async fn state(&self, id: u64) -> Result<RunState, RenderError> {
        if let Some(state) = self.states.known_state(id) {
            return Ok(state);
        }
        let mut con = self.con.clone();
        let state: Option<String> = redis::cmd("HGET")
            .arg(Keys::campaign(id))
            .arg(STATE_FIELD)
            .query_async(&mut con)
            .await
            .map_err(|e| RenderError::reading(id, &e))?;
        let state = RunState::parse(state.as_deref());
        self.states.set(id, state);
        Ok(state)
    }

    /// The campaign, from the cache or Redis. A campaign this node has started tracking anew
    /// has its run state read here before its first message.
    pub async fn campaign(&self, id: u64) -> Result<Arc<Campaign>, RenderError> {
        let cached = self.lock().get(&id).map(|c| {
            c.last_used_ms
                .store(clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
            c.campaign.clone()
        });
        let redis_error = |e: redis::RedisError| RenderError::reading(id, &e);
        let mut con = self.con.clone();
        if let Some(c) = cached {
            self.state(id).await?;
            return Ok(c);
        }
        let (bytes, state): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
            .arg(Keys::campaign(id))
            .arg(SNAPSHOT_FIELD)
            .arg(STATE_FIELD)
            .query_async(&mut con)
            .await
            .map_err(redis_error)?;
        self.states.set(id, RunState::parse(state.as_deref()));
        let bytes = bytes.ok_or(RenderError::Missing(id))?;
        let snap = CampaignSnapshot::decode(&bytes).map_err(|e| match e {
            hikyaku_queue_schema::DecodeError::TooNew(version) => {
                RenderError::TooNew { id, version }
            }
            e => RenderError::Invalid {
                id,
                error: e.to_string(),
            },
        })?;
        let campaign = Arc::new(Campaign::build(&snap, &self.dkim)?);
        self.insert(id, campaign.clone());
        Ok(campaign)
    }

    fn insert(&self, id: u64, campaign: Arc<Campaign>) {
        let bytes = campaign.footprint();
        let mut cache = self.lock();
        cache.insert(
            id,
            Cached {
                campaign,
                bytes,
                last_used_ms: std::sync::atomic::AtomicU64::new(clock::now_ms()),
            },
        );
        let mut total: usize = cache.values().map(|c| c.bytes).sum();
        while total > MAX_CACHED_BYTES && cache.len() > 1 {
            let oldest = cache
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, c)| c.last_used_ms.load(std::sync::atomic::Ordering::Relaxed))
                .map(|(k, c)| (*k, c.bytes));
            let Some((k, b)) = oldest else { break };
            cache.remove(&k);
            total -= b;
        }
    }

    /// Drops the campaigns `ids` (forgotten by the node).
    pub fn forget(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut cache = self.lock();
        for id in ids {
            cache.remove(id);
        }
    }

    /// Campaigns cached now, and their approximate size in bytes.
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.lock();
        (cache.len(), cache.values().map(|c| c.bytes).sum())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A `Date:` header line for now, cached per second by each connection.
#[derive(Debug, Default)]
pub struct DateLine {
    second: u64,
    line: String,
}

impl DateLine {
    /// The current `Date: …\r\n` line.
    pub fn get(&mut self) -> &str {
        let now_ms = clock::now_ms();
        let sec = now_ms / 1000;
        if sec != self.second || self.line.is_empty() {
            self.second = sec;
            let mut h = Headers::new();
            h.set(Date::new(clock::system_time(now_ms)));
            self.line = h.to_string();
        }
        &self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(text.starts_with(
            "Date: x\r\nMessage-ID: <hk.42.7@acme.test>\r\nTo: <taro@example.test>\r\n"
        ));
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
        let ed = crate::dkim::DkimKey::from_pem(
            "acme.test",
            "ed",
            crate::dkim::Algorithm::Ed25519Sha256,
            include_bytes!("dkim/testdata/rfc8463-ed25519.pem"),
            "ed",
        )
        .expect("key");
        let rsa = crate::dkim::DkimKey::from_pem(
            "acme.test",
            "rsa",
            crate::dkim::Algorithm::RsaSha256,
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
            crate::dkim::DkimKey::from_pem("acme.test", sel, alg, pem, sel).expect("key")
        };
        DkimKeys::from_keys(vec![
            key(
                "rsa",
                crate::dkim::Algorithm::RsaSha256,
                include_bytes!("dkim/testdata/rsa2048.pem"),
            ),
            key(
                "ed",
                crate::dkim::Algorithm::Ed25519Sha256,
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
}
