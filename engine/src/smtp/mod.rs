//! The outbound SMTP client.
//!
//! Hand-written rather than lettre's transport: a bulk sender needs PIPELINING with one write for
//! MAIL/RCPT/DATA, connection reuse across many messages with RSET folded into the next batch,
//! per-phase timeouts and every failure turned into a classifiable [`SmtpError`] — lettre's
//! transport does a round trip per command and was measured about 4× slower here. The client is
//! generic over `AsyncRead + AsyncWrite`, so it is tested without sockets.
//!
//! Where the server offers CHUNKING (RFC 3030) as well as PIPELINING, whole messages are
//! pipelined: `[RSET] MAIL RCPT BDAT <n> LAST <content>`, no 354 round trip, many messages per
//! write and their replies read together ([`SmtpClient::queue_message`],
//! [`SmtpClient::message_result`]; the window is run by [`crate::site`]). Where it offers
//! PIPELINING without CHUNKING, each message still takes one round trip: the dot-stuffed content
//! and final dot of one message go in the same write as the next message's
//! `[RSET] MAIL RCPT DATA` (RFC 2920 §3.1), so one read brings the reply to the dot and the next
//! message's 354 ([`SmtpClient::queue_envelope`], [`SmtpClient::queue_content`]). Without
//! PIPELINING every command waits for its reply.

pub mod capabilities;
pub mod client;
pub mod dotstuff;
pub mod error;
pub mod reply;
pub mod stream;
pub mod tls;

use std::time::Duration;

pub use capabilities::Capabilities;
pub use client::{Envelope, SmtpClient};
pub use error::{too_big, SmtpError};
pub use reply::{EnhancedCode, Reply};

/// One timeout per SMTP phase (RFC 5321 §4.5.3.2 gives minutes; bulk senders use less).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// The 220 greeting.
    pub banner: Duration,
    /// EHLO/HELO reply.
    pub ehlo: Duration,
    /// STARTTLS reply and the TLS handshake.
    pub starttls: Duration,
    /// Replies to MAIL, RCPT, DATA and RSET.
    pub command: Duration,
    /// Sending the body and the reply to the final dot.
    pub data: Duration,
    /// Idle time after which an unused connection is closed.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            banner: Duration::from_secs(60),
            ehlo: Duration::from_secs(60),
            starttls: Duration::from_secs(60),
            command: Duration::from_secs(60),
            data: Duration::from_secs(120),
            idle: Duration::from_secs(10),
        }
    }
}
