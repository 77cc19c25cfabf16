//! The SMTP client protocol engine, generic over the byte stream.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::reply::{parse_reply, EnhancedCode, Reply, ReplyError};
use super::Timeouts;
use crate::classify::Attempt;

/// Longest wait, after a failed write, for replies the server sent before the failure.
const SALVAGE_WAIT: Duration = Duration::from_secs(2);

/// A refusal made by the client itself, without sending anything: code, enhanced code
/// `5.<subject>.<detail>` and a text the classifier reads as `not-sent`.
fn refusal(code: u16, subject: u16, detail: u16, text: String) -> Reply {
    Reply {
        code,
        enhanced: Some(EnhancedCode {
            class: 5,
            subject,
            detail,
        }),
        text: format!("{text} (refused by the sender, not sent)"),
    }
}

/// The client's refusal of a message of at least `len` bytes over the engine's own ceiling
/// `max` (`552 5.3.4`, not sent).
pub fn too_big(len: u64, max: u64) -> Reply {
    refusal(
        552,
        3,
        4,
        format!("message of at least {len} bytes is over the engine's limit of {max}"),
    )
}

/// A failure that leaves the connection unusable (a negative reply to a message is not an
/// error: [`SmtpClient::send`] returns it as the deciding reply).
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// An I/O error.
    #[error("connection lost during {phase}: {source}")]
    Io {
        /// SMTP phase.
        phase: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The peer closed the connection.
    #[error("connection closed by peer during {phase}")]
    Closed {
        /// SMTP phase.
        phase: &'static str,
    },
    /// The phase's timeout passed.
    #[error("timeout during {phase}")]
    Timeout {
        /// SMTP phase.
        phase: &'static str,
    },
    /// The peer sent something that is not an SMTP reply.
    #[error("garbage from peer during {phase}: {error}")]
    Garbage {
        /// SMTP phase.
        phase: &'static str,
        /// What was wrong.
        error: ReplyError,
    },
    /// The greeting, EHLO or STARTTLS was refused, or a reply closed the session (421).
    #[error("{phase} refused: {}", reply.one_line())]
    Refused {
        /// SMTP phase.
        phase: &'static str,
        /// The reply.
        reply: Reply,
    },
    /// TLS setup failed.
    #[error("tls: {0}")]
    Tls(String),
}

impl SmtpError {
    /// The session failed before a transaction started (closed, reset, or a 421 to RSET or
    /// MAIL): on a reused session this means it went stale, not that the message is at fault.
    pub fn before_transaction(&self) -> bool {
        match self {
            SmtpError::Io { phase, .. } | SmtpError::Closed { phase } => {
                matches!(*phase, "rset" | "mail")
            }
            SmtpError::Refused { phase, reply } => {
                matches!(*phase, "rset" | "mail") && reply.closes_connection()
            }
            _ => false,
        }
    }

    /// The attempt to classify.
    pub fn to_attempt(&self) -> Attempt {
        match self {
            SmtpError::Io { .. } | SmtpError::Closed { .. } => {
                Attempt::ConnectionLost(self.to_string())
            }
            SmtpError::Timeout { phase } => Attempt::Timeout(phase),
            SmtpError::Garbage { .. } => Attempt::Garbage(self.to_string()),
            SmtpError::Refused { phase, reply } => match *phase {
                "banner" | "ehlo" | "helo" | "starttls" => Attempt::SessionRefused(reply.clone()),
                _ => Attempt::Reply(reply.clone()),
            },
            SmtpError::Tls(e) => Attempt::Tls(e.clone()),
        }
    }
}

/// ESMTP extensions the server announced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 3030 (BDAT).
    pub chunking: bool,
    /// RFC 1870 size limit, if announced.
    pub size: Option<u64>,
}

impl Capabilities {
    fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.text.lines().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "CHUNKING" => caps.chunking = true,
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
                _ => {}
            }
        }
        caps
    }
}

/// One message's envelope.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// MAIL FROM address (may be empty for a null sender).
    pub from: &'a str,
    /// RCPT TO address.
    pub to: &'a str,
    /// The body has 8-bit bytes (sent with `BODY=8BITMIME` when offered).
    pub eight_bit: bool,
}

/// An SMTP session over `S`.
/// A message queued with [`SmtpClient::queue_message`], waiting for its result.
#[derive(Debug)]
enum Pending {
    /// Written; its replies (RSET's first, if `rset`) are to be read.
    Sent {
        /// Whether an `RSET` went before it.
        rset: bool,
    },
    /// Refused here without being written ([`SmtpClient::refused_here`]).
    Refused(Reply),
}

