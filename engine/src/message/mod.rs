//! Building each recipient's message from the campaign snapshot.
//!
//! Per campaign, once: lettre composes the message (MIME structure, RFC 2047 headers, address
//! syntax) with placeholders, the result is dot-stuffed and cut into a skeleton of literal
//! segments and merge-field slots. Per recipient: the skeleton is copied with the slots filled,
//! behind a few per-message headers (Date, Message-ID, To, and Subject when it has merge
//! fields, and the snapshot's extra header lines — List-Unsubscribe, Feedback-ID … — with
//! their per-recipient values). That is one memcpy-like pass per message instead of a MIME
//! build. Bodies are 7bit when the templates and the job's values allow it, else base64 when
//! the text is mostly non-ASCII (filled, then encoded per message) or quoted-printable
//! ([`crate::message::qp`], written around the values as they are spliced in): lines stay within RFC
//! 5322's 998 bytes and no 8-bit octet travels. A campaign whose From domain has DKIM keys ([`crate::message::dkim`]) is rendered raw into a
//! scratch buffer, signed with every key, and written behind its `DKIM-Signature` lines.

mod build;
mod cache;
pub mod dkim;
pub mod jis;
pub mod qp;
mod template;
#[cfg(test)]
mod tests;
mod writers;

pub use build::Campaign;
pub use cache::{Renderer, MAX_CACHED_BYTES};
pub use template::Framing;
pub use writers::DateLine;

/// Why a campaign cannot be rendered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// No snapshot in Redis for the campaign.
    #[error("campaign {0} has no snapshot in Redis")]
    Missing(u64),
    /// Redis answered the read with an error that asking again will not change (a wrong
    /// type, a refused command).
    #[error("reading campaign {id}: {error}")]
    Redis {
        /// Campaign.
        id: u64,
        /// The error.
        error: String,
    },
    /// Redis could not be asked for now: the connection is down or being re-made, the server
    /// is loading its data after a restart, a cluster is failing over. Nothing is wrong with
    /// the job: it goes back uncharged ([`crate::outcome::report::Reporter::store_unavailable`]).
    #[error("reading campaign {id}: Redis unavailable: {error}")]
    Unavailable {
        /// Campaign.
        id: u64,
        /// The error.
        error: String,
    },
    /// A newer release wrote the snapshot for its own nodes
    /// ([`hikyaku_queue_schema::DecodeError::TooNew`]): the job waits for one of them.
    #[error("campaign {id}: snapshot version {version} is for a newer release")]
    TooNew {
        /// Campaign.
        id: u64,
        /// The snapshot's version.
        version: u8,
    },
    /// The snapshot is malformed or its content cannot be encoded.
    #[error("campaign {id}: {error}")]
    Invalid {
        /// Campaign.
        id: u64,
        /// What is wrong.
        error: String,
    },
}

impl RenderError {
    /// The error of reading campaign `id` from Redis: [`RenderError::Unavailable`] when asking
    /// again later can succeed (the client would reconnect, wait or retry: the redis crate's
    /// own [`redis::RetryMethod`]), else [`RenderError::Redis`].
    pub fn reading(id: u64, e: &redis::RedisError) -> Self {
        let error = e.to_string();
        if matches!(e.retry_method(), redis::RetryMethod::NoRetry) {
            Self::Redis { id, error }
        } else {
            Self::Unavailable { id, error }
        }
    }
}

/// The largest message the engine builds, whatever the destination announces: a campaign whose
/// merge values would make a message larger is refused for that recipient (`552 5.3.4`, not
/// sent) before it is built. 64 MiB is beyond what any mailbox provider takes.
pub const MAX_MESSAGE_BYTES: u64 = 64 << 20;
