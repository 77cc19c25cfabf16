//! One recipient's delivery job, as it sits in a ready stream or a retry set.

use crate::codec::{DecodeError, Reader, Writer};

const TAG: u8 = b'J';
const VERSION: u8 = 1;

/// Identity of a job: the campaign and the recipient's sequence number within it.
///
/// Unique across the whole system; the recorder keys events on it (plus the attempt number), and
/// the Message-ID is derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId {
    /// The campaign the job belongs to.
    pub campaign: u64,
    /// The recipient's position in the campaign's expansion, unique within the campaign.
    pub seq: u64,
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.campaign, self.seq)
    }
}

/// A delivery job for one recipient of one campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Campaign and sequence number.
    pub id: JobId,
    /// Delivery attempts already made (0 for a fresh job); the retry schedule is indexed by it.
    pub attempt: u32,
    /// When the job was first enqueued (ms since the Unix epoch); expiry counts from here.
    pub queued_ms: u64,
    /// Absolute expiry set by the campaign (ms since the epoch), or 0 to use the site policy's.
    pub expires_ms: u64,
    /// Lane: 0 is bulk, higher values are served first (transactional mail).
    pub priority: u8,
    /// The envelope recipient, `local@domain`.
    pub rcpt: String,
    /// Merge-field values, in the order of the snapshot's `field_names`.
    pub fields: Vec<String>,
}

impl Job {
    /// The recipient domain (after the last `@`), or the whole address if there is none.
    pub fn domain(&self) -> &str {
        self.rcpt
            .rsplit_once('@')
            .map_or(self.rcpt.as_str(), |(_, d)| d)
    }

    /// Encodes the job.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG, VERSION, 32 + self.rcpt.len() + 16 * self.fields.len());
        w.u64(self.id.campaign)
            .u64(self.id.seq)
            .u64(u64::from(self.attempt))
            .u64(self.queued_ms)
            .u64(self.expires_ms)
            .u64(u64::from(self.priority))
            .str(&self.rcpt)
            .strs(&self.fields);
        w.finish()
    }

    /// Decodes a job written by [`Job::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, _version) = Reader::new(bytes, TAG, VERSION)?;
        let job = Job {
            id: JobId {
                campaign: r.u64("campaign")?,
                seq: r.u64("seq")?,
            },
            attempt: r.int("attempt")?,
            queued_ms: r.u64("queued_ms")?,
            expires_ms: r.u64("expires_ms")?,
            priority: r.int("priority")?,
            rcpt: r.str("rcpt")?.to_owned(),
            fields: r.strs("fields")?,
        };
        r.end()?;
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Job {
        Job {
            id: JobId {
                campaign: 7,
                seq: 123_456,
            },
            attempt: 2,
            queued_ms: 1_700_000_000_000,
            expires_ms: 0,
            priority: 1,
            rcpt: "taro@docomo.ne.jp".into(),
            fields: vec!["太郎".into(), "".into(), "gold".into()],
        }
    }

    #[test]
    fn round_trips() {
        let job = sample();
        assert_eq!(Job::decode(&job.encode()), Ok(job));
    }

    #[test]
    fn is_compact() {
        assert!(sample().encode().len() < 60);
    }

    #[test]
    fn domain_is_after_the_last_at() {
        assert_eq!(sample().domain(), "docomo.ne.jp");
        let mut j = sample();
        j.rcpt = "\"a@b\"@c.test".into();
        assert_eq!(j.domain(), "c.test");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Job::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Job::decode(&longer), Err(DecodeError::Trailing(1)));
    }
}
