//! Quoted-printable bodies (RFC 2045 §6.7) written per recipient from a pre-escaped template.
//!
//! Hand-written because no encoder crate can splice: the campaign's template is escaped once
//! ([`escape_template`]: every byte that needs it becomes `=XX`, lines CRLF, no soft breaks),
//! and per recipient [`QpWriter`] copies the escaped literals and the escaped merge values
//! behind each other, adding the soft line breaks (`=` CRLF) that keep every line ≤ 76
//! characters where the values put them — a column count and a `memchr`-like scan, not an
//! encoding pass over the whole body. A field value can make any line longer, so a whole-body
//! encoder would have to run for every message.
//!
//! The writer also keeps the output safe for SMTP: no line it writes starts with `.` (such a
//! dot is written `=2E`), so the same bytes serve `DATA` and `BDAT`, and no line ends in a
//! space or tab (written `=20` / `=09`).

/// Longest line written, the soft-break `=` included (RFC 2045: 76).
const LINE: usize = 76;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `b` is written as itself.
fn literal(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'!'..=b'<' | b'>'..=b'~')
}

/// Escapes a template for [`QpWriter`]: CRLF line ends (bare CR or LF become CRLF), every byte
/// that is not printable ASCII (and `=`) as `=XX`, a `.` that starts a line as `=2E`, a space
/// or tab that ends one as `=20` / `=09`. `{{field}}` placeholders pass unchanged.
pub fn escape_template(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    let bytes = text.as_bytes();
    let mut line_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\r' | b'\n' => {
                end_line(&mut out);
                out.extend_from_slice(b"\r\n");
                line_start = true;
                i += if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                continue;
            }
            b'.' if line_start => out.extend_from_slice(b"=2E"),
            b if literal(b) => out.push(b),
            b => push_escaped(&mut out, b),
        }
        line_start = false;
        i += 1;
    }
    out
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// Escapes a trailing space or tab of the line written so far.
fn end_line(out: &mut Vec<u8>) -> usize {
    match out.last() {
        Some(&b) if b == b' ' || b == b'\t' => {
            out.pop();
            push_escaped(out, b);
            2
        }
        _ => 0,
    }
}

/// Writes one quoted-printable body from escaped pieces, keeping the column.
#[derive(Debug, Default)]
pub struct QpWriter {
    col: usize,
}

impl QpWriter {
    /// A writer at the start of a body (column 0).
    pub fn new() -> Self {
        QpWriter { col: 0 }
    }

    /// Appends escaped text (from [`escape_template`]): its CRLFs end lines, soft breaks go
    /// where the current line would pass 76 characters.
    pub fn literal(&mut self, out: &mut Vec<u8>, mut s: &[u8]) {
        while let Some(nl) = s.iter().position(|&b| b == b'\n') {
            // `nl - 1` is the CR: the escaped text has CRLF line ends only.
            self.run(out, &s[..nl.saturating_sub(1)]);
            self.hard_break(out);
            s = &s[nl + 1..];
        }
        self.run(out, s);
    }

    /// Appends a merge value, escaping as it goes; CR, LF and NUL are dropped.
    pub fn value(&mut self, out: &mut Vec<u8>, v: &str) {
        for b in v.bytes() {
            if matches!(b, b'\r' | b'\n' | 0) {
                continue;
            }
            let needs_escape = |col: usize| !literal(b) || (b == b'.' && col == 0);
            let mut escape = needs_escape(self.col);
            if self.col + if escape { 3 } else { 1 } > LINE - 1 {
                self.soft_break(out);
                escape = needs_escape(0);
            }
            if escape {
                push_escaped(out, b);
                self.col += 3;
            } else {
                out.push(b);
                self.col += 1;
            }
        }
    }

