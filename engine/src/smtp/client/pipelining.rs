//! Messages queued on a session and their replies read back in order: whole messages with
//! `BDAT` ([`SmtpClient::queue_message`], [`SmtpClient::message_result`]), or, without
//! CHUNKING, one message's content chained with the next one's envelope
//! ([`SmtpClient::queue_envelope`], [`SmtpClient::queue_content`]).

use super::{Pending, SmtpClient};
use crate::smtp::reply::{Reply, ReplyError};
use crate::smtp::{Envelope, SmtpError};
use std::io::Write as _;
use tokio::io::{AsyncRead, AsyncWrite};

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<S> {
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
}
