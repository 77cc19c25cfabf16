//! The SMTP state machine of one connection, free of I/O: it turns buffered input into
//! replies and tells the connection loop when to do something other than read more.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use super::body::BodyScanner;
use super::command::Command;
use super::context::ListenerCtx;
use super::magic::Magic;
use super::replies;
use super::tally::normalise_into;

/// Longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.6 text line limit).
pub const MAX_LINE: usize = 1000;
/// Most recipients per transaction; a safety cap so a runaway client cannot grow the
/// session without bound.
pub const MAX_RECIPIENTS: usize = 1000;

/// What the connection loop must do after [`Session::feed`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the replies produced so far and read more input.
    NeedInput,
    /// A message body ended and the profile has latency: wait, then call
    /// [`Session::deliver`], then feed the rest of the input.
    Deliver,
    /// Send the replies, then close the connection gracefully.
    Close,
    /// Close the connection abruptly with a TCP reset.
    Reset,
    /// Send the replies, then do the TLS handshake; unread input is discarded (RFC 3207 §4.2).
    StartTls,
    /// Send the replies, then never answer again (keep the connection open, idle).
    Hang,
}

/// Where in the input stream the session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Reading command lines.
    Command,
    /// Dropping the rest of an over-long command line, to answer 500 at its end.
    SkipLongLine,
    /// Inside a DATA body.
    Body(BodyScanner),
    /// Inside the content of a BDAT chunk.
    Chunk(Chunk),
}

/// A BDAT chunk being consumed. Its content is only counted, never scanned or copied: the
/// sink needs nothing from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunk {
    /// Octets still to consume.
    remaining: u64,
    /// The chunk's size, quoted in the reply to a non-last chunk.
    size: u64,
    /// `BDAT … LAST`: the chunk ends the message (and its reply is the message's reply).
    last: bool,
    /// `None` if the chunk is accepted, else the refusal sent once it is consumed.
    refusal: Option<&'static [u8]>,
}

/// Where the current transaction is with BDAT (RFC 3030).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunking {
    /// No BDAT yet in this transaction (DATA and RCPT are still allowed).
    Idle,
    /// Chunks accepted so far add up to `octets`.
    Open {
        /// Message size so far, checked against [`replies::MAX_SIZE`].
        octets: u64,
    },
    /// A chunk was refused: every further chunk up to LAST is consumed and gets this reply.
    Failed(&'static [u8]),
}

/// One connection's SMTP state.
#[derive(Debug)]
pub struct Session {
    /// Listener-wide settings, counters and prepared replies.
    ctx: Arc<ListenerCtx>,
    /// The client's address, quoted in throttle replies.
    peer: IpAddr,
    /// Whether the connection is already encrypted (no second STARTTLS).
    tls: bool,
    /// Whether HELO/EHLO was given (required before MAIL).
    greeted: bool,
    /// Whether MAIL was given in the current transaction.
    in_mail: bool,
    /// Recipient slots, reused across transactions so steady state allocates nothing;
    /// the first `accepted` hold this transaction's accepted recipients (normalised).
    recipients: Vec<String>,
    /// Number of recipients accepted in the current transaction.
    accepted: usize,
    /// A `reset…` recipient was accepted: reset the connection when body (or accepted
    /// chunk) bytes arrive.
    reset_on_body: bool,
    /// A `hang…` recipient was accepted: never answer end-of-DATA or `BDAT … LAST`.
    hang_after_body: bool,
    /// Where in the input we are.
    mode: Mode,
    /// BDAT progress of the current transaction.
    chunking: Chunking,
    /// Messages accepted on this connection, for `max_msgs_per_conn`.
    messages: u32,
    /// The connection is cut in the content of the message with this index (counting accepted
    /// ones), per the profile's `cut_per_mille`.
    cut_at: Option<u32>,
    /// The current message's content, when the sink keeps it.
    capture: Capture,
}

/// The current message's content as received, while it is being captured.
#[derive(Debug, Default)]
struct Capture {
    /// The bytes so far; `None` when this message is not captured.
    buf: Option<Vec<u8>>,
    /// Whether this transaction's content already had the chance to be captured.
    decided: bool,
    /// The content came in BDAT chunks (raw), not after DATA (dot-stuffed).
    raw: bool,
}

impl Capture {
    /// Keeps content bytes of the current message when the sink captures messages.
    fn add(&mut self, stats: &super::SinkStats, bytes: &[u8], raw: bool) {
        if !self.decided {
            self.decided = true;
            self.raw = raw;
            if stats.wants_capture() {
                self.buf = Some(Vec::new());
            }
        }
        if let Some(b) = &mut self.buf {
            b.extend_from_slice(bytes);
        }
    }
}

