//! Open and click tracking put into a campaign's HTML body, once, when it is frozen: every
//! `http(s)` link becomes `{{tracking_url}}/c/N` (the API redirects to the N-th target, which
//! it keeps in `campaign_links`, never to a URL from the request) and a 1×1 pixel
//! `{{tracking_url}}/o.gif` goes before `</body>`. `tracking_url` is the per-recipient merge
//! field `{public_url}/t/{token}` ([`crate::tokens::Purpose::Track`]).
//!
//! A scan for `href` attributes, not an HTML parser: links with merge placeholders (the
//! unsubscribe link, personalised URLs) and other schemes (`mailto:`) stay as written, and the
//! text body is never touched.

use std::fmt::Write as _;

/// The computed merge field that tracking URLs are built on.
pub const TRACKING_URL: &str = "tracking_url";

/// An HTML body with tracking put in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The body to freeze.
    pub html: String,
    /// Click targets in link order: `{{tracking_url}}/c/N` redirects to `links[N]`. Entities
    /// are decoded and the URL made header-safe (visible ASCII), ready for `Location`.
    pub links: Vec<String>,
}

/// Rewrites `html`'s links (with `clicks`) and adds the open pixel (with `opens`). An empty
/// body stays empty: a text-only campaign gets no HTML part for the sake of a pixel.
pub fn rewrite(html: &str, clicks: bool, opens: bool) -> Tracked {
    let mut links = Vec::new();
    if html.is_empty() {
        return Tracked {
            html: String::new(),
            links,
        };
    }
    let mut out = if clicks {
        rewrite_links(html, &mut links)
    } else {
        html.to_owned()
    };
    if opens {
        let pixel = format!(
            "<img src=\"{{{{{TRACKING_URL}}}}}/o.gif\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">"
        );
        let at = rfind_ci(out.as_bytes(), b"</body").unwrap_or(out.len());
        // On a line of its own: the pixel never pushes a long line past 998 bytes.
        let lead = if at == 0 || out.as_bytes()[at - 1] == b'\n' {
            ""
        } else {
            "\n"
        };
        out.insert_str(at, &format!("{lead}{pixel}\n"));
    }
    Tracked { html: out, links }
}

/// Replaces each quoted `href="http(s)://…"` value with its tracking URL, collecting targets.
fn rewrite_links(html: &str, links: &mut Vec<String>) -> String {
    let b = html.as_bytes();
    let mut out = String::with_capacity(html.len());
    // `html[..copied]` is in `out` already. Every index below sits on an ASCII byte, so every
    // slice is on a character boundary.
    let mut copied = 0;
    let mut i = 0;
    while let Some(at) = find_ci(&b[i..], b"href").map(|p| p + i) {
        i = at + 4;
        // An attribute of its own (not `data-href`) of a link tag (not `<link>` or `<base>`,
        // which clients load or resolve without a click), outside comments; then `=` and a
        // quote.
        if at == 0 || !b[at - 1].is_ascii_whitespace() || !in_link_tag(b, at) {
            continue;
        }
        let eq = skip_ws(b, at + 4);
        if b.get(eq) != Some(&b'=') {
            continue;
        }
        let open = skip_ws(b, eq + 1);
        let Some(&quote) = b.get(open).filter(|q| matches!(q, b'"' | b'\'')) else {
            continue;
        };
        let start = open + 1;
        let Some(len) = b[start..].iter().position(|&c| c == quote) else {
            break;
        };
        let end = start + len;
        i = end + 1;
        let value = &html[start..end];
        if value.contains("{{") {
            continue;
        }
        let url = target(value);
        if !is_http(&url) {
            continue;
        }
        out.push_str(&html[copied..start]);
        let _ = write!(out, "{{{{{TRACKING_URL}}}}}/c/{}", links.len());
        copied = end;
        links.push(url);
    }
    out.push_str(&html[copied..]);
    out
}

/// Whether the attribute at `at` belongs to an `<a>` or `<area>` tag that is not inside a
/// comment.
fn in_link_tag(b: &[u8], at: usize) -> bool {
    let before = &b[..at];
    let Some(open) = before.iter().rposition(|&c| c == b'<') else {
        return false;
    };
    if before[open..].contains(&b'>') {
        return false;
    }
    if let Some(comment) = rfind_ci(before, b"<!--") {
        if rfind_ci(&before[comment..], b"-->").is_none() {
            return false;
        }
    }
    let name_end = before[open + 1..]
        .iter()
        .position(|c| c.is_ascii_whitespace() || *c == b'/')
        .map_or(before.len(), |p| open + 1 + p);
    let name = &before[open + 1..name_end];
    name.eq_ignore_ascii_case(b"a") || name.eq_ignore_ascii_case(b"area")
}

fn is_http(url: &str) -> bool {
    let b = url.as_bytes();
    let has = |p: &[u8]| b.len() > p.len() && b[..p.len()].eq_ignore_ascii_case(p);
    has(b"http://") || has(b"https://")
}