#[derive(Debug)]
pub struct SmtpClient<S> {
    stream: S,
    rbuf: Vec<u8>,
    rstart: usize,
    wbuf: Vec<u8>,
    caps: Capabilities,
    timeouts: Timeouts,
    /// A transaction was left open (RCPT refused after MAIL accepted): the next send starts
    /// with RSET, pipelined with its MAIL.
    needs_rset: bool,
    /// Whole messages queued or sent with [`SmtpClient::queue_message`] whose replies are not
    /// read yet, oldest first: whether each began with RSET.
    pending: VecDeque<Pending>,
    /// The destination site's own message size limit (a provider's published maximum that
    /// its servers need not announce as `SIZE`), if any.
    site_size: Option<u64>,
    /// The envelope queued with [`SmtpClient::queue_envelope`] began with `RSET`.
    envelope_rset: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<S> {
    /// A client over a connected stream; call [`SmtpClient::greeting`] next.
    pub fn new(stream: S, timeouts: Timeouts) -> Self {
        SmtpClient {
            stream,
            rbuf: Vec::with_capacity(4096),
            rstart: 0,
            wbuf: Vec::with_capacity(8192),
            caps: Capabilities::default(),
            timeouts,
            needs_rset: false,
            pending: VecDeque::new(),
            site_size: None,
            envelope_rset: false,
        }
    }

    /// Sets the destination site's message size limit: messages over it are refused here
    /// (552 5.3.4, nothing sent), as messages over the server's announced `SIZE` are.
    pub fn limit_size(&mut self, max: Option<u64>) {
        self.site_size = max;
    }

    /// What the server announced in its last EHLO reply.
    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// Reads the 220 greeting.
    pub async fn greeting(&mut self) -> Result<Reply, SmtpError> {
        let reply = self.read_reply("banner", self.timeouts.banner).await?;
        if reply.code != 220 {
            return Err(SmtpError::Refused {
                phase: "banner",
                reply,
            });
        }
        Ok(reply)
    }

    /// EHLO (HELO if EHLO is refused with 5xx); records the capabilities.
    pub async fn ehlo(&mut self, name: &str) -> Result<Capabilities, SmtpError> {
        self.command(format!("EHLO {name}\r\n"), "ehlo", self.timeouts.ehlo)
            .await?;
        let reply = self.read_reply("ehlo", self.timeouts.ehlo).await?;
        if reply.is_positive() {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(self.caps);
        }
        if reply.code >= 500 && reply.code != 554 {
            self.command(format!("HELO {name}\r\n"), "helo", self.timeouts.ehlo)
                .await?;
            let reply = self.read_reply("helo", self.timeouts.ehlo).await?;
            if reply.is_positive() {
                self.caps = Capabilities::default();
                return Ok(self.caps);
            }
            return Err(SmtpError::Refused {
                phase: "helo",
                reply,
            });
        }
        Err(SmtpError::Refused {
            phase: "ehlo",
            reply,
        })
    }

    /// Sends STARTTLS and waits for 220; the caller then takes the stream with
    /// [`SmtpClient::into_stream`] and wraps it in TLS.
    pub async fn starttls(&mut self) -> Result<(), SmtpError> {
        self.command("STARTTLS\r\n".into(), "starttls", self.timeouts.starttls)
            .await?;
        let reply = self.read_reply("starttls", self.timeouts.starttls).await?;
        if reply.code != 220 {
            return Err(SmtpError::Refused {
                phase: "starttls",
                reply,
            });
        }
        Ok(())
    }

    /// The underlying stream. Fails if the peer sent bytes we have not read: after STARTTLS
    /// that would be a command-injection attempt (CVE-2011-0411 class), never to be trusted.
    pub fn into_stream(self) -> Result<S, SmtpError> {
        if self.rstart < self.rbuf.len() {
            return Err(SmtpError::Garbage {
                phase: "starttls",
                error: ReplyError::Malformed("data pipelined after STARTTLS".into()),
            });
        }
        Ok(self.stream)
    }

    /// Sends one message. `body` is the dot-stuffed message ending in CRLF (see
    /// [`super::dotstuff`]); the terminating dot is added here.
    ///
    /// With PIPELINING, [RSET,] MAIL, RCPT and DATA go in one write and their replies are read
    /// together. Returns the deciding reply: the first negative one among MAIL, RCPT and DATA,
    /// or the reply to the final dot. `Err` means the connection is unusable.
    pub async fn send(&mut self, env: &Envelope<'_>, body: &[u8]) -> Result<Reply, SmtpError> {
        if let Some(reply) = self.refused_here(env, body.len()) {
            return Ok(reply);
        }
        let t = self.timeouts;
        self.wbuf.clear();
        let rset = std::mem::take(&mut self.needs_rset);
        if rset {
            self.wbuf.extend_from_slice(b"RSET\r\n");
        }
        let (body_opt, utf8) = self.mail_params(env);
        let _ = write!(self.wbuf, "MAIL FROM:<{}>{body_opt}{utf8}\r\n", env.from);
        if !self.caps.pipelining {
            return self.send_unpipelined(env, body, rset).await;
        }
        let _ = write!(self.wbuf, "RCPT TO:<{}>\r\nDATA\r\n", env.to);
        if let Err(e) = self.flush_wbuf("mail", t.command).await {
            return Err(self.after_write_error("mail", e).await);
        }
        if rset {
            self.read_alive("rset", t.command).await?;
        }
        // A 421 means the server is closing: report it at once, before reading replies that
        // will never come.
        let mail = self.read_alive("mail", t.command).await?;
        let rcpt = self.read_alive("rcpt", t.command).await?;
        let data = self.read_alive("data", t.command).await?;
        let deciding = [&mail, &rcpt]
            .into_iter()
            .find(|r| !r.is_positive())
            .cloned();
        if let Some(refused) = deciding {
            if data.is_intermediate() {
                // A non-conforming server accepted DATA without recipients: end it empty.
                self.wbuf.clear();
                self.wbuf.extend_from_slice(b".\r\n");
                self.flush_wbuf("data", t.data).await?;
                self.read_reply("data-end", t.data).await?;
            }
            self.needs_rset = mail.is_positive();
            return Ok(refused);
        }
        self.after_data(data, body).await
    }

    /// Sends the body after a 354; any other positive reply to DATA is a protocol violation
    /// (the body was never sent, so it must not count as delivered).
    async fn after_data(&mut self, data: Reply, body: &[u8]) -> Result<Reply, SmtpError> {
        if data.code == 354 {
            return self.finish_data(body).await;
        }
        if data.is_positive() {
            return Err(SmtpError::Garbage {
                phase: "data",
                error: ReplyError::Malformed(format!("{} to DATA instead of 354", data.code)),
            });
        }
        self.needs_rset = true;
        Ok(data)
    }

    async fn send_unpipelined(
        &mut self,
        env: &Envelope<'_>,
        body: &[u8],
        rset: bool,
    ) -> Result<Reply, SmtpError> {
        let t = self.timeouts;
        if rset {
            // RSET then MAIL were both queued in wbuf; send RSET alone first.
            let mail = self.wbuf.split_off(6);
            self.flush_wbuf("rset", t.command).await?;
            self.read_alive("rset", t.command).await?;
            self.wbuf = mail;
        }
        if let Err(e) = self.flush_wbuf("mail", t.command).await {
            return Err(self.after_write_error("mail", e).await);
        }
        let mail = self.read_alive("mail", t.command).await?;
        if !mail.is_positive() {
            return Ok(mail);
        }
        self.command(format!("RCPT TO:<{}>\r\n", env.to), "rcpt", t.command)
            .await?;
        let rcpt = self.read_alive("rcpt", t.command).await?;
        if !rcpt.is_positive() {
            self.needs_rset = true;
            return Ok(rcpt);
        }
        self.command("DATA\r\n".into(), "data", t.command).await?;
        let data = self.read_alive("data", t.command).await?;
        self.after_data(data, body).await
    }

    async fn finish_data(&mut self, body: &[u8]) -> Result<Reply, SmtpError> {
        let t = self.timeouts;
        self.wbuf.clear();
        self.wbuf.extend_from_slice(body);
        if !body.is_empty() && !body.ends_with(b"\r\n") {
            self.wbuf.extend_from_slice(b"\r\n");
        }
        self.wbuf.extend_from_slice(b".\r\n");
        self.flush_wbuf("data", t.data).await?;
        let end = self.read_alive("data-end", t.data).await?;
        Ok(end)
    }

    /// Whether whole messages can be pipelined on this session: the server offers PIPELINING
    /// and CHUNKING, so `MAIL`, `RCPT` and `BDAT <n> LAST` with the content go in one write and
    /// need no 354 round trip, and the next messages can follow before the replies arrive.
    pub fn can_pipeline_messages(&self) -> bool {
        self.caps.pipelining && self.caps.chunking
    }

    /// The refusal of a message this session must not carry, made here without sending
    /// anything: a non-ASCII address (it needs SMTPUTF8, RFC 6531) to a server that does not
    /// offer SMTPUTF8 (553 5.6.7), or a message over the server's `SIZE` or the site's own
    /// limit (552 5.3.4). Each is permanent for this destination, and the classifier reads them
    /// as it reads a server's.
    fn refused_here(&self, env: &Envelope<'_>, len: usize) -> Option<Reply> {
        let ascii = env.from.is_ascii() && env.to.is_ascii();
        if !ascii && !self.caps.smtputf8 {
            return Some(refusal(
                553,
                6,
                7,
                "non-ASCII address needs SMTPUTF8, which this server does not offer".into(),
            ));
        }
        // The text is built only for a refusal: this runs once per message.
        if len as u64 <= self.max_message_bytes() {
            return None;
        }
        self.size_refusal(len as u64, &format!("message of {len} bytes"))
    }

    /// The largest message this session carries: the server's `SIZE` or the site's limit,
    /// whichever is smaller (`u64::MAX` when neither is set).
    pub fn max_message_bytes(&self) -> u64 {
        self.caps
            .size
            .unwrap_or(u64::MAX)
            .min(self.site_size.unwrap_or(u64::MAX))
    }

    /// The refusal (552 5.3.4, not sent) of a message of `len` bytes — `what`, for the text —
    /// over the server's `SIZE` or the site's own limit; `None` when it fits. Also asked before
    /// a message is built, with a lower bound of its size.
    pub fn size_refusal(&self, len: u64, what: &str) -> Option<Reply> {
        let over = |max: Option<u64>| max.filter(|&max| len > max);
        if let Some(max) = over(self.caps.size) {
            return Some(refusal(
                552,
                3,
                4,
                format!("{what} is over the server's SIZE limit of {max}"),
            ));
        }
        over(self.site_size).map(|max| {
            refusal(
                552,
                3,
                4,
                format!("{what} is over the site's size limit of {max}"),
            )
        })
    }

    /// The MAIL FROM parameters `env` needs on this session: `BODY=8BITMIME`, `SMTPUTF8`.
    fn mail_params(&self, env: &Envelope<'_>) -> (&'static str, &'static str) {
        let body = if env.eight_bit && self.caps.eight_bit_mime {
            " BODY=8BITMIME"
        } else {
            ""
        };
        // Only where negotiated: `refused_here` keeps non-ASCII addresses off other servers.
        let utf8 = if self.caps.smtputf8 && !(env.from.is_ascii() && env.to.is_ascii()) {
            " SMTPUTF8"
        } else {
            ""
        };
        (body, utf8)
    }

    /// Messages queued with [`SmtpClient::queue_message`] whose replies are not read yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.wbuf.len()
    }

