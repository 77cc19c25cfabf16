//! The end state of a job, as the engine reports it to the recorder.

use crate::codec::{DecodeError, Reader, Writer};
use crate::job::JobId;

const TAG: u8 = b'E';
const VERSION: u8 = 1;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    /// The destination accepted the message (2xx after DATA).
    Delivered,
    /// The destination or the DNS refused it permanently.
    Bounced,
    /// It was still deferred when its expiry passed.
    Expired,
    /// Its campaign was cancelled before it was sent.
    Cancelled,
    /// Not an end state: one attempt was deferred and the job went to the retry set. Written
    /// by the same script that moves the job, for the record (the daily error digest); the
    /// recorder keeps it apart from end states.
    Deferred,
}

impl EventStatus {
    /// Stable lower-case name (also used as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Delivered => "delivered",
            EventStatus::Bounced => "bounced",
            EventStatus::Expired => "expired",
            EventStatus::Cancelled => "cancelled",
            EventStatus::Deferred => "deferred",
        }
    }

    /// Whether the job ended (everything but [`EventStatus::Deferred`]).
    pub fn is_end(self) -> bool {
        self != EventStatus::Deferred
    }

    fn code(self) -> u64 {
        match self {
            EventStatus::Delivered => 1,
            EventStatus::Bounced => 2,
            EventStatus::Expired => 3,
            EventStatus::Cancelled => 4,
            EventStatus::Deferred => 5,
        }
    }

    fn from_code(c: u64) -> Result<Self, DecodeError> {
        match c {
            1 => Ok(EventStatus::Delivered),
            2 => Ok(EventStatus::Bounced),
            3 => Ok(EventStatus::Expired),
            4 => Ok(EventStatus::Cancelled),
            5 => Ok(EventStatus::Deferred),
            _ => Err(DecodeError::OutOfRange { field: "status" }),
        }
    }
}

/// One event per finished job. `(id, attempt)` is unique: the recorder's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The job.
    pub id: JobId,
    /// Attempts made, this one included.
    pub attempt: u32,
    /// End state.
    pub status: EventStatus,
    /// Reason class from the engine's classifier (e.g. `accepted`, `bad-mailbox`, `bad-domain`).
    pub reason: String,
    /// SMTP reply code of the deciding reply, or 0 when there was none (DNS, expiry).
    pub code: u16,
    /// Enhanced status code (RFC 3463) if the peer sent one, else empty.
    pub enhanced: String,
    /// The deciding reply text or error, truncated.
    pub text: String,
    /// Destination site the job was routed to.
    pub site: String,
    /// MX host that gave the deciding reply, or empty.
    pub mx: String,
    /// The recipient.
    pub rcpt: String,
    /// When the job was first enqueued (ms since the epoch).
    pub queued_ms: u64,
    /// When it ended (ms since the epoch).
    pub at_ms: u64,
}

impl Event {
    /// Longest reply text kept in an event.
    pub const MAX_TEXT: usize = 512;

    /// Encodes the event, cutting `text` to [`Event::MAX_TEXT`] bytes on a char boundary.
    pub fn encode(&self) -> Vec<u8> {
        let mut cut = self.text.len().min(Self::MAX_TEXT);
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut w = Writer::new(TAG, VERSION, 96 + cut + self.rcpt.len());
        w.u64(self.id.campaign)
            .u64(self.id.seq)
            .u64(u64::from(self.attempt))
            .u64(self.status.code())
            .str(&self.reason)
            .u64(u64::from(self.code))
            .str(&self.enhanced)
            .str(&self.text[..cut])
            .str(&self.site)
            .str(&self.mx)
            .str(&self.rcpt)
            .u64(self.queued_ms)
            .u64(self.at_ms);
        w.finish()
    }

    /// Decodes an event written by [`Event::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, _version) = Reader::new(bytes, TAG, VERSION)?;
        let e = Event {
            id: JobId {
                campaign: r.u64("campaign")?,
                seq: r.u64("seq")?,
            },
            attempt: r.int("attempt")?,
            status: EventStatus::from_code(r.u64("status")?)?,
            reason: r.str("reason")?.to_owned(),
            code: r.int("code")?,
            enhanced: r.str("enhanced")?.to_owned(),
            text: r.str("text")?.to_owned(),
            site: r.str("site")?.to_owned(),
            mx: r.str("mx")?.to_owned(),
            rcpt: r.str("rcpt")?.to_owned(),
            queued_ms: r.u64("queued_ms")?,
            at_ms: r.u64("at_ms")?,
        };
        r.end()?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_truncates_text_on_a_char_boundary() {
        let mut e = Event {
            id: JobId {
                campaign: 1,
                seq: 2,
            },
            attempt: 3,
            status: EventStatus::Bounced,
            reason: "bad-mailbox".into(),
            code: 550,
            enhanced: "5.1.1".into(),
            text: "The email account that you tried to reach does not exist.".into(),
            site: "google".into(),
            mx: "mx1.google.test".into(),
            rcpt: "x@gmail.test".into(),
            queued_ms: 10,
            at_ms: 20,
        };
        assert_eq!(Event::decode(&e.encode()), Ok(e.clone()));
        e.text = "あ".repeat(400);
        let back = Event::decode(&e.encode()).expect("decodes");
        assert!(back.text.len() <= Event::MAX_TEXT);
        assert!(e.text.starts_with(&back.text));
        assert!(Event::decode(&[b'E', 1, 1, 2, 3, 9]).is_err());
    }
}
