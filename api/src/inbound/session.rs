//! One inbound SMTP session: HELO/EHLO, MAIL, RCPT (our addresses only), DATA, RSET, NOOP,
//! QUIT; lines over 1,000 bytes, oversized messages and fast senders get their replies.
//! A session ends at its lifetime, or when nothing has moved a message on for the idle time
//! (see [`super::InboundSettings`]).

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{apply, report, Shared};
use hikyaku_queue_schema::verp;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
const MAX_LINE: usize = 1000;
/// Recipients per message.
const MAX_RCPTS: usize = 10;

/// Tells a client over a connection cap to come back later (`reply`, a 421), and closes.
pub(super) async fn refuse(mut stream: TcpStream, reply: &'static [u8]) {
    let _ = stream.write_all(reply).await;
}

/// When a session must next hear something that moves a message on, and when it ends.
struct Clock {
    /// The last greeting, accepted MAIL or RCPT, or message data.
    progress: Instant,
    idle: Duration,
    /// Start + the session's lifetime.
    end: Instant,
}

impl Clock {
    fn new(idle: Duration, lifetime: Duration) -> Self {
        let now = Instant::now();
        Clock {
            progress: now,
            idle,
            end: now + lifetime,
        }
    }

    /// The session moved a message on.
    fn progressed(&mut self) {
        self.progress = Instant::now();
    }

    /// The next deadline: idle or end of life, whichever comes first.
    fn deadline(&self) -> Instant {
        (self.progress + self.idle).min(self.end)
    }

    /// What to say when the deadline passes.
    fn farewell(&self) -> &'static [u8] {
        if Instant::now() >= self.end {
            b"421 4.4.2 Session too long, closing\r\n"
        } else {
            b"421 4.4.2 Idle timeout, closing\r\n"
        }
    }
}

/// The `SIZE=` parameter of a MAIL command: `Ok(None)` without one, `Ok(Some(n))` with one (a
/// number too large to count is `u64::MAX`: too big either way), `Err(())` when it is no number.
fn size_param(rest: &str) -> Result<Option<u64>, ()> {
    let Some(n) = rest.split_whitespace().find_map(|p| {
        p.get(..5)
            .filter(|k| k.eq_ignore_ascii_case("SIZE="))
            .and(p.get(5..))
    }) else {
        return Ok(None);
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    Ok(Some(n.parse::<u64>().unwrap_or(u64::MAX)))
}

enum Line {
    Eof,
    Text(Vec<u8>),
    TooLong,
}

async fn read_line(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    max: usize,
) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(max as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() != Some(&b'\n') {
        // Over the limit: skip to the end of the line.
        loop {
            let mut rest = Vec::new();
            let m = (&mut *r)
                .take(64 << 10)
                .read_until(b'\n', &mut rest)
                .await?;
            if m == 0 || rest.last() == Some(&b'\n') {
                return Ok(Line::TooLong);
            }
        }
    }
    Ok(Line::Text(buf))
}

/// The address inside `FROM:<…>` / `TO:<…>` (lowercased), if well-formed.
fn path_arg(rest: &str, keyword: &str) -> Option<String> {
    let rest = rest.trim_start();
    if !rest
        .get(..keyword.len())
        .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    {
        return None;
    }
    let rest = rest.get(keyword.len()..)?.trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].trim().to_ascii_lowercase())
}