    /// Queues one whole message (`content` raw, not dot-stuffed) as `MAIL`, `RCPT`,
    /// `BDAT <n> LAST` and the content; nothing is written until [`SmtpClient::flush`]. Only
    /// when [`SmtpClient::can_pipeline_messages`].
    ///
    /// A message queued behind others whose replies are unknown starts with `RSET`: if one of
    /// them left its transaction open (MAIL accepted, RCPT or BDAT refused), the RSET closes it,
    /// so every message's replies stand on their own.
    pub fn queue_message(&mut self, env: &Envelope<'_>, content: &[u8]) {
        if self.pending.is_empty() {
            self.wbuf.clear();
        }
        if let Some(reply) = self.refused_here(env, content.len()) {
            self.pending.push_back(Pending::Refused(reply));
            return;
        }
        let rset = std::mem::take(&mut self.needs_rset) || !self.pending.is_empty();
        if rset {
            self.wbuf.extend_from_slice(b"RSET\r\n");
        }
        let (body_opt, utf8) = self.mail_params(env);
        let _ = write!(
            self.wbuf,
            "MAIL FROM:<{}>{body_opt}{utf8}\r\nRCPT TO:<{}>\r\nBDAT {} LAST\r\n",
            env.from,
            env.to,
            content.len()
        );
        self.wbuf.extend_from_slice(content);
        self.pending.push_back(Pending::Sent { rset });
    }

    /// Whether messages can go one round trip each on this session with `DATA`: the server
    /// offers PIPELINING without CHUNKING, so the content and final dot of one message travel
    /// in the same write as the next message's `[RSET] MAIL RCPT DATA` (RFC 2920 §3.1: message
    /// content may be the first "command" of a group, `DATA` the last), and the reply to the dot
    /// arrives with that envelope's replies. See [`SmtpClient::queue_envelope`].
    pub fn can_chain_data(&self) -> bool {
        self.caps.pipelining && !self.caps.chunking
    }

