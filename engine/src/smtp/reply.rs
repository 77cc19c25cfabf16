//! SMTP replies: parsing (multi-line, RFC 5321 §4.2) and enhanced status codes (RFC 3463).

use std::fmt;

/// Longest reply line accepted; a peer sending more is speaking garbage.
const MAX_LINE: usize = 2048;
/// Most lines in one reply.
const MAX_LINES: usize = 128;

/// An enhanced status code `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2, 4 or 5.
    pub class: u8,
    /// Subject (0–999).
    pub subject: u16,
    /// Detail (0–999).
    pub detail: u16,
}

impl EnhancedCode {
    /// Parses a code at the start of `text` (`"5.1.1 user unknown"`).
    pub fn parse_prefix(text: &str) -> Option<EnhancedCode> {
        let word = text.split_ascii_whitespace().next()?;
        let mut parts = word.splitn(3, '.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        (matches!(class, 2 | 4 | 5) && subject < 1000 && detail < 1000).then_some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A complete reply: code, enhanced code (if the first line carries one), and the text of every
/// line joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Basic reply code (200–599 for a well-formed peer).
    pub code: u16,
    /// Enhanced status code, if present.
    pub enhanced: Option<EnhancedCode>,
    /// Text after the code on each line, joined with `\n`.
    pub text: String,
}

impl Reply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (intermediate: 354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 421: the server is closing the connection.
    pub fn closes_connection(&self) -> bool {
        self.code == 421
    }

    /// The reply as one line for logs and events: `"550 5.1.1 text"`.
    pub fn one_line(&self) -> String {
        format!("{} {}", self.code, self.text.replace('\n', " "))
    }
}

/// Why bytes from the peer are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line does not start with a three-digit code followed by space, `-` or end of line.
    #[error("malformed reply line: {0:?}")]
    Malformed(String),
    /// Lines of one multi-line reply carry different codes.
    #[error("multi-line reply changes code from {0} to {1}")]
    CodeChanged(u16, u16),
    /// A line or the reply is longer than any real server sends.
    #[error("reply too long")]
    TooLong,
}

/// Parses one reply from the front of `buf`.
///
/// Returns `Ok(None)` if `buf` does not yet hold a complete reply, or the reply and the number of
/// bytes it used. Lines end in CRLF; a bare LF is tolerated.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = 0u16;
    let mut text = String::new();
    let mut enhanced = None;
    for line_no in 0..MAX_LINES {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return if buf.len() - pos > MAX_LINE {
                Err(ReplyError::TooLong)
            } else {
                Ok(None)
            };
        };
        if nl > MAX_LINE {
            return Err(ReplyError::TooLong);
        }
        let mut line = &buf[pos..pos + nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        pos += nl + 1;
        let malformed = || ReplyError::Malformed(String::from_utf8_lossy(line).into_owned());
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(malformed());
        }
        let this_code = u16::from(line[0] - b'0') * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        if !(100..600).contains(&this_code) {
            return Err(malformed());
        }
        let (last, rest) = match line.get(3) {
            None => (true, &[][..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(malformed()),
        };
        let rest = String::from_utf8_lossy(rest);
        if line_no == 0 {
            code = this_code;
            enhanced = EnhancedCode::parse_prefix(&rest);
            // One allocation of the right size for the usual one-line reply.
            text = rest.into_owned();
        } else {
            if this_code != code {
                return Err(ReplyError::CodeChanged(code, this_code));
            }
            text.push('\n');
            text.push_str(&rest);
        }
        if last {
            return Ok(Some((
                Reply {
                    code,
                    enhanced,
                    text,
                },
                pos,
            )));
        }
    }
    Err(ReplyError::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &str) -> Result<Option<(Reply, usize)>, ReplyError> {
        parse_reply(input.as_bytes())
    }

    #[test]
    fn single_and_multi_line_replies() {
        let (r, used) = parse_all("250 2.0.0 Ok\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!((r.code, used), (250, 14));
        assert_eq!(r.enhanced.map(|e| e.to_string()).as_deref(), Some("2.0.0"));
        let gmail = "421-4.7.28 Our system has detected an unusual rate of\r\n\
                     421 4.7.28 unsolicited mail - gsmtp\r\n250 next";
        let (r, used) = parse_all(gmail).expect("ok").expect("complete");
        assert_eq!(r.code, 421);
        assert_eq!(r.text.lines().count(), 2);
        assert_eq!(&gmail[used..], "250 next");
        let (r, _) = parse_all("354\r\n").expect("ok").expect("complete");
        assert_eq!((r.code, r.text.as_str()), (354, ""));
        let (r, _) = parse_all("220 bare lf\n").expect("ok").expect("complete");
        assert_eq!(r.code, 220);
    }

    #[test]
    fn incomplete_input_waits_for_more() {
        for partial in ["", "25", "250-first\r\n", "250-first\r\n250 sec"] {
            assert_eq!(parse_all(partial), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let table = [
            "HELLO? this is not SMTP\r\n",
            "25x ok\r\n",
            "2500 ok\r\n",
            "099 low\r\n",
            "700 high\r\n",
            "250-a\r\n251 b\r\n",
        ];
        for g in table {
            assert!(parse_all(g).is_err(), "{g:?}");
        }
        assert_eq!(parse_reply(&vec![b'2'; 5000]), Err(ReplyError::TooLong));
    }

    #[test]
    fn enhanced_codes_only_when_well_formed() {
        assert_eq!(
            EnhancedCode::parse_prefix("5.1.1 user unknown"),
            Some(EnhancedCode {
                class: 5,
                subject: 1,
                detail: 1
            })
        );
        for bad in ["", "Ok", "5.1 x", "3.1.1 x", "5.x.1", "[TSS04] x"] {
            assert_eq!(EnhancedCode::parse_prefix(bad), None, "{bad}");
        }
    }
}