/// Runs a session to its end.
pub(super) async fn run(shared: &Shared, stream: TcpStream, peer: IpAddr) -> std::io::Result<()> {
    let s = &shared.settings;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(format!("220 {} ESMTP hikyaku inbound\r\n", s.hostname).as_bytes())
        .await?;
    let mut greeted = false;
    let mut mail = false;
    let mut rcpts: Vec<String> = Vec::new();
    let mut clock = Clock::new(s.idle_timeout, s.max_session);
    loop {
        let line =
            match tokio::time::timeout_at(clock.deadline(), read_line(&mut r, MAX_LINE)).await {
                Err(_) => {
                    w.write_all(clock.farewell()).await?;
                    return Ok(());
                }
                Ok(l) => l?,
            };
        let text = match line {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                w.write_all(b"500 5.5.2 Line too long\r\n").await?;
                continue;
            }
            Line::Text(t) => t,
        };
        let text = String::from_utf8_lossy(&text);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
        let reply: std::borrow::Cow<'static, str> = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                if !greeted {
                    clock.progressed();
                }
                greeted = true;
                format!(
                    "250-{}\r\n250-SIZE {}\r\n250 8BITMIME\r\n",
                    s.hostname, s.max_message_bytes
                )
                .into()
            }
            "HELO" => {
                if !greeted {
                    clock.progressed();
                }
                greeted = true;
                format!("250 {}\r\n", s.hostname).into()
            }
            "MAIL" if !greeted => "503 5.5.1 Say EHLO first\r\n".into(),
            "MAIL" if mail => "503 5.5.1 Nested MAIL\r\n".into(),
            "MAIL" => match path_arg(rest, "FROM:") {
                None => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
                Some(_) if shared.limiter.check_key(&peer).is_err() => {
                    w.write_all(b"421 4.7.0 Too many messages from your address, slow down\r\n")
                        .await?;
                    return Ok(());
                }
                Some(_) => match size_param(rest) {
                    Err(()) => "501 5.5.4 Syntax: SIZE=<number>\r\n".into(),
                    Ok(Some(n)) if n > s.max_message_bytes as u64 => {
                        "552 5.3.4 Message too big\r\n".into()
                    }
                    Ok(_) => {
                        mail = true;
                        clock.progressed();
                        "250 2.1.0 Ok\r\n".into()
                    }
                },
            },
            "RCPT" if !mail => "503 5.5.1 Need MAIL first\r\n".into(),
            "RCPT" => match path_arg(rest, "TO:") {
                None => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into(),
                Some(_) if rcpts.len() >= MAX_RCPTS => "452 4.5.3 Too many recipients\r\n".into(),
                Some(a) if verp::is_verp(&a, &s.bounce_domain) || a == s.fbl_address => {
                    rcpts.push(a);
                    clock.progressed();
                    "250 2.1.5 Ok\r\n".into()
                }
                Some(_) => "550 5.7.1 Relaying denied: not an address of this host\r\n".into(),
            },
            "DATA" if rcpts.is_empty() => "554 5.5.1 No valid recipients\r\n".into(),
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let body = read_body(&mut r, s.max_message_bytes, &mut clock).await;
                let body = match body {
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        w.write_all(clock.farewell()).await?;
                        return Ok(());
                    }
                    b => b?,
                };
                let Some(body) = body else {
                    mail = false;
                    rcpts.clear();
                    w.write_all(b"552 5.3.4 Message too big\r\n").await?;
                    continue;
                };
                let parsed = report::parse(&body);
                let mut failed = false;
                for rcpt in &rcpts {
                    match apply::apply(&shared.state, &s.bounce_domain, s.soft, rcpt, &parsed).await
                    {
                        Ok(outcome) => crate::metrics::feedback(&outcome),
                        Err(e) => {
                            tracing::warn!(error = %e, "recording feedback failed");
                            failed = true;
                        }
                    }
                }
                mail = false;
                rcpts.clear();
                if failed {
                    "451 4.3.0 Temporary failure, try again later\r\n".into()
                } else {
                    "250 2.0.0 Ok: report taken\r\n".into()
                }
            }
            "RSET" => {
                mail = false;
                rcpts.clear();
                "250 2.0.0 Ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "VRFY" => "252 2.5.2 Cannot verify\r\n".into(),
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not implemented\r\n".into(),
        };
        w.write_all(reply.as_bytes()).await?;
    }
}

/// Reads a DATA body (un-dot-stuffed) up to `.`; `None` when it exceeds `max` (the rest is read
/// and dropped). Each line is progress; the session's lifetime still holds (`TimedOut`).
async fn read_body(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    max: usize,
    clock: &mut Clock,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    let mut too_big = false;
    let mut line_start = true;
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout_at(
            clock.deadline(),
            (&mut *r).take(64 << 10).read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle in DATA"))??;
        clock.progressed();
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line_start && (line == b".\r\n" || line == b".\n") {
            return Ok((!too_big).then_some(body));
        }
        let content = if line_start {
            line.strip_prefix(b".").unwrap_or(&line)
        } else {
            &line
        };
        line_start = line.last() == Some(&b'\n');
        if body.len() + content.len() > max {
            too_big = true;
            body = Vec::new();
        }
        if !too_big {
            body.extend_from_slice(content);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{path_arg, size_param};

    #[test]
    fn size_parameters() {
        assert_eq!(size_param(""), Ok(None));
        assert_eq!(size_param(" BODY=8BITMIME"), Ok(None));
        assert_eq!(size_param(" SIZE=1000"), Ok(Some(1000)));
        assert_eq!(size_param(" size=7 BODY=7BIT"), Ok(Some(7)));
        assert_eq!(
            size_param(" SIZE=99999999999999999999999"),
            Ok(Some(u64::MAX)),
            "too large to count is too big"
        );
        assert_eq!(size_param(" SIZE="), Err(()));
        assert_eq!(size_param(" SIZE=12x"), Err(()));
        assert_eq!(size_param(" SIZE=-1"), Err(()));
        assert_eq!(size_param(" SIZE=+1"), Err(()));
    }

    #[test]
    fn paths() {
        assert_eq!(
            path_arg("FROM:<A@B.test> SIZE=10", "FROM:"),
            Some("a@b.test".into())
        );
        assert_eq!(path_arg("from: <>", "FROM:"), Some(String::new()));
        assert_eq!(path_arg("TO:a@b", "TO:"), None);
        assert_eq!(path_arg("", "TO:"), None);
        assert_eq!(path_arg("TO:<x", "TO:"), None);
        // Non-ASCII where the keyword should be (a byte index inside a character) is no panic.
        assert_eq!(path_arg("\u{fffd}\u{fffd}", "FROM:"), None);
        assert_eq!(path_arg("FRéM:<a@b>", "FROM:"), None);
    }
}