/// The URL an attribute value stands for, as a browser would follow it: entities decoded,
/// surrounding whitespace and inner tabs and newlines dropped, anything but visible ASCII
/// percent-encoded (as UTF-8).
fn target(value: &str) -> String {
    let url = unescape(value);
    let mut out = String::with_capacity(url.len());
    for c in url
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
    {
        if c.is_ascii_graphic() {
            out.push(c);
        } else {
            for byte in c.to_string().bytes() {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// Decodes character references (`&amp;`, `&#38;`, `&#x26;`, …); unknown ones stay as written.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p + 1..];
        let decoded = rest
            .find(';')
            .filter(|&e| e <= 10)
            .and_then(|e| Some((entity(&rest[..e])?, e + 1)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => out.push('&'),
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn rfind_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .rposition(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIXEL: &str = "<img src=\"{{tracking_url}}/o.gif\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">";

    #[test]
    fn links_are_rewritten_in_order_and_targets_kept() {
        let html = "<p><a href=\"https://shop.test/a?x=1&amp;y=2\">A</a>\n\
                    <A class=b HREF = 'http://b.test/'>B</A>\n\
                    <a href=\"{{unsubscribe_url}}\">stop</a> <a href=\"https://p.test/{{id}}\">me</a>\n\
                    <a href=\"mailto:x@y.test\">mail</a> <a data-href=\"https://no.test/\">x</a>\n\
                    <a href=\"https://shop.test/a?x=1&amp;y=2\">A again</a></p>";
        let t = rewrite(html, true, false);
        assert_eq!(
            t.html,
            "<p><a href=\"{{tracking_url}}/c/0\">A</a>\n\
             <A class=b HREF = '{{tracking_url}}/c/1'>B</A>\n\
             <a href=\"{{unsubscribe_url}}\">stop</a> <a href=\"https://p.test/{{id}}\">me</a>\n\
             <a href=\"mailto:x@y.test\">mail</a> <a data-href=\"https://no.test/\">x</a>\n\
             <a href=\"{{tracking_url}}/c/2\">A again</a></p>"
        );
        assert_eq!(
            t.links,
            [
                "https://shop.test/a?x=1&y=2",
                "http://b.test/",
                "https://shop.test/a?x=1&y=2"
            ]
        );
        assert_eq!(rewrite(html, true, false), t, "the same every time");
    }

    #[test]
    fn only_link_tags_outside_comments_are_rewritten() {
        let html = "<head><link rel=stylesheet href=\"https://fonts.test/css\">\
                    <base href=\"https://shop.test/\"></head>\
                    <!-- <a href=\"https://old.test/\">old</a> -->\
                    <area shape=rect href=\"https://map.test/\">\
                    <a\thref=\"https://a.test/\">a</a><abbr title=x href=\"https://no.test/\">";
        let t = rewrite(html, true, false);
        assert_eq!(t.links, ["https://map.test/", "https://a.test/"]);
        for kept in [
            "https://fonts.test/css",
            "https://shop.test/",
            "https://old.test/",
            "https://no.test/",
        ] {
            assert!(t.html.contains(kept), "{kept} left as written: {}", t.html);
        }
    }

    #[test]
    fn targets_are_what_a_browser_follows() {
        for (value, want) in [
            (" https://a.test/x ", "https://a.test/x"),
            (
                "https://a.test/&#38;&#x26;&lt;&bogus;&",
                "https://a.test/&&<&bogus;&",
            ),
            (
                "HTTPS://a.test/über?q=a b",
                "HTTPS://a.test/%C3%BCber?q=a%20b",
            ),
            ("https://a.test/\n  path", "https://a.test/%20%20path"),
            ("&#104;ttps://a.test/", "https://a.test/"),
        ] {
            let t = rewrite(&format!("<a href=\"{value}\">x</a>"), true, false);
            assert_eq!(t.links, [want], "{value:?}");
        }
        for not_http in [
            "http://",
            "ftp://a.test/",
            "javascript:alert(1)",
            "/relative",
            "",
        ] {
            let html = format!("<a href=\"{not_http}\">x</a>");
            assert_eq!(rewrite(&html, true, false).html, html, "{not_http:?}");
        }
    }

    #[test]
    fn pixel_goes_before_body_end_or_at_the_end() {
        assert_eq!(
            rewrite("<html><body><p>Hi</p></BODY></html>", false, true).html,
            format!("<html><body><p>Hi</p>\n{PIXEL}\n</BODY></html>")
        );
        assert_eq!(
            rewrite("<p>Hi</p>\n", false, true).html,
            format!("<p>Hi</p>\n{PIXEL}\n")
        );
        assert!(PIXEL.contains(&format!("{{{{{TRACKING_URL}}}}}")));
    }

    #[test]
    fn off_or_empty_changes_nothing() {
        let html = "<a href=\"https://a.test/\">x</a>";
        assert_eq!(
            rewrite(html, false, false),
            Tracked {
                html: html.into(),
                links: vec![]
            }
        );
        assert_eq!(rewrite("", true, true).html, "");
        let opens_only = rewrite(html, false, true);
        assert!(opens_only.html.starts_with(html) && opens_only.links.is_empty());
    }

    #[test]
    fn unclosed_or_odd_markup_is_left_alone() {
        for html in [
            "<a href=\"https://a.test/",
            "<a href=https://a.test/>x</a>",
            "<a href>x</a> href",
            "href=\"https://a.test/\"",
        ] {
            let t = rewrite(html, true, false);
            assert_eq!(t.html, html);
            assert!(t.links.is_empty(), "{html}");
        }
        let t = rewrite("<p>über</p><a\thref=\"https://ü.test/\">ü</a>", true, false);
        assert_eq!(t.html, "<p>über</p><a\thref=\"{{tracking_url}}/c/0\">ü</a>");
        assert_eq!(t.links, ["https://%C3%BC.test/"]);
    }
}
