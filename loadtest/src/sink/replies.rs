//! The exact reply texts the sink sends, in one place so tests and the engine's classifier
//! can be checked against them.

use std::io::Write as _;
use std::net::IpAddr;

use super::profile::ProviderKind;

/// Answer to MAIL FROM.
pub const MAIL_OK: &[u8] = b"250 2.1.0 Ok\r\n";
/// Answer to an accepted RCPT TO.
pub const RCPT_OK: &[u8] = b"250 2.1.5 Ok\r\n";
/// Answer to DATA with at least one accepted recipient.
pub const DATA_GO_AHEAD: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
/// Answer to DATA when no recipient was accepted (RFC 2920 §3.1).
pub const NO_VALID_RECIPIENTS: &[u8] = b"554 5.5.1 No valid recipients\r\n";
/// Answer to a BDAT whose size is not a number; the sink then closes, since it cannot tell
/// where the chunk ends and the next command begins.
pub const BAD_BDAT: &[u8] = b"501 5.5.4 Syntax error in BDAT\r\n";
/// Answer to a chunk that takes the message past [`MAX_SIZE`] (after consuming it).
pub const MESSAGE_TOO_BIG: &[u8] = b"552 5.3.4 Message size exceeds fixed maximum message size\r\n";
/// Prefix of the end-of-DATA (and `BDAT … LAST`) answer; the queue id and CRLF follow.
pub const QUEUED_PREFIX: &[u8] = b"250 2.0.0 Ok: queued as ";
/// Answer to RSET and NOOP.
pub const OK: &[u8] = b"250 2.0.0 Ok\r\n";
/// Answer to QUIT, after which the sink closes.
pub const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
/// Answer to STARTTLS before the handshake.
pub const TLS_GO_AHEAD: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";
/// Answer to STARTTLS when it was not offered.
pub const TLS_UNAVAILABLE: &[u8] = b"454 4.7.0 TLS not available\r\n";
/// Answer to an unknown verb.
pub const SYNTAX_ERROR: &[u8] = b"500 5.5.2 Syntax error\r\n";
/// Answer to a command line longer than 1000 bytes.
pub const LINE_TOO_LONG: &[u8] = b"500 5.5.2 Line too long\r\n";
/// Answer to a known verb with unusable arguments.
pub const BAD_ARGUMENTS: &[u8] = b"501 5.5.4 Syntax error in parameters or arguments\r\n";
/// Answer to a command out of order.
pub const BAD_SEQUENCE: &[u8] = b"503 5.5.1 Bad sequence of commands\r\n";
/// Answer to RCPT beyond the per-transaction cap.
pub const TOO_MANY_RECIPIENTS: &[u8] = b"452 4.5.3 Too many recipients\r\n";
/// Answer to RCPT for a `tempfail…` recipient.
pub const TEMPFAIL: &[u8] = b"451 4.3.0 Temporary failure, try again later\r\n";
/// Answer to RCPT for a `421…` or deferred `defer<N>-…` recipient; the sink then closes.
pub const TRY_AGAIN_CLOSING: &[u8] = b"421 4.7.0 Try again later, closing connection\r\n";
/// Answer to RCPT for an `550…` / `unknown…` recipient (Gmail's multi-line text).
pub const NO_SUCH_USER: &[u8] = b"550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n550 5.1.1 double-checking the recipient's email address for typos. - gsmtp\r\n";
/// Answer to RCPT for a `garbage…` recipient: deliberately not an SMTP reply.
pub const GARBAGE: &[u8] = b"HELLO? this is not SMTP\r\n";
/// Answer to MAIL once the per-connection message cap is reached; the sink then closes.
pub const MAX_MSGS_PER_CONN: &[u8] =
    b"421 Max message per connection reached, closing transmission channel\r\n";
/// Sent instead of a greeting when a profile's connection cap is reached.
pub const TOO_MANY_CONNECTIONS: &[u8] =
    b"421 4.7.0 Too many concurrent SMTP connections; please try again later\r\n";

/// `SIZE` advertised in EHLO (Gmail's value).
pub const MAX_SIZE: u64 = 35_882_577;