    /// Queues one message's `[RSET] MAIL RCPT DATA` behind whatever is queued (the previous
    /// message's content, [`SmtpClient::queue_content`]); nothing is written until
    /// [`SmtpClient::flush`]. `len` is the message's size. Returns the refusal made here,
    /// with nothing queued, for a message this session must not carry. Its replies are read
    /// with [`SmtpClient::envelope_result`] after those of everything queued before it.
    pub fn queue_envelope(&mut self, env: &Envelope<'_>, len: usize) -> Option<Reply> {
        if let Some(reply) = self.refused_here(env, len) {
            return Some(reply);
        }
        let rset = std::mem::take(&mut self.needs_rset);
        if rset {
            self.wbuf.extend_from_slice(b"RSET\r\n");
        }
        let (body_opt, utf8) = self.mail_params(env);
        let _ = write!(
            self.wbuf,
            "MAIL FROM:<{}>{body_opt}{utf8}\r\nRCPT TO:<{}>\r\nDATA\r\n",
            env.from, env.to
        );
        self.envelope_rset = rset;
        None
    }

    /// Queues the content of the message whose `DATA` was answered 354 (`body` dot-stuffed,
    /// ending in CRLF, see [`super::dotstuff`]) and the final dot.
    pub fn queue_content(&mut self, body: &[u8]) {
        self.wbuf.extend_from_slice(body);
        if !body.is_empty() && !body.ends_with(b"\r\n") {
            self.wbuf.extend_from_slice(b"\r\n");
        }
        self.wbuf.extend_from_slice(b".\r\n");
    }

    /// Writes what is queued when it carries a message's content: a failed write leaves that
    /// message in doubt (not a session that went stale before its transaction began).
    pub async fn flush_content(&mut self) -> Result<(), SmtpError> {
        self.flush_wbuf("data", self.timeouts.data).await
    }

    /// Reads the reply to the final dot of the message whose content was written.
    pub async fn content_result(&mut self) -> Result<Reply, SmtpError> {
        let end = self.read_alive("data-end", self.timeouts.data).await?;
        Ok(end)
    }

    /// Reads the replies to the envelope queued with [`SmtpClient::queue_envelope`]:
    /// `None` when `DATA` was answered 354 (queue the content next), else the deciding reply
    /// (the first negative one among MAIL, RCPT and DATA). Any other positive reply to
    /// `DATA` is a protocol violation: the content never went, so it is no delivery.
    pub async fn envelope_result(&mut self) -> Result<Option<Reply>, SmtpError> {
        let t = self.timeouts;
        if std::mem::take(&mut self.envelope_rset) {
            self.read_alive("rset", t.command).await?;
        }
        let mail = self.read_alive("mail", t.command).await?;
        let rcpt = self.read_alive("rcpt", t.command).await?;
        let data = self.read_alive("data", t.command).await?;
        if let Some(refused) = [&mail, &rcpt].into_iter().find(|r| !r.is_positive()) {
            let refused = refused.clone();
            if data.is_intermediate() {
                // A non-conforming server accepted DATA without recipients: end it empty.
                self.wbuf.clear();
                self.wbuf.extend_from_slice(b".\r\n");
                self.flush_wbuf("data", t.data).await?;
                self.read_reply("data-end", t.data).await?;
            }
            self.needs_rset = mail.is_positive();
            return Ok(Some(refused));
        }
        if data.code == 354 {
            return Ok(None);
        }
        if data.is_positive() {
            return Err(SmtpError::Garbage {
                phase: "data",
                error: ReplyError::Malformed(format!("{} to DATA instead of 354", data.code)),
            });
        }
        self.needs_rset = true;
        Ok(Some(data))
    }

    /// Whether the oldest pending message was refused here (its result needs no reply).
    pub fn next_is_refused(&self) -> bool {
        matches!(self.pending.front(), Some(Pending::Refused(_)))
    }

    /// Writes what [`SmtpClient::queue_message`] queued. When the write fails, replies the
    /// server sent before it went away may still be waiting: read them with
    /// [`SmtpClient::message_result`] (within [`SmtpClient::salvage_wait`]) before judging the
    /// messages still unanswered by the write's error.
    pub async fn flush(&mut self) -> Result<(), SmtpError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        // A write that fails found the session closed before these transactions began (the
        // stale-session case), as far as the client can tell.
        self.flush_wbuf("mail", self.timeouts.data).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Whether the replies of the oldest pending message are all buffered already, so that
    /// [`SmtpClient::message_result`] returns without reading (or an error is waiting).
    pub fn result_buffered(&self) -> bool {
        let rset = match self.pending.front() {
            None => return false,
            Some(Pending::Refused(_)) => return true,
            Some(&Pending::Sent { rset }) => rset,
        };
        // Count final reply lines (`NNN ` rather than `NNN-`) without building the replies:
        // `message_result` parses them (and reports any malformed one) right after.
        let needed = 3 + usize::from(rset);
        let finals = self.rbuf[self.rstart..]
            .split_inclusive(|&b| b == b'\n')
            .take_while(|line| line.ends_with(b"\n"))
            .filter(|line| line.get(3) != Some(&b'-'))
            .take(needed)
            .count();
        finals >= needed
    }