    /// Ends the body: a trailing space or tab is escaped.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.close_line(out);
    }

    /// A run of escaped text without line ends.
    fn run(&mut self, out: &mut Vec<u8>, mut s: &[u8]) {
        while !s.is_empty() {
            if self.col == 0 && s[0] == b'.' {
                out.extend_from_slice(b"=2E");
                self.col = 3;
                s = &s[1..];
                continue;
            }
            let room = LINE - 1 - self.col;
            if s.len() <= room {
                out.extend_from_slice(s);
                self.col += s.len();
                return;
            }
            // Never cut an `=XX`.
            let mut cut = room;
            if cut >= 1 && s[cut - 1] == b'=' {
                cut -= 1;
            } else if cut >= 2 && s[cut - 2] == b'=' {
                cut -= 2;
            }
            out.extend_from_slice(&s[..cut]);
            self.soft_break(out);
            s = &s[cut..];
        }
    }

    fn soft_break(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"=\r\n");
        self.col = 0;
    }

    fn hard_break(&mut self, out: &mut Vec<u8>) {
        self.close_line(out);
        out.extend_from_slice(b"\r\n");
        self.col = 0;
    }

    /// Escapes a trailing space or tab of the current line, moving the escape to a line of its
    /// own when it would make the line too long.
    fn close_line(&mut self, out: &mut Vec<u8>) {
        if self.col == 0 {
            return;
        }
        self.col += end_line(out);
        if self.col > LINE {
            let esc: Vec<u8> = out.split_off(out.len() - 3);
            self.soft_break(out);
            out.extend_from_slice(&esc);
            self.col = 3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2045 decoding, for checking.
    fn decode(qp: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(qp).expect("qp is ASCII");
        let joined = text.replace("=\r\n", "");
        let b = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("escape"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    fn check_lines(qp: &[u8]) {
        let text = std::str::from_utf8(qp).expect("ASCII");
        for line in text.split("\r\n") {
            assert!(line.len() <= 76, "line of {}: {line:?}", line.len());
            assert!(!line.starts_with('.'), "dot at line start: {line:?}");
            assert!(
                !line.ends_with(' ') && !line.ends_with('\t'),
                "trailing blank: {line:?}"
            );
            assert!(!line.contains('\r') && !line.contains('\n'));
        }
    }

    /// Template pieces and values spliced, as the renderer does.
    fn write(pieces: &[&str], values: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = QpWriter::new();
        for (i, p) in pieces.iter().enumerate() {
            w.literal(&mut out, &escape_template(p));
            if let Some(v) = values.get(i) {
                w.value(&mut out, v);
            }
        }
        w.finish(&mut out);
        out
    }

    #[test]
    fn spliced_bodies_decode_to_the_filled_text_within_the_line_rules() {
        let pieces = [
            "こんにちは、",
            "さん。\r\n.dot line and a = sign \n",
            " trailing \r\n",
            "\t\r\n",
            "",
        ];
        let values = ["山田 太郎", ". value ", "x".repeat(200).leak(), " ."];
        let out = write(&pieces, &values);
        check_lines(&out);
        let want =
            "こんにちは、山田 太郎さん。\r\n.dot line and a = sign \r\n. value  trailing \r\n"
                .to_owned()
                + &"x".repeat(200)
                + "\t\r\n .";
        assert_eq!(String::from_utf8(decode(&out)).expect("utf8"), want);
    }

    #[test]
    fn a_blank_ending_a_full_last_line_moves_to_its_own_line() {
        let text = format!("{} ", "a".repeat(74));
        let out = write(&[&text], &[]);
        check_lines(&out);
        assert_eq!(String::from_utf8(decode(&out)).expect("utf8"), text);
        let out = write(&[&format!("{text}\n")], &[]);
        check_lines(&out);
        assert_eq!(
            String::from_utf8(decode(&out)).expect("utf8"),
            format!("{text}\r\n")
        );
    }

    #[test]
    fn random_splices_keep_the_rules_and_decode_back() {
        let alphabet = [
            "a",
            "b",
            " ",
            "\t",
            ".",
            "=",
            "\r\n",
            "\n",
            "é",
            "日本",
            "{",
            "}",
            "~",
            "\u{1F600}",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..500 {
            let mut gen = |max: usize| -> String {
                (0..rng.usize(0..max))
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect()
            };
            let pieces: Vec<String> = (0..4).map(|_| gen(120)).collect();
            let values: Vec<String> = (0..3).map(|_| gen(90).replace(['\r', '\n'], "")).collect();
            let p: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let v: Vec<&str> = values.iter().map(String::as_str).collect();
            let out = write(&p, &v);
            check_lines(&out);
            let mut want = String::new();
            for (i, piece) in pieces.iter().enumerate() {
                want.push_str(&piece.replace("\r\n", "\n").replace('\n', "\r\n"));
                if let Some(v) = values.get(i) {
                    want.push_str(v);
                }
            }
            assert_eq!(String::from_utf8(decode(&out)).expect("utf8"), want);
        }
    }
}
