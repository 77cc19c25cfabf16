//! ISO-2022-JP (7bit) messages for Japanese mobile carriers that want them (legacy au/EZweb
//! handsets read Shift_JIS or ISO-2022-JP only). A site policy with `charset = "iso-2022-jp"`,
//! or a campaign with `mobile_charset = "iso-2022-jp"` for its recipients at carrier domains
//! ([`hikyaku_queue_schema::carriers`]), gets every message built here, per recipient: merge values are filled into the UTF-8
//! templates, then text parts are encoded with encoding_rs, line by line (each line returns
//! to ASCII, so lines stand alone), headers as RFC 2047 `=?ISO-2022-JP?B?…?=` words.
//!
//! A template character ISO-2022-JP cannot carry (emoji, accented Latin, most non-Japanese
//! scripts; half-width kana are written full-width, as the WHATWG encoder does) is a campaign error, named in [`first_unmappable`]; such a character in a merge
//! value becomes `〓` (geta), the usual mark for it in Japanese mail.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use encoding_rs::ISO_2022_JP;

/// The character set a site's messages are written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum Charset {
    /// UTF-8 (the pre-rendered skeleton: 7bit or quoted-printable bodies).
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// ISO-2022-JP, 7bit, built per message.
    #[serde(rename = "iso-2022-jp")]
    Iso2022Jp,
}

impl Charset {
    /// The charset named `name` (`utf-8` or `iso-2022-jp`, any case).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "utf-8" => Some(Charset::Utf8),
            "iso-2022-jp" => Some(Charset::Iso2022Jp),
            _ => None,
        }
    }
}

/// The mark written for a merge-value character ISO-2022-JP cannot carry.
pub const GETA: char = '〓';

/// The first character of `s` that ISO-2022-JP cannot carry.
pub fn first_unmappable(s: &str) -> Option<char> {
    s.chars().find(|c| {
        let mut b = [0u8; 4];
        ISO_2022_JP.encode(c.encode_utf8(&mut b)).2
    })
}

/// `s` with every character ISO-2022-JP cannot carry replaced by [`GETA`].
pub fn carriable(s: &str) -> std::borrow::Cow<'_, str> {
    if first_unmappable(s).is_none() {
        return std::borrow::Cow::Borrowed(s);
    }
    s.chars()
        .map(|c| {
            if first_unmappable(c.encode_utf8(&mut [0u8; 4])).is_some() {
                GETA
            } else {
                c
            }
        })
        .collect::<String>()
        .into()
}

/// Appends `text` (already carriable) as ISO-2022-JP, CRLF line ends, to `out`.
pub fn encode_body(text: &str, out: &mut Vec<u8>) {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.strip_suffix('\n').unwrap_or(&text);
    for line in text.split('\n') {
        let encoded = ISO_2022_JP.encode(line).0;
        if encoded.len() <= MAX_LINE {
            out.extend_from_slice(&encoded);
            out.extend_from_slice(b"\r\n");
            continue;
        }
        // Escape sequences lengthen mixed lines: break one over RFC 5322's limit into lines
        // that each fit (each chunk encoded on its own, so each returns to ASCII). The length
        // of a chunk is counted as it grows, character by character, not by encoding it again
        // per character (which was quadratic in the line).
        let mut start = 0;
        let mut len = 0;
        let mut state = Set::Ascii;
        for (i, c) in line.char_indices() {
            let (set, bytes) = Set::of(c);
            let switch = if set == state { 0 } else { 3 };
            // Bytes with `c`, and the escape back to ASCII at the end.
            let back = if set == Set::Ascii { 0 } else { 3 };
            if i > start && len + switch + bytes + back > MAX_LINE {
                write_chunk(&line[start..i], out);
                start = i;
                len = 0;
                state = Set::Ascii;
            }
            let switch = if set == state { 0 } else { 3 };
            len += switch + bytes;
            state = set;
        }
        write_chunk(&line[start..], out);
    }
}

/// The character sets of ISO-2022-JP's encoder states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Set {
    /// `ESC ( B`, one byte.
    Ascii,
    /// `ESC ( J` (JIS X 0201 Roman: `¥`, `‾`), one byte.
    Roman,
    /// `ESC $ B` (JIS X 0208, half-width kana written full-width), two bytes.
    Jis0208,
}

