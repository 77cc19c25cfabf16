//! One recipient's delivery job, as it sits in a ready stream or a retry set.

use crate::codec::{DecodeError, Reader, Writer};

const TAG: u8 = b'J';
/// Version 1: a job as enqueued; version 2 appends [`LastTry`] (jobs deferred by an engine).
const VERSION: u8 = 2;

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
    /// Where and why the last try stopped, set by the engine when it puts the job in a retry
    /// set (read by the admin CLI's `queue inspect|requeue|drain`); `None` on enqueue.
    /// Boxed: most jobs have none, and a job's size is what the engine moves around.
    pub last: Option<Box<LastTry>>,
}

/// The site a deferred job was routed to and its last error (a reply, trimmed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LastTry {
    /// The site the job was routed to.
    pub site: String,
    /// The last deferral's reply or reason at this site, at most [`LastTry::MAX_ERROR`] bytes
    /// (the whole reply is in the deferral event); empty when the job was only held back by
    /// this site (paused or busy) and never deferred there.
    pub error: String,
}

impl LastTry {
    /// Longest error kept in a job.
    pub const MAX_ERROR: usize = 64;

    /// A last try at `site` with `error` cut to [`LastTry::MAX_ERROR`] on a char boundary.
    pub fn new(site: &str, error: &str) -> Self {
        let mut cut = error.len().min(Self::MAX_ERROR);
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        LastTry {
            site: site.to_owned(),
            error: error[..cut].to_owned(),
        }
    }
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
        // A job without a last try is written as version 1, byte for byte what older
        // engines read.
        let version = if self.last.is_some() { VERSION } else { 1 };
        let mut w = Writer::new(TAG, version, 32 + self.rcpt.len() + 16 * self.fields.len());
        w.u64(self.id.campaign)
            .u64(self.id.seq)
            .u64(u64::from(self.attempt))
            .u64(self.queued_ms)
            .u64(self.expires_ms)
            .u64(u64::from(self.priority))
            .str(&self.rcpt)
            .strs(&self.fields);
        if let Some(last) = &self.last {
            w.str(&last.site).str(&last.error);
        }
        w.finish()
    }

    /// Decodes a job written by [`Job::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, version) = Reader::new(bytes, TAG, VERSION)?;
        let mut job = Job {
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
            last: None,
        };
        if version >= 2 {
            job.last = Some(Box::new(LastTry {
                site: r.str("site")?.to_owned(),
                error: r.str("error")?.to_owned(),
            }));
        }
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
            last: None,
        }
    }

    #[test]
    fn round_trips() {
        let job = sample();
        assert_eq!(Job::decode(&job.encode()), Ok(job));
    }

    #[test]
    fn a_last_try_round_trips_as_version_2_and_none_stays_version_1() {
        let plain = sample().encode();
        assert_eq!(plain[1], 1);
        let mut j = sample();
        j.last = Some(Box::new(LastTry::new(
            "yahoo",
            "421 4.7.0 [TSS04] Messages temporarily deferred",
        )));
        let bytes = j.encode();
        assert_eq!(bytes[1], 2);
        assert_eq!(Job::decode(&bytes), Ok(j.clone()));
        for cut in 0..bytes.len() {
            assert!(Job::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let long = "あ".repeat(100);
        let t = LastTry::new("s", &long);
        assert!(t.error.len() <= LastTry::MAX_ERROR && long.starts_with(&t.error));
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
