//! How a session fails ([`SmtpError`]), and the refusals the client makes itself without
//! sending anything.

use super::reply::{EnhancedCode, Reply, ReplyError};

/// A refusal made by the client itself, without sending anything: code, enhanced code
/// `5.<subject>.<detail>` and a text the classifier reads as `not-sent`.
pub(crate) fn refusal(code: u16, subject: u16, detail: u16, text: String) -> Reply {
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
}
