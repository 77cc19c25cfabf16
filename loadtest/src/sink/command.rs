//! Parsing one SMTP command line into a verb and its argument, without allocating.

/// One parsed command line (CRLF already stripped). Arguments borrow from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `HELO domain`.
    Helo(&'a [u8]),
    /// `EHLO domain`.
    Ehlo(&'a [u8]),
    /// `MAIL FROM:<path> [params]`; holds the reverse path without brackets (may be empty).
    Mail(&'a [u8]),
    /// `RCPT TO:<path> [params]`; holds the forward path without brackets (never empty).
    Rcpt(&'a [u8]),
    /// `DATA`.
    Data,
    /// `BDAT <size> [LAST]` (RFC 3030): `size` octets of content follow the line.
    Bdat {
        /// Octets of content that follow the command line.
        size: u64,
        /// Whether this chunk ends the message.
        last: bool,
    },
    /// `BDAT` whose size is missing or not a number, or with extra arguments: the length of
    /// the content that follows is unknown, so the session cannot find the next command.
    BadBdat,
    /// `RSET`.
    Rset,
    /// `NOOP [text]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `STARTTLS`.
    StartTls,
    /// A known verb whose arguments are missing or malformed (501).
    BadArguments,
    /// An unknown verb (500).
    Unknown,
}

impl<'a> Command<'a> {
    /// Parses one line; never fails, since anything unparseable is itself an answerable
    /// command (`Unknown` or `BadArguments`).
    pub fn parse(line: &'a [u8]) -> Command<'a> {
        let (verb, arg) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], trim(&line[space + 1..])),
            None => (line, &line[line.len()..]),
        };
        let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);
        let no_arg = |cmd: Command<'a>| {
            if arg.is_empty() {
                cmd
            } else {
                Command::BadArguments
            }
        };
        if is(b"MAIL") {
            path_after(arg, b"FROM:").map_or(Command::BadArguments, Command::Mail)
        } else if is(b"RCPT") {
            match path_after(arg, b"TO:") {
                Some(path) if !path.is_empty() => Command::Rcpt(path),
                _ => Command::BadArguments,
            }
        } else if is(b"BDAT") {
            bdat_args(arg).map_or(Command::BadBdat, |(size, last)| Command::Bdat {
                size,
                last,
            })
        } else if is(b"DATA") {
            no_arg(Command::Data)
        } else if is(b"EHLO") || is(b"HELO") {
            if arg.is_empty() {
                Command::BadArguments
            } else if is(b"EHLO") {
                Command::Ehlo(arg)
            } else {
                Command::Helo(arg)
            }
        } else if is(b"RSET") {
            no_arg(Command::Rset)
        } else if is(b"NOOP") {
            Command::Noop
        } else if is(b"QUIT") {
            no_arg(Command::Quit)
        } else if is(b"STARTTLS") {
            no_arg(Command::StartTls)
        } else {
            Command::Unknown
        }
    }
}

/// The path after `keyword` (e.g. `FROM:`), case-insensitively: `<path>` without brackets,
/// or a bare token up to the first space for lenient clients. `None` if malformed.
fn path_after<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = trim(&arg[keyword.len()..]);
    if let Some(inner) = rest.strip_prefix(b"<") {
        let close = inner.iter().position(|&b| b == b'>')?;
        Some(&inner[..close])
    } else {
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

/// Parses `<size> [LAST]` (case-insensitive `LAST`, decimal digits only); `None` if the size
/// is missing, not a number, overflows `u64`, or anything else follows.
fn bdat_args(arg: &[u8]) -> Option<(u64, bool)> {
    let mut words = arg
        .split(|b| matches!(b, b' ' | b'\t'))
        .filter(|word| !word.is_empty());
    let digits = words.next()?;
    let mut size = 0u64;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        size = size.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return None,
    };
    words.next().is_none().then_some((size, last))
}

/// Strips spaces and tabs at both ends.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    bytes.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_envelope_commands() {
        assert_eq!(
            Command::parse(b"MAIL FROM:<a@b.test> SIZE=10"),
            Command::Mail(b"a@b.test")
        );
        assert_eq!(Command::parse(b"mail from: <>"), Command::Mail(b""));
        assert_eq!(
            Command::parse(b"RCPT TO:<x@y.test>"),
            Command::Rcpt(b"x@y.test")
        );
        assert_eq!(
            Command::parse(b"rcpt to:x@y.test NOTIFY=NEVER"),
            Command::Rcpt(b"x@y.test")
        );
        assert_eq!(Command::parse(b"RCPT TO:<>"), Command::BadArguments);
        assert_eq!(Command::parse(b"RCPT TO:<x@y"), Command::BadArguments);
        assert_eq!(Command::parse(b"MAIL"), Command::BadArguments);
        assert_eq!(Command::parse(b"data"), Command::Data);
        assert_eq!(Command::parse(b"DATA now"), Command::BadArguments);
        assert_eq!(
            Command::parse(b"EHLO client.test"),
            Command::Ehlo(b"client.test")
        );
        assert_eq!(Command::parse(b"HELO"), Command::BadArguments);
        assert_eq!(Command::parse(b"NOOP hi"), Command::Noop);
        assert_eq!(Command::parse(b"StartTLS"), Command::StartTls);
        assert_eq!(Command::parse(b""), Command::Unknown);
    }

    #[test]
    fn parses_bdat() {
        assert_eq!(
            Command::parse(b"BDAT 10 LAST"),
            Command::Bdat {
                size: 10,
                last: true
            }
        );
        assert_eq!(
            Command::parse(b"bdat 0 last"),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        assert_eq!(
            Command::parse(b"BDAT  2048 \t"),
            Command::Bdat {
                size: 2048,
                last: false
            }
        );
        assert_eq!(
            Command::parse(b"BDAT 18446744073709551615"),
            Command::Bdat {
                size: u64::MAX,
                last: false
            }
        );
        for bad in [
            &b"BDAT"[..],
            b"BDAT LAST",
            b"BDAT 12x LAST",
            b"BDAT -1",
            b"BDAT +1",
            b"BDAT 18446744073709551616",
            b"BDAT 10 FIRST",
            b"BDAT 10 LAST now",
        ] {
            assert_eq!(
                Command::parse(bad),
                Command::BadBdat,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
