//! Writing one recipient's message: the per-message headers (Date, Message-ID, To, the extra
//! header lines), the skeleton with the job's values spliced in (quoted-printable or base64
//! where the body needs it), ISO-2022-JP for carriers that want it, and DKIM signatures in
//! front when the campaign is signed.

use super::build::*;
use super::template::*;
use crate::clock;
use crate::message::jis::Charset;
use crate::message::qp::QpWriter;
use crate::smtp::dotstuff;
use hikyaku_queue_schema::Job;
use lettre::message::header::{Date, Headers, Subject};

thread_local! {
    /// The last job tag computed on this thread: (campaign, seq, tag).
    static LAST_TAG: std::cell::Cell<(u64, u64, [u8; hikyaku_queue_schema::ids::TAG_LEN])> =
        const { std::cell::Cell::new((0, 0, [0; hikyaku_queue_schema::ids::TAG_LEN])) };
    /// The raw message being signed, reused across messages of a thread.
    static UNSIGNED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(super) fn push_display(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    let _ = write!(out, "{n}");
}

thread_local! {
    /// A base64 body being filled, reused across messages of a thread.
    static BASE64_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A base64 body: the template filled with the job's values (CR, LF and NUL dropped from
/// them), encoded in lines of 76 characters. Base64 never starts a line with `.`, so it serves
/// both framings.
pub(super) fn write_base64(template: &Skeleton, job: &Job, out: &mut Vec<u8>) {
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

/// A `Date:` header line for now, cached per second by each connection.
#[derive(Debug, Default)]
pub struct DateLine {
    pub(super) second: u64,
    pub(super) line: String,
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

impl Campaign {
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
    pub(super) fn tag(&self, seq: u64) -> Option<[u8; hikyaku_queue_schema::ids::TAG_LEN]> {
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
    pub(super) fn bound(
        &self,
        job: &Job,
        charset: Charset,
        len: impl Fn(&str) -> usize + Copy,
    ) -> u64 {
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

    pub(super) fn render_unsigned(
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

    /// Whether `job`'s body values can go into the 7bit form: printable ASCII, and no line made
    /// longer than 998 bytes.
    pub(super) fn plain_fits(&self, job: &Job) -> bool {
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

    /// The per-message identity lines: `date`, Message-ID (`hk.<campaign>.<seq>.<tag>@…`,
    /// which complaints are mapped back by; [`hikyaku_queue_schema::ids`]) and To.
    pub(super) fn write_ids(&self, job: &Job, date: &str, out: &mut Vec<u8>) {
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
    pub(super) fn write_extra_headers(&self, job: &Job, out: &mut Vec<u8>) {
        self.headers.fill_into(job, out);
    }

    /// The whole message in ISO-2022-JP (7bit), built for this recipient (raw, CRLF).
    pub(super) fn write_jis(&self, job: &Job, date: &str, out: &mut Vec<u8>) {
        use crate::message::jis::{carriable, encode_body, header_value};
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
