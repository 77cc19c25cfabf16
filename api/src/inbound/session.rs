//! One inbound SMTP session: HELO/EHLO, MAIL, RCPT (our addresses only), DATA, RSET, NOOP,
//! QUIT; lines over 1,000 bytes, oversized messages and fast senders get their replies.

use std::net::IpAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{apply, report, Shared};
use hikyaku_queue_schema::verp;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
const MAX_LINE: usize = 1000;
/// Recipients per message.
const MAX_RCPTS: usize = 10;

/// Tells a client over the connection cap to come back later.
pub(super) async fn refuse_busy(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"421 4.3.2 Too many connections, try again later\r\n")
        .await;
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
    loop {
        let line = match tokio::time::timeout(s.idle_timeout, read_line(&mut r, MAX_LINE)).await {
            Err(_) => {
                w.write_all(b"421 4.4.2 Idle timeout, closing\r\n").await?;
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
                greeted = true;
                format!(
                    "250-{}\r\n250-SIZE {}\r\n250 8BITMIME\r\n",
                    s.hostname, s.max_message_bytes
                )
                .into()
            }
            "HELO" => {
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
                Some(_) => {
                    let size = rest
                        .split_whitespace()
                        .find_map(|p| {
                            p.get(..5)
                                .filter(|k| k.eq_ignore_ascii_case("SIZE="))
                                .and(p.get(5..))
                        })
                        .and_then(|n| n.parse::<usize>().ok());
                    if size.is_some_and(|n| n > s.max_message_bytes) {
                        "552 5.3.4 Message too big\r\n".into()
                    } else {
                        mail = true;
                        "250 2.1.0 Ok\r\n".into()
                    }
                }
            },
            "RCPT" if !mail => "503 5.5.1 Need MAIL first\r\n".into(),
            "RCPT" => match path_arg(rest, "TO:") {
                None => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into(),
                Some(_) if rcpts.len() >= MAX_RCPTS => "452 4.5.3 Too many recipients\r\n".into(),
                Some(a) if verp::parse(&a, &s.bounce_domain).is_some() || a == s.fbl_address => {
                    rcpts.push(a);
                    "250 2.1.5 Ok\r\n".into()
                }
                Some(_) => "550 5.7.1 Relaying denied: not an address of this host\r\n".into(),
            },
            "DATA" if rcpts.is_empty() => "554 5.5.1 No valid recipients\r\n".into(),
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let Some(body) = read_body(&mut r, s.max_message_bytes, s.idle_timeout).await?
                else {
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
/// and dropped).
async fn read_body(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    max: usize,
    idle: std::time::Duration,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    let mut too_big = false;
    let mut line_start = true;
    loop {
        let mut line = Vec::new();
        let n = tokio::time::timeout(idle, (&mut *r).take(64 << 10).read_until(b'\n', &mut line))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle in DATA"))??;
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
    use super::path_arg;

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