    /// Reads the replies of the oldest pending message and returns its deciding reply: the
    /// first negative one among MAIL and RCPT, else the reply to `BDAT … LAST`. `Err` means the
    /// session is unusable (the messages behind it got no replies and were not delivered by
    /// this session as far as the client knows).
    pub async fn message_result(&mut self) -> Result<Reply, SmtpError> {
        let t = self.timeouts;
        let rset = match self.pending.pop_front() {
            None => {
                return Err(SmtpError::Garbage {
                    phase: "bdat",
                    error: ReplyError::Malformed("no message pending".into()),
                })
            }
            Some(Pending::Refused(reply)) => return Ok(reply),
            Some(Pending::Sent { rset }) => rset,
        };
        if rset {
            self.read_alive("rset", t.command).await?;
        }
        let mail = self.read_alive("mail", t.command).await?;
        let rcpt = self.read_alive("rcpt", t.command).await?;
        let bdat = self.read_alive("bdat", t.data).await?;
        if !bdat.is_positive() && mail.is_positive() {
            self.needs_rset = true;
        }
        if !mail.is_positive() {
            return Ok(mail);
        }
        if !rcpt.is_positive() {
            return Ok(rcpt);
        }
        if bdat.is_intermediate() {
            return Err(SmtpError::Garbage {
                phase: "bdat",
                error: ReplyError::Malformed(format!("{} to BDAT LAST", bdat.code)),
            });
        }
        Ok(bdat)
    }

    /// After a write to the server failed: what the server said before it went away — a
    /// reply that closes the session (`421 4.7.28 … closing`) read within a short time — or
    /// else the write's own error. A server that answers and hangs up makes the next write fail
    /// (EPIPE), and its reply must still reach the reply rules.
    async fn after_write_error(&mut self, phase: &'static str, e: SmtpError) -> SmtpError {
        let wait = self.timeouts.command.min(SALVAGE_WAIT);
        match self.read_reply(phase, wait).await {
            Ok(reply) if reply.closes_connection() => SmtpError::Refused { phase, reply },
            _ => e,
        }
    }

    /// How long a session whose write failed is still read for replies the server sent before:
    /// they are there already or not coming ([`SALVAGE_WAIT`]).
    pub fn salvage_wait(&self) -> Duration {
        self.timeouts.command.min(SALVAGE_WAIT)
    }

    /// Sends QUIT and waits briefly for the reply; errors are ignored (the session is over).
    pub async fn quit(mut self) {
        let t = Duration::from_secs(2).min(self.timeouts.command);
        if self.command("QUIT\r\n".into(), "quit", t).await.is_ok() {
            let _ = self.read_reply("quit", t).await;
        }
        let _ = tokio::time::timeout(t, self.stream.shutdown()).await;
    }

    /// Reads one reply and fails with [`SmtpError::Refused`] when it closes the session.
    async fn read_alive(
        &mut self,
        phase: &'static str,
        timeout: Duration,
    ) -> Result<Reply, SmtpError> {
        let reply = self.read_reply(phase, timeout).await?;
        self.check_alive(&reply, phase)?;
        Ok(reply)
    }

    fn check_alive(&self, reply: &Reply, phase: &'static str) -> Result<(), SmtpError> {
        if reply.closes_connection() {
            return Err(SmtpError::Refused {
                phase,
                reply: reply.clone(),
            });
        }
        Ok(())
    }

    async fn command(
        &mut self,
        line: String,
        phase: &'static str,
        timeout: Duration,
    ) -> Result<(), SmtpError> {
        self.wbuf.clear();
        self.wbuf.extend_from_slice(line.as_bytes());
        self.flush_wbuf(phase, timeout).await
    }