impl Session {
    /// A fresh session for a client at `peer`.
    pub fn new(ctx: Arc<ListenerCtx>, peer: IpAddr) -> Self {
        let cut_at = chance(ctx.profile.cut_per_mille).then(|| fastrand::u32(..8));
        Session {
            ctx,
            peer,
            tls: false,
            greeted: false,
            in_mail: false,
            recipients: Vec::new(),
            accepted: 0,
            reset_on_body: false,
            hang_after_body: false,
            mode: Mode::Command,
            chunking: Chunking::Idle,
            messages: 0,
            cut_at,
            capture: Capture::default(),
        }
    }

    /// Consumes as much of `input` as possible, appending every reply to `out`. Returns how
    /// many bytes were consumed (the rest is an incomplete line to keep) and what to do next.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Step) {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            match &mut self.mode {
                Mode::Body(scanner) => {
                    if rest.is_empty() {
                        return (pos, Step::NeedInput);
                    }
                    if self.reset_on_body || cut_here(self.cut_at, self.messages, &self.ctx) {
                        return (pos, Step::Reset);
                    }
                    let Some(len) = scanner.scan(rest) else {
                        self.capture.add(&self.ctx.stats, rest, false);
                        return (input.len(), Step::NeedInput);
                    };
                    self.capture
                        .add(&self.ctx.stats, rest.get(..len).unwrap_or_default(), false);
                    pos += len;
                    self.mode = Mode::Command;
                    let step = self.message_end(out);
                    if step != Step::NeedInput {
                        return (pos, step);
                    }
                }
                Mode::Chunk(chunk) => {
                    let accepted = chunk.refusal.is_none();
                    if chunk.remaining > 0 {
                        if rest.is_empty() {
                            return (pos, Step::NeedInput);
                        }
                        if accepted
                            && (self.reset_on_body
                                || cut_here(self.cut_at, self.messages, &self.ctx))
                        {
                            return (pos, Step::Reset);
                        }
                        let take = usize::try_from(chunk.remaining)
                            .map_or(rest.len(), |remaining| remaining.min(rest.len()));
                        if accepted {
                            self.capture.add(
                                &self.ctx.stats,
                                rest.get(..take).unwrap_or_default(),
                                true,
                            );
                        }
                        pos += take;
                        chunk.remaining -= take as u64;
                        if chunk.remaining > 0 {
                            return (pos, Step::NeedInput);
                        }
                    } else if accepted && self.reset_on_body {
                        // An empty chunk is still the start of the content.
                        return (pos, Step::Reset);
                    }
                    let chunk = *chunk;
                    self.mode = Mode::Command;
                    let step = self.chunk_end(chunk, out);
                    if step != Step::NeedInput {
                        return (pos, step);
                    }
                }
                Mode::SkipLongLine => {
                    let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
                        return (input.len(), Step::NeedInput);
                    };
                    pos += eol + 1;
                    self.mode = Mode::Command;
                    out.extend_from_slice(replies::LINE_TOO_LONG);
                }
                Mode::Command => {
                    let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() >= MAX_LINE {
                            self.mode = Mode::SkipLongLine;
                            return (input.len(), Step::NeedInput);
                        }
                        return (pos, Step::NeedInput);
                    };
                    pos += eol + 1;
                    if eol + 1 > MAX_LINE {
                        out.extend_from_slice(replies::LINE_TOO_LONG);
                        continue;
                    }
                    let line = rest.get(..eol).unwrap_or_default();
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let step = self.command(Command::parse(line), out);
                    if step != Step::NeedInput {
                        return (pos, step);
                    }
                }
            }
        }
    }

    /// The message's content is complete (end-of-DATA dot or the `BDAT … LAST` chunk):
    /// applies the `hang…` magic and the profile's latency, else delivers at once.
    fn message_end(&mut self, out: &mut Vec<u8>) -> Step {
        if self.hang_after_body {
            self.end_transaction();
            return Step::Hang;
        }
        if !self.ctx.profile.latency.is_zero() {
            return Step::Deliver;
        }
        self.deliver(out);
        Step::NeedInput
    }

    /// A BDAT chunk was consumed: sends its refusal (ending the transaction after LAST), its
    /// `octets received` reply, or, for LAST, the message's final reply as at end-of-DATA.
    fn chunk_end(&mut self, chunk: Chunk, out: &mut Vec<u8>) -> Step {
        if let Some(refusal) = chunk.refusal {
            out.extend_from_slice(refusal);
            if chunk.last {
                self.end_transaction();
            }
            return Step::NeedInput;
        }
        if !chunk.last {
            replies::chunk_received(out, chunk.size);
            return Step::NeedInput;
        }
        self.message_end(out)
    }

    /// Accepts the message whose body just ended: tallies its recipients and appends the
    /// `250 … queued as <n>` reply.
    pub fn deliver(&mut self, out: &mut Vec<u8>) {
        if chance(self.ctx.profile.garbage_per_mille) {
            self.ctx.counters.fault();
            self.capture.buf = None;
            self.end_transaction();
            out.extend_from_slice(replies::GARBAGE);
            return;
        }
        let stats = &self.ctx.stats;
        for rcpt in self.recipients.iter().take(self.accepted) {
            stats.record_accept(rcpt);
        }
        stats.stamp_accept_time();
        if let Some(raw) = self.capture.buf.take() {
            let content = if self.capture.raw { raw } else { unstuff(&raw) };
            stats.capture(super::stats::Captured {
                recipients: self
                    .recipients
                    .iter()
                    .take(self.accepted)
                    .cloned()
                    .collect(),
                content,
            });
        }
        self.ctx.counters.add_accepted(self.accepted as u64);
        self.messages = self.messages.saturating_add(1);
        self.end_transaction();
        out.extend_from_slice(replies::QUEUED_PREFIX);
        let _ = write!(out, "{}\r\n", self.ctx.stats.next_queue_id());
    }

    /// Resets the session after the TLS handshake (RFC 3207 §4.2: forget everything).
    pub fn tls_started(&mut self) {
        self.ctx.counters.tls();
        self.tls = true;
        self.greeted = false;
        self.mode = Mode::Command;
        self.end_transaction();
    }

    /// Answers one command.
    fn command(&mut self, command: Command<'_>, out: &mut Vec<u8>) -> Step {
        match command {
            Command::Ehlo(_) => {
                self.greeted = true;
                self.end_transaction();
                let ehlo = if self.tls {
                    &self.ctx.ehlo_without_tls
                } else {
                    &self.ctx.ehlo_with_tls
                };
                out.extend_from_slice(ehlo);
            }
            Command::Helo(_) => {
                self.greeted = true;
                self.end_transaction();
                out.extend_from_slice(&self.ctx.helo);
            }
            Command::Mail(_) => return self.mail(out),
            Command::Rcpt(address) => return self.rcpt(address, out),
            Command::Data => {
                if !self.in_mail || self.chunking != Chunking::Idle {
                    out.extend_from_slice(replies::BAD_SEQUENCE);
                } else if self.accepted == 0 {
                    out.extend_from_slice(replies::NO_VALID_RECIPIENTS);
                } else {
                    self.mode = Mode::Body(BodyScanner::new());
                    out.extend_from_slice(replies::DATA_GO_AHEAD);
                }
            }
            Command::Bdat { .. } | Command::BadBdat if !self.ctx.profile.chunking => {
                out.extend_from_slice(replies::SYNTAX_ERROR);
            }
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::BadBdat => {
                out.extend_from_slice(replies::BAD_BDAT);
                return Step::Close;
            }
            Command::Rset => {
                self.end_transaction();
                out.extend_from_slice(replies::OK);
            }
            Command::Noop => out.extend_from_slice(replies::OK),
            Command::Quit => {
                out.extend_from_slice(replies::BYE);
                return Step::Close;
            }
            Command::StartTls => {
                if self.ctx.tls.is_none() {
                    out.extend_from_slice(replies::TLS_UNAVAILABLE);
                } else if self.tls || self.in_mail {
                    out.extend_from_slice(replies::BAD_SEQUENCE);
                } else {
                    out.extend_from_slice(replies::TLS_GO_AHEAD);
                    return Step::StartTls;
                }
            }
            Command::BadArguments => out.extend_from_slice(replies::BAD_ARGUMENTS),
            Command::Unknown => out.extend_from_slice(replies::SYNTAX_ERROR),
        }
        Step::NeedInput
    }

    /// MAIL FROM: sequencing, then the per-connection cap, then the rate limit.
    fn mail(&mut self, out: &mut Vec<u8>) -> Step {
        if !self.greeted || self.in_mail {
            out.extend_from_slice(replies::BAD_SEQUENCE);
            return Step::NeedInput;
        }
        let profile = &self.ctx.profile;
        if profile.max_msgs_per_conn > 0 && self.messages >= profile.max_msgs_per_conn {
            out.extend_from_slice(replies::MAX_MSGS_PER_CONN);
            return Step::Close;
        }
        if profile.max_rate > 0
            && self.ctx.counters.accepted_last_second() >= u64::from(profile.max_rate)
        {
            self.ctx.counters.throttle();
            return match replies::throttle(profile.kind, self.peer) {
                Some(text) => {
                    out.extend_from_slice(&text);
                    Step::Close
                }
                None => Step::Reset,
            };
        }
        self.in_mail = true;
        out.extend_from_slice(replies::MAIL_OK);
        Step::NeedInput
    }

    /// BDAT: decides whether the chunk is accepted, then consumes its content; the reply
    /// follows once the content is in ([`Session::chunk_end`]). A refusal still consumes the
    /// content (RFC 3030 §2), and after one every chunk up to LAST is refused too.
    fn bdat(&mut self, size: u64, last: bool) {
        let refusal = if !self.in_mail {
            Some(replies::BAD_SEQUENCE)
        } else {
            let octets = match self.chunking {
                Chunking::Failed(refusal) => Err(refusal),
                _ if self.accepted == 0 => Err(replies::NO_VALID_RECIPIENTS),
                Chunking::Idle => Ok(size),
                Chunking::Open { octets } => Ok(octets.saturating_add(size)),
            }
            .and_then(|octets| {
                if octets > replies::MAX_SIZE {
                    Err(replies::MESSAGE_TOO_BIG)
                } else {
                    Ok(octets)
                }
            });
            self.chunking = match octets {
                Ok(octets) => Chunking::Open { octets },
                Err(refusal) => Chunking::Failed(refusal),
            };
            octets.err()
        };
        self.mode = Mode::Chunk(Chunk {
            remaining: size,
            size,
            last,
            refusal,
        });
    }

    /// RCPT TO: counts the attempt, then applies the recipient's magic.
    fn rcpt(&mut self, address: &[u8], out: &mut Vec<u8>) -> Step {
        if !self.in_mail || self.chunking != Chunking::Idle {
            out.extend_from_slice(replies::BAD_SEQUENCE);
            return Step::NeedInput;
        }
        if self.accepted >= MAX_RECIPIENTS {
            out.extend_from_slice(replies::TOO_MANY_RECIPIENTS);
            return Step::NeedInput;
        }
        if self.recipients.len() <= self.accepted {
            self.recipients.push(String::new());
        }
        let Some(slot) = self.recipients.get_mut(self.accepted) else {
            out.extend_from_slice(replies::TOO_MANY_RECIPIENTS);
            return Step::NeedInput;
        };
        normalise_into(address, slot);
        let attempts = self.ctx.stats.record_attempt(slot);
        match Magic::of(slot) {
            Magic::TempFail => out.extend_from_slice(replies::TEMPFAIL),
            Magic::Defer(n) if attempts <= n => {
                out.extend_from_slice(replies::TRY_AGAIN_CLOSING);
                return Step::Close;
            }
            Magic::Always421 => {
                out.extend_from_slice(replies::TRY_AGAIN_CLOSING);
                return Step::Close;
            }
            Magic::Unknown => out.extend_from_slice(replies::NO_SUCH_USER),
            Magic::Garbage => out.extend_from_slice(replies::GARBAGE),
            magic @ (Magic::None | Magic::Defer(_) | Magic::Reset | Magic::Hang) => {
                self.reset_on_body |= magic == Magic::Reset;
                self.hang_after_body |= magic == Magic::Hang;
                self.accepted += 1;
                out.extend_from_slice(replies::RCPT_OK);
            }
        }
        Step::NeedInput
    }

    /// Forgets the current transaction (keeps the greeting).
    fn end_transaction(&mut self) {
        self.in_mail = false;
        self.accepted = 0;
        self.reset_on_body = false;
        self.hang_after_body = false;
        self.chunking = Chunking::Idle;
        self.capture = Capture::default();
    }
}

/// A DATA body as sent (dot-stuffed, ending `.\r\n`) → the message it carries.
fn unstuff(raw: &[u8]) -> Vec<u8> {
    let body = raw.strip_suffix(b".\r\n").unwrap_or(raw);
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// Whether the content now arriving (of the message after `messages` accepted ones) is where
/// the connection is to be cut (counted as a fault when it is).
fn cut_here(cut_at: Option<u32>, messages: u32, ctx: &ListenerCtx) -> bool {
    let cut = cut_at == Some(messages);
    if cut {
        ctx.counters.fault();
    }
    cut
}

/// `true` with probability `per_mille` / 1000.
fn chance(per_mille: u32) -> bool {
    per_mille > 0 && fastrand::u32(..1000) < per_mille
}
