//! Building a campaign's templates once, from its snapshot: lettre composes the MIME message
//! with placeholders, which is cut into skeletons ([`super::template`]); a sample is signed with
//! the From domain's DKIM keys so that a key that cannot sign fails the campaign, not each
//! message.

use super::template::*;
use super::*;
use crate::message::dkim::{BodyHash, DkimKey, DkimKeys};
use crate::message::jis::Charset;
use crate::smtp::dotstuff;
use hikyaku_queue_schema::{CampaignSnapshot, Job};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::Message;
use std::sync::Arc;

/// A campaign ready to render: skeleton and per-message header parts.
#[derive(Debug)]
pub struct Campaign {
    /// Envelope sender (of every message when `verp_domain` is empty).
    pub return_path: String,
    /// Domain of per-job VERP envelope senders, or empty.
    pub(super) verp_domain: String,
    /// The body contains 8-bit text (never, today: bodies are 7bit, quoted-printable or
    /// base64).
    pub eight_bit: bool,
    /// The message with 7bit bodies and merge values written as they are: for jobs whose
    /// body values are ASCII and keep every line within 998 bytes ([`Campaign::plain_fits`]).
    /// `None` when a template is not 7bit-clean.
    pub(super) plain: Option<Variant>,
    /// The message with quoted-printable or base64 bodies where they need it: for every other
    /// job.
    /// `None` when the plain form always serves (no merge fields in the bodies).
    pub(super) qp: Option<Variant>,
    /// Merge fields that appear in a body.
    pub(super) body_fields: Vec<usize>,
    /// Longest body line holding a merge field, and most fields on one body line: bounds the
    /// longest line a job's values can make.
    pub(super) field_lines: (usize, usize),
    /// Campaign's charset for Japanese mobile carrier recipients, over the site's.
    pub(super) mobile_charset: Option<Charset>,
    pub(super) tenant: String,
    pub(super) subject_template: Option<String>,
    /// The snapshot's extra header lines, CRLF-ended, cut at their merge fields.
    pub(super) headers: Skeleton,
    /// Keys signing every message (none: unsigned).
    pub(super) dkim: Vec<Arc<DkimKey>>,
    /// The body hash of a campaign whose body is the same for everyone (no merge field in it).
    pub(super) body_hash: Option<BodyHash>,
    /// The templates as written, for messages built per recipient in ISO-2022-JP.
    pub(super) texts: Texts,
    /// Why the templates cannot be written in ISO-2022-JP, if they cannot.
    pub(super) jis_error: Option<String>,
    pub(super) field_names: Vec<String>,
    pub(super) message_id_domain: String,
    pub(super) id: u64,
    /// Tags the job identifiers (VERP address, Message-ID) with the campaign's key; `None` for
    /// a snapshot without one (untagged identifiers).
    pub(super) tagger: Option<hikyaku_queue_schema::ids::Tagger>,
    /// Size of the parts around the skeleton: extra header lines and the subject template.
    pub(super) around: Size,
    /// Size of the templates as written (ISO-2022-JP messages are built from them).
    pub(super) texts_size: Size,
}

/// A campaign's templates and sender, as the snapshot has them.
#[derive(Debug, Default)]
pub(super) struct Texts {
    pub(super) from_name: String,
    pub(super) from_addr: String,
    pub(super) reply_to: String,
    pub(super) subject: String,
    pub(super) text: String,
    pub(super) html: String,
}

pub(super) const PLACEHOLDER_RCPT: &str = "hk-rcpt@placeholder.invalid";

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
                    b.extend_from_slice(&crate::message::qp::escape_template(text));
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
            crate::message::jis::first_unmappable(t).map(|c| {
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

    /// Why this campaign cannot be sent in ISO-2022-JP (a template character it cannot carry).
    pub fn jis_error(&self) -> Option<&str> {
        self.jis_error.as_deref()
    }

    /// Whether messages are DKIM-signed.
    pub fn signed(&self) -> bool {
        !self.dkim.is_empty()
    }

    /// The form of the message `job` gets (UTF-8): the 7bit one when its values fit it, else
    /// the encoded one (`None` never happens: build makes at least one).
    pub(super) fn variant(&self, job: &Job) -> Option<&Variant> {
        match (&self.plain, &self.qp) {
            (Some(plain), Some(qp)) => Some(if self.plain_fits(job) { plain } else { qp }),
            (Some(v), None) | (None, Some(v)) => Some(v),
            (None, None) => None,
        }
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
}