    async fn flush_wbuf(
        &mut self,
        phase: &'static str,
        timeout: Duration,
    ) -> Result<(), SmtpError> {
        let write = async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {
                // Written: nothing of it may go again with what is queued next.
                self.wbuf.clear();
                Ok(())
            }
            Ok(Err(source)) => Err(SmtpError::Io { phase, source }),
            Err(_) => Err(SmtpError::Timeout { phase }),
        }
    }

    async fn read_reply(
        &mut self,
        phase: &'static str,
        timeout: Duration,
    ) -> Result<Reply, SmtpError> {
        // Fast path: the reply is already buffered (pipelined replies arrive together).
        if let Some(reply) = self.take_buffered(phase)? {
            return Ok(reply);
        }
        let read = async {
            loop {
                if self.rstart > 0 && self.rstart == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rstart = 0;
                } else if self.rstart > 4096 {
                    self.rbuf.drain(..self.rstart);
                    self.rstart = 0;
                }
                // Read into spare capacity: no zero-filling per read.
                self.rbuf.reserve(4096);
                let n = match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(n) => n,
                    Err(source) => return Err(SmtpError::Io { phase, source }),
                };
                if n == 0 {
                    return Err(SmtpError::Closed { phase });
                }
                if let Some(reply) = self.take_buffered(phase)? {
                    return Ok(reply);
                }
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(SmtpError::Timeout { phase }),
        }
    }

    fn take_buffered(&mut self, phase: &'static str) -> Result<Option<Reply>, SmtpError> {
        match parse_reply(&self.rbuf[self.rstart..]) {
            Ok(Some((reply, used))) => {
                self.rstart += used;
                Ok(Some(reply))
            }
            Ok(None) => Ok(None),
            Err(error) => Err(SmtpError::Garbage { phase, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncBufReadExt, BufReader};

    fn timeouts() -> Timeouts {
        Timeouts {
            command: Duration::from_millis(500),
            data: Duration::from_millis(500),
            ..Timeouts::default()
        }
    }

    /// A scripted server: for each received line, `respond` returns what to write back.
    fn server(
        script: impl Fn(&str, &mut bool) -> Option<String> + Send + 'static,
    ) -> tokio::io::DuplexStream {
        let (client, server) = duplex(1 << 16);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut lines = BufReader::new(r).lines();
            let _ = w.write_all(b"220 test ESMTP\r\n").await;
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(out) = script(&line, &mut in_data) {
                    if w.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        });
        client
    }

    fn good(line: &str, in_data: &mut bool) -> Option<String> {
        if *in_data {
            if line == "." {
                *in_data = false;
                return Some("250 2.0.0 Ok: queued\r\n".into());
            }
            return None;
        }
        Some(match line.split(' ').next().unwrap_or("") {
            "EHLO" => "250-test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000\r\n".into(),
            "MAIL" | "RSET" => "250 2.1.0 Ok\r\n".into(),
            "RCPT" if line.contains("unknown") => "550 5.1.1 no such user\r\n".into(),
            "RCPT" => "250 2.1.5 Ok\r\n".into(),
            "DATA" => {
                *in_data = true;
                "354 go\r\n".into()
            }
            _ => "500 what\r\n".into(),
        })
    }

    /// SMTPUTF8 only where negotiated, SIZE respected: such messages are refused here, nothing
    /// of them reaches the server (it would answer 500 to anything unexpected), and the
    /// session goes on.
    #[tokio::test]
    async fn unnegotiated_smtputf8_and_oversize_messages_never_reach_the_server() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let mut c = SmtpClient::new(
            server(move |line, in_data| {
                if let Ok(mut l) = log.lock() {
                    l.push(line.to_owned());
                }
                good(line, in_data)
            }),
            timeouts(),
        );
        c.greeting().await.expect("greeting");
        let caps = c.ehlo("me.test").await.expect("ehlo");
        assert!(!caps.smtputf8);
        let small = b"Subject: hi\r\n\r\nbody\r\n".to_vec();
        let big = vec![b'x'; 1001];
        // Under the server's SIZE (1000) but over the site's own limit.
        let middle = vec![b'x'; 600];
        c.limit_size(Some(500));
        for (to, body, code) in [
            ("\u{592a}\u{90ce}@x.test", &small, 553),
            ("a@x.test", &big, 552),
            ("a@x.test", &middle, 552),
            ("a@x.test", &small, 250),
        ] {
            let env = Envelope {
                from: "bounce@me.test",
                to,
                eight_bit: false,
            };
            let r = c.send(&env, body).await.expect("send");
            assert_eq!(r.code, code, "{to}: {r:?}");
            if code != 250 {
                assert!(r.text.contains("not sent"), "{r:?}");
            }
            if body.len() == 600 {
                assert!(r.text.contains("site's size limit of 500"), "{r:?}");
            }
        }
        c.quit().await;
        let seen = seen.lock().map(|l| l.clone()).unwrap_or_default();
        assert!(
            !seen
                .iter()
                .any(|l| l.contains('\u{592a}') || l.contains("xxxx")),
            "{seen:?}"
        );
        assert_eq!(seen.iter().filter(|l| l.starts_with("MAIL")).count(), 1);
        assert_eq!(classify_reply_of(553), crate::classify::Reason::NotSent);
    }

    fn classify_reply_of(code: u16) -> crate::classify::Reason {
        let r = Reply {
            code,
            enhanced: Some(EnhancedCode {
                class: 5,
                subject: 6,
                detail: 7,
            }),
            text: "x (refused by the sender, not sent)".into(),
        };
        crate::classify::classify_reply(&r).reason
    }

    #[tokio::test]
    async fn pipelined_session_reuses_the_connection() {
        let mut c = SmtpClient::new(server(good), timeouts());
        c.greeting().await.expect("greeting");
        let caps = c.ehlo("me.test").await.expect("ehlo");
        assert!(caps.pipelining && caps.eight_bit_mime);
        assert_eq!(caps.size, Some(1000));
        for to in ["a@x.test", "unknown@x.test", "b@x.test"] {
            let env = Envelope {
                from: "bounce@me.test",
                to,
                eight_bit: true,
            };
            let r = c
                .send(&env, b"Subject: hi\r\n\r\nbody\r\n")
                .await
                .expect("send");
            if to.starts_with("unknown") {
                assert_eq!(r.code, 550);
                // DATA was refused as well; the next send must start with RSET.
            } else {
                assert_eq!(r.code, 250, "{to}");
            }
        }
        c.quit().await;
    }

    #[tokio::test]
    async fn garbage_and_silence_are_errors() {
        let mut c = SmtpClient::new(
            server(|line, _| {
                line.starts_with("EHLO")
                    .then(|| "HELLO? not smtp\r\n".into())
            }),
            timeouts(),
        );
        c.greeting().await.expect("greeting");
        assert!(matches!(c.ehlo("me").await, Err(SmtpError::Garbage { .. })));

        let mut c = SmtpClient::new(server(|_, _| None), timeouts());
        c.greeting().await.expect("greeting");
        let mut t = timeouts();
        t.ehlo = Duration::from_millis(50);
        c.timeouts = t;
        assert!(matches!(
            c.ehlo("me").await,
            Err(SmtpError::Timeout { phase: "ehlo" })
        ));
    }

    #[tokio::test]
    async fn a_421_ends_the_session() {
        let script = |line: &str, d: &mut bool| {
            if line.starts_with("RCPT") {
                return Some("421 4.7.0 closing\r\n".into());
            }
            good(line, d)
        };
        let mut c = SmtpClient::new(server(script), timeouts());
        c.greeting().await.expect("greeting");
        c.ehlo("me").await.expect("ehlo");
        let env = Envelope {
            from: "f@me",
            to: "t@x",
            eight_bit: false,
        };
        let err = c.send(&env, b"x\r\n").await.expect_err("421");
        assert!(matches!(err.to_attempt(), Attempt::Reply(r) if r.code == 421));
    }

    #[tokio::test]
    async fn a_421_to_mail_is_reported_even_when_the_server_hangs_up() {
        // The server answers MAIL with 421 and closes: the RCPT and DATA replies never come.
        let (client, server) = duplex(1 << 16);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut lines = BufReader::new(r).lines();
            let _ = w.write_all(b"220 x\r\n").await;
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("EHLO") {
                    let _ = w.write_all(b"250-x\r\n250 PIPELINING\r\n").await;
                } else if line.starts_with("MAIL") {
                    let _ = w
                        .write_all(b"421 Max message per connection reached, closing transmission channel\r\n")
                        .await;
                    return;
                }
            }
        });
        let mut c = SmtpClient::new(client, timeouts());
        c.greeting().await.expect("greeting");
        c.ehlo("me").await.expect("ehlo");
        let env = Envelope {
            from: "f@me",
            to: "t@x",
            eight_bit: false,
        };
        let err = c.send(&env, b"x\r\n").await.expect_err("421");
        assert!(err.before_transaction(), "{err}");
        assert!(matches!(err.to_attempt(), Attempt::Reply(r) if r.code == 421));
    }

    #[tokio::test]
    async fn a_positive_reply_to_data_without_354_is_not_a_delivery() {
        let script = |line: &str, d: &mut bool| {
            if line == "DATA" {
                return Some("250 sure\r\n".into());
            }
            good(line, d)
        };
        let mut c = SmtpClient::new(server(script), timeouts());
        c.greeting().await.expect("greeting");
        c.ehlo("me").await.expect("ehlo");
        let env = Envelope {
            from: "f@me",
            to: "t@x",
            eight_bit: false,
        };
        let err = c.send(&env, b"x\r\n").await.expect_err("protocol error");
        assert!(matches!(err.to_attempt(), Attempt::Garbage(_)));
    }

    /// A BDAT-speaking server: reads commands and chunks as bytes, answers each command with
    /// `reply(command)`, and records what it saw (commands, and each LAST chunk's content).
    fn bdat_server(
        reply: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> (
        tokio::io::DuplexStream,
        std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let (client, mut server) = duplex(1 << 16);
        tokio::spawn(async move {
            let _ = server.write_all(b"220 test ESMTP\r\n").await;
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // One command line, or a whole BDAT chunk.
                let line_end = buf.windows(2).position(|w| w == b"\r\n");
                let Some(end) = line_end else {
                    match server.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                };
                let line = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut used = end + 2;
                if let Some(rest) = line.strip_prefix("BDAT ") {
                    let n: usize = rest
                        .split(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < used + n {
                        match server.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let content = String::from_utf8_lossy(&buf[used..used + n]).into_owned();
                    log.lock().expect("log").push(format!("content:{content}"));
                    used += n;
                }
                buf.drain(..used);
                log.lock().expect("log").push(line.clone());
                let out = if line.starts_with("EHLO") {
                    Some("250-test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n".into())
                } else {
                    reply(&line)
                };
                if let Some(out) = out {
                    if server.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
        (client, seen)
    }

    fn bdat_good(line: &str) -> Option<String> {
        Some(match line.split(' ').next().unwrap_or("") {
            "RSET" | "MAIL" => "250 2.0.0 Ok\r\n".into(),
            "RCPT" if line.contains("unknown") => "550 5.1.1 no such user\r\n".into(),
            "RCPT" => "250 2.1.5 Ok\r\n".into(),
            "BDAT" => "250 2.0.0 queued\r\n".into(),
            _ => "500 what\r\n".into(),
        })
    }

    #[tokio::test]
    async fn whole_messages_pipeline_with_bdat() {
        // The server refuses BDAT after a refused RCPT, as RFC 3030 has it.
        let refused_rcpt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = refused_rcpt.clone();
        let (stream, seen) = bdat_server(move |line| {
            use std::sync::atomic::Ordering;
            if line.starts_with("RCPT") && line.contains("unknown") {
                flag.store(true, Ordering::SeqCst);
            }
            if line.starts_with("BDAT") && flag.swap(false, Ordering::SeqCst) {
                return Some("554 5.5.1 No valid recipients\r\n".into());
            }
            bdat_good(line)
        });
        let mut c = SmtpClient::new(stream, timeouts());
        c.greeting().await.expect("greeting");
        let caps = c.ehlo("me").await.expect("ehlo");
        assert!(caps.chunking && c.can_pipeline_messages());
        for to in ["a@x.test", "unknown@x.test", "b@x.test"] {
            let env = Envelope {
                from: "bounce@me.test",
                to,
                eight_bit: false,
            };
            c.queue_message(&env, b"Subject: hi\r\n\r\n.not stuffed\r\n");
        }
        assert_eq!(c.pending(), 3);
        c.flush().await.expect("flush");
        let codes: Vec<u16> = [
            c.message_result().await.expect("1").code,
            c.message_result().await.expect("2").code,
            c.message_result().await.expect("3").code,
        ]
        .into();
        assert_eq!(codes, [250, 550, 250]);
        assert_eq!(c.pending(), 0);
        let seen = seen.lock().expect("seen").clone();
        // Messages behind unanswered ones start with RSET; the content goes as it is.
        assert_eq!(seen.iter().filter(|l| *l == "RSET").count(), 2, "{seen:?}");
        assert!(seen[0].starts_with("EHLO"));
        assert_eq!(seen[1], "MAIL FROM:<bounce@me.test>");
        assert!(seen.contains(&"content:Subject: hi\r\n\r\n.not stuffed\r\n".to_owned()));
        assert!(seen.contains(&"BDAT 29 LAST".to_owned()), "{seen:?}");

        // After the window drained cleanly, the next message needs no RSET.
        let env = Envelope {
            from: "bounce@me.test",
            to: "c@x.test",
            eight_bit: false,
        };
        c.queue_message(&env, b"x\r\n");
        c.flush().await.expect("flush");
        assert_eq!(c.pending(), 1);
        assert_eq!(c.message_result().await.expect("4").code, 250);
    }

    #[tokio::test]
    async fn a_421_in_a_window_ends_the_session_at_that_message() {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n = count.clone();
        let (stream, _) = bdat_server(move |line| {
            if line.starts_with("BDAT") && n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
            {
                return Some("421 4.7.0 Max message per connection reached\r\n".into());
            }
            bdat_good(line)
        });
        let mut c = SmtpClient::new(stream, timeouts());
        c.greeting().await.expect("greeting");
        c.ehlo("me").await.expect("ehlo");
        let env = Envelope {
            from: "f@me",
            to: "t@x",
            eight_bit: false,
        };
        for _ in 0..3 {
            c.queue_message(&env, b"x\r\n");
        }
        c.flush().await.expect("flush");
        assert_eq!(c.message_result().await.expect("first").code, 250);
        let err = c.message_result().await.expect_err("421");
        assert!(matches!(err.to_attempt(), Attempt::Reply(r) if r.code == 421));
        assert!(!err.before_transaction(), "the message itself was sent");
    }

    #[tokio::test]
    async fn a_reply_sent_before_the_server_hung_up_survives_the_failed_write() {
        let (client, mut server) = duplex(1 << 16);
        let peer = tokio::spawn(async move {
            let mut r = BufReader::new(&mut server);
            let mut line = String::new();
            let _ = r.get_mut().write_all(b"220 test\r\n").await;
            let _ = r.read_line(&mut line).await;
            let _ = r
                .get_mut()
                .write_all(b"250-test\r\n250 PIPELINING\r\n")
                .await;
            // Throttled: the server says why and hangs up before the next transaction.
            let _ = r
                .get_mut()
                .write_all(b"421 4.7.28 Unusual rate of mail, closing\r\n")
                .await;
        });
        let mut c = SmtpClient::new(client, timeouts());
        c.greeting().await.expect("greeting");
        c.ehlo("me").await.expect("ehlo");
        peer.await.expect("peer done, connection closed");
        let env = Envelope {
            from: "f@me",
            to: "t@x",
            eight_bit: false,
        };
        let err = c.send(&env, b"x\r\n").await.expect_err("session over");
        assert!(
            matches!(err.to_attempt(), Attempt::Reply(ref r) if r.code == 421 && r.text.contains("4.7.28")),
            "the 421 reaches the reply rules: {err:?}"
        );
        assert!(
            err.before_transaction(),
            "no transaction of this message began"
        );
    }

    /// A DATA-only server that answers each read's lines together once it has handled them
    /// all (as Postfix does with PIPELINING), logging every read.
    fn data_only_server() -> (
        tokio::io::DuplexStream,
        std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let reads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = reads.clone();
        let (client, mut server) = duplex(1 << 16);
        tokio::spawn(async move {
            let _ = server.write_all(b"220 test ESMTP\r\n").await;
            let (mut in_data, mut rcpt_ok) = (false, false);
            let mut partial = String::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = match server.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                log.lock().expect("log").push(text.clone());
                partial.push_str(&text);
                let mut out = String::new();
                while let Some(end) = partial.find("\r\n") {
                    let line: String = partial.drain(..end + 2).collect();
                    let line = line.trim_end();
                    if in_data {
                        if line == "." {
                            in_data = false;
                            out.push_str("250 2.0.0 Ok: queued\r\n");
                        }
                        continue;
                    }
                    out.push_str(match line.split(' ').next().unwrap_or("") {
                        "EHLO" => "250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                        "MAIL" | "RSET" => {
                            rcpt_ok = false;
                            "250 2.1.0 Ok\r\n"
                        }
                        "RCPT" if line.contains("unknown") => "550 5.1.1 no such user\r\n",
                        "RCPT" => {
                            rcpt_ok = true;
                            "250 2.1.5 Ok\r\n"
                        }
                        "DATA" if rcpt_ok => {
                            in_data = true;
                            "354 go\r\n"
                        }
                        "DATA" => "554 5.5.1 No valid recipients\r\n",
                        _ => "500 what\r\n",
                    });
                }
                if !out.is_empty() && server.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        (client, reads)
    }

    #[tokio::test]
    async fn data_messages_take_one_round_trip_each_without_chunking() {
        let (stream, reads) = data_only_server();
        let mut c = SmtpClient::new(stream, timeouts());
        c.greeting().await.expect("greeting");
        c.ehlo("me").await.expect("ehlo");
        assert!(c.can_chain_data() && !c.can_pipeline_messages());
        let env = |to| Envelope {
            from: "bounce@me.test",
            to,
            eight_bit: false,
        };
        let body = b"Subject: hi\r\n\r\n..stuffed\r\n";
        // The first envelope goes alone.
        assert!(c.queue_envelope(&env("a@x.test"), body.len()).is_none());
        c.flush().await.expect("flush");
        assert!(c.envelope_result().await.expect("354").is_none());
        // Its content travels with the next envelope, whose RCPT is refused.
        c.queue_content(body);
        assert!(c
            .queue_envelope(&env("unknown@x.test"), body.len())
            .is_none());
        c.flush_content().await.expect("flush");
        assert_eq!(c.content_result().await.expect("a").code, 250);
        let refused = c.envelope_result().await.expect("replies");
        assert_eq!(refused.map(|r| r.code), Some(550));
        // The transaction left open is reset in the next group.
        assert!(c.queue_envelope(&env("b@x.test"), body.len()).is_none());
        c.flush().await.expect("flush");
        assert!(c.envelope_result().await.expect("354").is_none());
        c.queue_content(body);
        c.flush_content().await.expect("flush");
        assert_eq!(c.content_result().await.expect("b").code, 250);

        let reads = reads.lock().expect("reads").clone();
        assert!(reads[0].starts_with("EHLO"), "{reads:?}");
        let groups = &reads[1..];
        assert_eq!(
            groups,
            [
                "MAIL FROM:<bounce@me.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n",
                "Subject: hi\r\n\r\n..stuffed\r\n.\r\nMAIL FROM:<bounce@me.test>\r\nRCPT TO:<unknown@x.test>\r\nDATA\r\n",
                "RSET\r\nMAIL FROM:<bounce@me.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n",
                "Subject: hi\r\n\r\n..stuffed\r\n.\r\n",
            ],
            "one write and one read per message"
        );
    }

    #[tokio::test]
    async fn without_pipelining_commands_go_one_by_one() {
        let script = |line: &str, d: &mut bool| {
            if line.starts_with("EHLO") {
                return Some("250 test\r\n".into());
            }
            good(line, d)
        };
        let mut c = SmtpClient::new(server(script), timeouts());
        c.greeting().await.expect("greeting");
        assert!(!c.ehlo("me").await.expect("ehlo").pipelining);
        let env = Envelope {
            from: "f@me",
            to: "unknown@x",
            eight_bit: false,
        };
        assert_eq!(c.send(&env, b"x\r\n").await.expect("send").code, 550);
        let env = Envelope { to: "ok@x", ..env };
        assert_eq!(c.send(&env, b"x\r\n").await.expect("send").code, 250);
    }
}
