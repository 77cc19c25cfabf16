//! The campaign's message as a template: literal segments and merge-field slots, in the
//! `DATA` (dot-stuffed) and `BDAT` framings, with quoted-printable and base64 body markers, and
//! the size of a message before its values.

use hikyaku_queue_schema::Job;

#[derive(Debug, Clone)]
pub(super) enum Segment {
    Literal(std::ops::Range<usize>),
    Field(usize),
    /// A quoted-printable body starts: what follows is escaped ([`crate::message::qp`]) until
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
pub(super) const QP_START: &[u8] = b"\x01[";

pub(super) const QP_END: &[u8] = b"\x01]";

/// Stands for a whole base64 body in the composed message.
pub(super) const BASE64_BODY: &[u8] = b"\x01(";

/// The size of a skeleton before the job's values: its literal bytes and how many times each
/// merge field appears in it.
#[derive(Debug, Clone, Default)]
pub(super) struct Size {
    pub(super) literal: usize,
    /// Occurrences per field index.
    pub(super) fields: Vec<usize>,
}

impl Size {
    pub(super) fn of(segments: &[Segment], fields: usize, base64: &[Skeleton]) -> Self {
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

    pub(super) fn add(&mut self, other: &Size) {
        self.literal += other.literal;
        for (a, b) in self.fields.iter_mut().zip(&other.fields) {
            *a += b;
        }
    }

    /// The bytes of the filled text: literal bytes plus each value once per occurrence
    /// (`len`: a value's length as written).
    pub(super) fn filled(&self, values: &[String], len: impl Fn(&str) -> usize) -> u64 {
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
pub(super) struct Variant {
    pub(super) data: Skeleton,
    pub(super) bdat: Skeleton,
    /// Templates (CRLF, raw) of the base64 bodies, in message order.
    pub(super) base64: Vec<Skeleton>,
    /// The raw (`BDAT`) form's size before values, base64 templates included unencoded,
    /// with the per-message header lines around it.
    pub(super) size: Size,
}

/// The campaign's message in one framing, cut at its merge fields.
#[derive(Debug)]
pub(super) struct Skeleton {
    pub(super) text: Vec<u8>,
    pub(super) segments: Vec<Segment>,
}

impl Skeleton {
    pub(super) fn new(text: Vec<u8>, names: &[String]) -> Self {
        let segments = split_fields(&text, names, true);
        Skeleton { text, segments }
    }

    /// Appends the text with the job's values in the fields (CR, LF and NUL dropped from
    /// them), as it is: for header lines and base64 templates, which hold no markers (header
    /// lines are checked printable at build; base64 templates are cut at fields only).
    pub(super) fn fill_into(&self, job: &Job, out: &mut Vec<u8>) {
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
    pub(super) fn fields_only(text: Vec<u8>, names: &[String]) -> Self {
        let segments = split_fields(&text, names, false);
        Skeleton { text, segments }
    }
}

/// Removes control characters but tab (CR, LF and NUL among them): nothing from input may
/// start a new header line.
pub(super) fn clean_header(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect()
}

/// `text` with CRLF line ends (bare CR or LF become CRLF).
pub(super) fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n")
}

/// Whether a body byte keeps a part from going as written in 7bit: 8-bit octets and control
/// characters other than tab (line ends are split off before).
pub(super) fn needs_escape_in_7bit(b: u8) -> bool {
    !(b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Replaces every `{{name}}` of a merge field in `template` with the job's value, in one pass
/// over the template: values go in as they are and are never scanned again, so a value that
/// holds `{{other}}` (or `{{unsubscribe_url}}`) stays that text, and the result is at most the
/// template plus one value per placeholder. Placeholders are found as [`split_fields`] finds
/// them.
pub(super) fn fill(template: &str, names: &[String], values: &[String]) -> String {
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
pub(super) fn strip_headers(msg: &[u8], names: &[&str]) -> Vec<u8> {
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
pub(super) fn split_fields(text: &[u8], names: &[String], markers: bool) -> Vec<Segment> {
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