/// Appends the answer to an accepted BDAT chunk that is not the last:
/// `250 2.0.0 <size> octets received`.
pub fn chunk_received(out: &mut Vec<u8>, size: u64) {
    let _ = write!(out, "250 2.0.0 {size} octets received\r\n");
}

/// The greeting line.
pub fn greeting(hostname: &str) -> Vec<u8> {
    format!("220 {hostname} ESMTP hikyaku-sink\r\n").into_bytes()
}

/// The multi-line EHLO answer; `starttls` and `chunking` say whether to advertise STARTTLS
/// and CHUNKING.
pub fn ehlo(hostname: &str, starttls: bool, chunking: bool) -> Vec<u8> {
    let mut lines = vec![
        hostname.to_owned(),
        "PIPELINING".to_owned(),
        "8BITMIME".to_owned(),
        "SMTPUTF8".to_owned(),
        "ENHANCEDSTATUSCODES".to_owned(),
        format!("SIZE {MAX_SIZE}"),
    ];
    if chunking {
        lines.push("CHUNKING".to_owned());
    }
    if starttls {
        lines.push("STARTTLS".to_owned());
    }
    lines.push("HELP".to_owned());
    multi_line(250, &lines)
}

/// The HELO answer.
pub fn helo(hostname: &str) -> Vec<u8> {
    format!("250 {hostname}\r\n").into_bytes()
}

/// The provider's answer to MAIL FROM when its rate limit is hit, or `None` for providers
/// that reset the connection instead (au).
pub fn throttle(kind: ProviderKind, peer: IpAddr) -> Option<Vec<u8>> {
    let text = match kind {
        ProviderKind::Google => format!(
            "421-4.7.28 [{peer}] Our system has detected an unusual rate of unsolicited mail originating\r\n\
             421-4.7.28 from your IP address. To protect our users from spam, mail sent from your IP\r\n\
             421 4.7.28 address has been temporarily rate limited. - gsmtp\r\n"
        ),
        ProviderKind::Yahoo => format!(
            "421 4.7.0 [TSS04] Messages from {peer} temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes\r\n"
        ),
        ProviderKind::YahooJp => {
            format!("421 4.7.0 Messages from {peer} temporarily deferred - VS98-IP0 deferred\r\n")
        }
        ProviderKind::Plain | ProviderKind::Docomo | ProviderKind::Softbank => {
            "421 4.7.0 Too many messages, slow down\r\n".to_owned()
        }
        ProviderKind::Au => return None,
    };
    Some(text.into_bytes())
}

/// Formats `code-line` for every line but the last and `code line` for the last.
fn multi_line(code: u16, lines: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push_str(&format!("{code}{sep}{line}\r\n"));
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ehlo_uses_dash_on_all_but_the_last_line() {
        let text = String::from_utf8(ehlo("mx.test", true, true)).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.first(), Some(&"250-mx.test"));
        assert_eq!(lines.last(), Some(&"250 HELP"));
        assert!(lines[..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("250-")));
        assert!(lines.contains(&"250-STARTTLS"));
        assert!(lines.contains(&"250-CHUNKING"));
        let plain = String::from_utf8(ehlo("mx.test", false, false)).unwrap();
        assert!(!plain.contains("STARTTLS"));
        assert!(!plain.contains("CHUNKING"));
        assert!(plain.contains("250-PIPELINING\r\n"));
    }

    #[test]
    fn chunk_received_names_the_chunk_size() {
        let mut out = b"250 2.1.5 Ok\r\n".to_vec();
        chunk_received(&mut out, 2048);
        assert_eq!(out, b"250 2.1.5 Ok\r\n250 2.0.0 2048 octets received\r\n");
    }

    #[test]
    fn google_throttle_names_the_peer() {
        let text = throttle(ProviderKind::Google, "127.0.0.1".parse().unwrap()).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("421-4.7.28 [127.0.0.1] Our system"));
        assert!(text.ends_with("421 4.7.28 address has been temporarily rate limited. - gsmtp\r\n"));
        assert!(throttle(ProviderKind::Au, "127.0.0.1".parse().unwrap()).is_none());
    }
}