impl Set {
    /// The set `c` is written in and its bytes there.
    fn of(c: char) -> (Set, usize) {
        match c {
            c if c.is_ascii() => (Set::Ascii, 1),
            '\u{a5}' | '\u{203e}' => (Set::Roman, 1),
            _ => (Set::Jis0208, 2),
        }
    }
}

/// Writes one encoded line; should the count above ever fall short of what the encoder
/// writes, the chunk is written in halves instead.
fn write_chunk(chunk: &str, out: &mut Vec<u8>) {
    let encoded = ISO_2022_JP.encode(chunk).0;
    if encoded.len() <= MAX_LINE || chunk.chars().count() < 2 {
        out.extend_from_slice(&encoded);
        out.extend_from_slice(b"\r\n");
        return;
    }
    let mid = chunk
        .char_indices()
        .nth(chunk.chars().count() / 2)
        .map_or(chunk.len(), |(i, _)| i);
    write_chunk(&chunk[..mid], out);
    write_chunk(&chunk[mid..], out);
}

const MAX_LINE: usize = 998;

/// `text` (already carriable) as a header value: plain when ASCII, else RFC 2047 encoded
/// words of at most 75 characters, folded onto continuation lines.
pub fn header_value(text: &str) -> String {
    use std::fmt::Write as _;
    if text.is_ascii() {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    // 12 characters of kanji: ≤ 3 + 24 + 3 bytes → 40 base64 characters, 58 with the wrapping.
    for (i, chunk) in chars.chunks(12).enumerate() {
        if i > 0 {
            out.push_str("\r\n ");
        }
        let s: String = chunk.iter().collect();
        let _ = write!(
            out,
            "=?ISO-2022-JP?B?{}?=",
            STANDARD.encode(ISO_2022_JP.encode(&s).0)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_decoder() {
        let text = "こんにちは、太郎さん。\nABC 123\n今週のお知らせです。\n";
        let mut out = Vec::new();
        encode_body(text, &mut out);
        assert!(out.is_ascii(), "7bit");
        let (decoded, _, bad) = ISO_2022_JP.decode(&out);
        assert!(!bad);
        assert_eq!(decoded, text.replace('\n', "\r\n"));
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 998));
    }

    #[test]
    fn long_mixed_lines_are_broken_under_998_octets() {
        let line = "aあ".repeat(400);
        let mut out = Vec::new();
        encode_body(&line, &mut out);
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.len() <= 999), "998 + CR");
        let (decoded, _, bad) = ISO_2022_JP.decode(&out);
        assert!(!bad);
        assert_eq!(decoded.replace("\r\n", ""), line);
    }

    #[test]
    fn header_words_are_short_and_decode() {
        let subject = "【重要】今週のお知らせ：新商品のご案内と店舗営業時間の変更について";
        let v = header_value(subject);
        assert!(v.is_ascii());
        let mut decoded = String::new();
        for word in v.split("\r\n ") {
            assert!(word.len() <= 75, "{word}");
            let b64 = word
                .strip_prefix("=?ISO-2022-JP?B?")
                .and_then(|w| w.strip_suffix("?="))
                .expect("an encoded word");
            let bytes = STANDARD.decode(b64).expect("base64");
            decoded.push_str(&ISO_2022_JP.decode(&bytes).0);
        }
        assert_eq!(decoded, subject);
        assert_eq!(header_value("Weekly news"), "Weekly news");
    }

    #[test]
    fn unmappable_characters_are_named_or_replaced() {
        assert_eq!(first_unmappable("ニュース"), None);
        assert_eq!(
            first_unmappable("ﾆｭｰｽ"),
            None,
            "half-width kana go full-width"
        );
        assert_eq!(first_unmappable("café"), Some('é'));
        assert_eq!(first_unmappable("안녕"), Some('안'));
        assert_eq!(first_unmappable("hi 😀"), Some('😀'));
        assert_eq!(carriable("太郎😀"), "太郎〓");
        assert_eq!(carriable("plain"), "plain");
    }
}
