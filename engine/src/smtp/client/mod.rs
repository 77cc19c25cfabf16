//! The SMTP client protocol engine, generic over the byte stream.

mod pipelining;
#[cfg(test)]
mod tests;

use crate::smtp::capabilities::Capabilities;
use crate::smtp::error::{refusal, SmtpError};
use crate::smtp::reply::{parse_reply, Reply, ReplyError};
use crate::smtp::Timeouts;
use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest wait, after a failed write, for replies the server sent before the failure.
const SALVAGE_WAIT: Duration = Duration::from_secs(2);

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
