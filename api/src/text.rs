//! Text that leaves hikyaku for a spreadsheet or a terminal, and text bound for a mail header:
//! the one place each rule lives.
//!
//! - [`csv_field`]: every CSV cell written (digest, campaign reports, suppression exports),
//!   quoted per RFC 4180 and neutralised per OWASP's CSV-injection rule: a cell starting with
//!   `=`, `+`, `-`, `@`, tab or CR gets a leading `'` (and quotes), so a spreadsheet shows it
//!   as text instead of running it. [`csv_unguard`] undoes that on import, so an export imports
//!   back exactly as it was.
//! - [`terminal`]: remote or customer text printed on an operator's terminal (SMTP replies,
//!   site and host names, campaign names), without escape sequences or control characters.
//! - [`is_invisible_format`]: Unicode formatting characters that can disguise a header
//!   (Trojan-Source-style bidi overrides, zero-width characters), refused in header-bound
//!   fields.

use std::borrow::Cow;

/// Characters that make a spreadsheet read a cell as a formula (OWASP).
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether `s` would be read as a formula, or is a `'`-guarded text that would be unguarded
/// on import (so it needs a guard of its own to come back unchanged).
fn needs_guard(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if FORMULA_START.contains(&c) => true,
        Some('\'') => chars
            .next()
            .is_some_and(|c| c == '\'' || FORMULA_START.contains(&c)),
        _ => false,
    }
}

/// One CSV cell: `'`-prefixed when a spreadsheet would run it as a formula (see the module
/// docs), quoted when it must be (RFC 4180) or was guarded.
pub fn csv_field(s: &str) -> String {
    let guard = needs_guard(s);
    if guard || s.contains([',', '"', '\n', '\r']) {
        format!(
            "\"{}{}\"",
            if guard { "'" } else { "" },
            s.replace('"', "\"\"")
        )
    } else {
        s.to_owned()
    }
}

/// The value of a cell [`csv_field`] wrote (already unquoted): its guard taken off.
pub fn csv_unguard(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if needs_guard(cell) => rest,
        _ => cell,
    }
}

/// `s` fit for a terminal: ANSI/VT escape sequences (CSI, OSC, DCS and the like, 7- and 8-bit)
/// removed whole, other control characters (C0, DEL, C1) dropped, tab and line breaks made
/// spaces so one field stays on its line.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' | '\n' | '\r' | '\u{b}' | '\u{c}' => out.push(' '),
            // ESC: the 7-bit form of the C1 control that follows it.
            '\u{1b}' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // Character-set and other two- or three-byte sequences: intermediates, final.
                Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
                    while chars
                        .next_if(|c| ('\u{20}'..='\u{2f}').contains(c))
                        .is_some()
                    {}
                    chars.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Skips a control sequence's parameters and intermediates up to its final byte.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    // A malformed sequence ends at the first character that cannot be part of one, which
    // stays: the rest is text.
    while let Some(c) = chars.next_if(|c| ('\u{20}'..='\u{7e}').contains(c)) {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
    }
}

/// Skips a control string (OSC, DCS, SOS, PM, APC) up to its terminator (BEL, ST, ESC \).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

/// Unicode formatting characters that are invisible yet change how text around them reads:
/// bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069), direction marks
/// (U+200E, U+200F, U+061C), line and paragraph separators (U+2028, U+2029), zero-width
/// characters (U+200B–U+200D, U+2060, the BOM U+FEFF) and tag characters (U+E0000–U+E007F).
/// Refused in text bound for mail headers (and in addresses); bodies keep them (emoji
/// sequences use the zero-width joiner).
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{061c}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{200b}'..='\u{200d}'
            | '\u{2060}'
            | '\u{feff}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// The first invisible formatting character of `s`, as `U+XXXX`, for an error message.
pub fn invisible_format_in(s: &str) -> Option<String> {
    s.chars()
        .find(|c| is_invisible_format(*c))
        .map(|c| format!("U+{:04X}", u32::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("x"), "x");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+2"), "\"'=1+2\"");
        assert_eq!(csv_field("+81 3"), "\"'+81 3\"");
        assert_eq!(csv_field("-x"), "\"'-x\"");
        assert_eq!(csv_field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(csv_field("\tx"), "\"'\tx\"");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(csv_field("=HYPERLINK(\"u\")"), "\"'=HYPERLINK(\"\"u\"\")\"");
        assert_eq!(csv_field("'plain"), "'plain");
        assert_eq!(csv_field("'=x"), "\"''=x\"");
        assert_eq!(csv_field("a=b"), "a=b");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn an_unguarded_cell_is_the_value_written() {
        for v in [
            "x", "=1", "'=1", "''=1", "'x", "''", "'", "-", "@a", "+1", "a-b", "\t1", "",
        ] {
            let cell = csv_field(v);
            let unquoted = cell
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .map_or(cell.clone(), |c| c.replace("\"\"", "\""));
            assert_eq!(csv_unguard(&unquoted), v, "{v:?} → {cell:?}");
        }
    }

    #[test]
    fn terminal_text_has_no_escape_sequences_or_controls() {
        assert_eq!(terminal("plain"), "plain");
        assert_eq!(terminal("a\u{1b}[31mred\u{1b}[0m"), "ared");
        assert_eq!(terminal("\u{1b}]0;title\u{7}after"), "after");
        assert_eq!(terminal("\u{1b}]8;;http://x\u{1b}\\link"), "link");
        assert_eq!(terminal("a\u{9b}2Jb"), "ab");
        assert_eq!(terminal("\u{1b}(Bx"), "x");
        assert_eq!(terminal("\u{1b}Px\u{9c}y"), "y");
        assert_eq!(terminal("a\u{7f}b\u{85}c\u{0}d\u{7}"), "abcd");
        assert_eq!(terminal("line\r\nnext\tcol"), "line  next col");
        assert_eq!(terminal("日本語 ok"), "日本語 ok");
        assert_eq!(terminal("trailing \u{1b}"), "trailing ");
        assert_eq!(terminal("\u{9b}日本"), "日本");
        for s in ["\u{1b}[", "\u{1b}]", "\u{9b}", "\u{1b}(", "x\u{1b}P"] {
            assert!(!terminal(s).chars().any(char::is_control), "{s:?}");
        }
    }

    #[test]
    fn invisible_formatting_characters() {
        for c in [
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{061c}',
            '\u{2028}',
            '\u{2029}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{e0000}',
            '\u{e0041}',
            '\u{e007f}',
        ] {
            assert!(is_invisible_format(c), "U+{:04X}", u32::from(c));
        }
        for c in [
            'a',
            'あ',
            '\u{2000}',
            '\u{2065}',
            '\u{206a}',
            '\u{e0080}',
            '👩',
        ] {
            assert!(!is_invisible_format(c), "U+{:04X}", u32::from(c));
        }
        assert_eq!(
            invisible_format_in("ab\u{202e}c").as_deref(),
            Some("U+202E")
        );
        assert_eq!(invisible_format_in("abc"), None);
    }
}
