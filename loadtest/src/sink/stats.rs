//! Sink-wide statistics shared by every session, the HTTP endpoint and the tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::profile_stats::{ProfileCounters, ProfileStats};
use super::tally::{normalise_into, Tally};

/// Thread-safe counters of everything the sink accepted, shared behind an `Arc`.
pub struct SinkStats {
    /// Per-recipient attempts and acceptances.
    tally: Tally,
    /// See [`SinkStats::accepted`].
    accepted: AtomicU64,
    /// See [`SinkStats::distinct`].
    distinct: AtomicU64,
    /// See [`SinkStats::duplicates`].
    duplicates: AtomicU64,
    /// Wall-clock ms of the first acceptance; 0 = none yet.
    first_accept_ms: AtomicU64,
    /// Wall-clock ms of the latest acceptance; 0 = none yet.
    last_accept_ms: AtomicU64,
    /// Source of the `queued as <n>` ids.
    next_queue_id: AtomicU64,
    /// Counters per profile name, fixed at start (sorted for stable JSON).
    profiles: BTreeMap<String, Arc<ProfileCounters>>,
    /// Messages kept whole (the first `capture_limit`).
    captured: Mutex<Vec<Captured>>,
    /// How many messages to keep.
    capture_limit: usize,
}

/// One accepted message, kept whole.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Its accepted recipients (normalised).
    pub recipients: Vec<String>,
    /// The message (headers and body, CRLF lines), un-dot-stuffed.
    pub content: Vec<u8>,
}

impl SinkStats {
    /// Empty statistics for the given profile names, with time buckets starting now.
    pub(crate) fn new<'a>(
        profile_names: impl IntoIterator<Item = &'a str>,
        capture_limit: usize,
    ) -> Self {
        let start = Instant::now();
        SinkStats {
            tally: Tally::new(),
            accepted: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            first_accept_ms: AtomicU64::new(0),
            last_accept_ms: AtomicU64::new(0),
            next_queue_id: AtomicU64::new(1),
            profiles: profile_names
                .into_iter()
                .map(|name| (name.to_owned(), Arc::new(ProfileCounters::new(start))))
                .collect(),
            captured: Mutex::new(Vec::new()),
            capture_limit,
        }
    }

    /// Whether another message should be kept whole.
    pub(crate) fn wants_capture(&self) -> bool {
        self.capture_limit > 0 && self.captured_lock().len() < self.capture_limit
    }

    pub(crate) fn capture(&self, message: Captured) {
        let mut c = self.captured_lock();
        if c.len() < self.capture_limit {
            c.push(message);
        }
    }

    /// The messages kept whole, in acceptance order (see `SinkConfig::capture`).
    pub fn captured(&self) -> Vec<Captured> {
        self.captured_lock().clone()
    }

    fn captured_lock(&self) -> std::sync::MutexGuard<'_, Vec<Captured>> {
        self.captured.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Total messages accepted (250 after DATA or `BDAT … LAST`), counting each recipient of a transaction.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Distinct recipients accepted at least once.
    pub fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    /// Sum over recipients of (times accepted − 1) for those accepted more than once:
    /// non-zero means the engine delivered something twice.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Times `rcpt` was accepted (compared case-insensitively).
    pub fn count_of(&self, rcpt: &str) -> u32 {
        self.tally.get(&normalised(rcpt)).accepted
    }

    /// Times `rcpt` was named in a RCPT command, whatever the reply (case-insensitive).
    pub fn attempts_of(&self, rcpt: &str) -> u32 {
        self.tally.get(&normalised(rcpt)).attempts
    }

    /// A snapshot of the named profile's counters.
    pub fn profile(&self, name: &str) -> Option<ProfileStats> {
        self.profiles.get(name).map(|c| c.snapshot())
    }

    /// Wall-clock milliseconds since the epoch of the first accepted message.
    pub fn first_accept_ms(&self) -> Option<u64> {
        nonzero(self.first_accept_ms.load(Ordering::Relaxed))
    }

    /// Wall-clock milliseconds since the epoch of the latest accepted message.
    pub fn last_accept_ms(&self) -> Option<u64> {
        nonzero(self.last_accept_ms.load(Ordering::Relaxed))
    }

    /// `{"accepted","distinct","duplicates","first_accept_ms","last_accept_ms",
    /// "profiles":{name:{..ProfileStats}}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let profiles: serde_json::Map<String, serde_json::Value> = self
            .profiles
            .iter()
            .map(|(name, c)| {
                let value = serde_json::to_value(c.snapshot()).unwrap_or(serde_json::Value::Null);
                (name.clone(), value)
            })
            .collect();
        serde_json::json!({
            "accepted": self.accepted(),
            "distinct": self.distinct(),
            "duplicates": self.duplicates(),
            "first_accept_ms": self.first_accept_ms(),
            "last_accept_ms": self.last_accept_ms(),
            "profiles": profiles,
        })
    }

    /// The live counters of a profile, for the sessions that update them.
    pub(crate) fn counters(&self, name: &str) -> Option<Arc<ProfileCounters>> {
        self.profiles.get(name).cloned()
    }

    /// Records one RCPT of `address` (normalised) and returns its attempts so far.
    pub(crate) fn record_attempt(&self, address: &str) -> u32 {
        self.tally.attempt(address)
    }

    /// Records one accepted delivery to `address` (normalised).
    pub(crate) fn record_accept(&self, address: &str) {
        if self.tally.accept(address) == 0 {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Stamps the first/last acceptance times with the current wall clock.
    pub(crate) fn stamp_accept_time(&self) {
        let now = wall_clock_ms().max(1);
        let _ = self
            .first_accept_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_accept_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// A fresh id for a `queued as` reply.
    pub(crate) fn next_queue_id(&self) -> u64 {
        self.next_queue_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl fmt::Debug for SinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkStats")
            .field("accepted", &self.accepted())
            .field("distinct", &self.distinct())
            .field("duplicates", &self.duplicates())
            .field("profiles", &self.profiles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The tally key of a user-supplied address.
fn normalised(rcpt: &str) -> String {
    let mut key = String::with_capacity(rcpt.len());
    normalise_into(rcpt.as_bytes(), &mut key);
    key
}

/// Wall-clock milliseconds since the Unix epoch. The loadtest crate does not depend on the
/// engine, so this is its one wall-clock read (the workspace otherwise routes time through
/// `hikyaku_engine::clock`); the value is only reported, never used for scheduling.
#[allow(clippy::disallowed_methods)]
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Maps the "not yet" sentinel 0 to `None`.
fn nonzero(ms: u64) -> Option<u64> {
    (ms != 0).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_distinct() {
        let s = SinkStats::new(["plain"], 0);
        for rcpt in ["a@x.test", "b@x.test", "a@x.test", "a@x.test"] {
            s.record_accept(rcpt);
        }
        s.stamp_accept_time();
        assert_eq!((s.accepted(), s.distinct(), s.duplicates()), (4, 2, 2));
        assert_eq!(s.count_of("A@X.TEST"), 3);
        assert!(s.first_accept_ms().is_some());
        let json = s.to_json();
        assert_eq!(json["duplicates"], 2);
        assert_eq!(json["profiles"]["plain"]["accepted"], 0);
    }
}
