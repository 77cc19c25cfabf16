//! Live counters of one profile and their serialisable snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::time::Instant;

/// Width of one rate bucket. Time is tokio's clock, so paused-time tests control it.
const BUCKET_MS: u128 = 100;
/// Buckets per second: the sliding window for rate limits and `max_in_any_second`.
const BUCKETS_PER_SECOND: usize = 10;

/// A snapshot of one profile's counters, as served in the stats JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProfileStats {
    /// Messages accepted (end-of-DATA 250), counting each recipient of a transaction.
    pub accepted: u64,
    /// Sessions served (connections refused by `max_conns` are not counted here but in
    /// `throttled`).
    pub connections_total: u64,
    /// Most sessions open at once, to check the engine honours connection limits.
    pub max_concurrent_conns: u64,
    /// Throttle replies sent (connection refusals and rate-limit replies, resets included).
    pub throttled: u64,
    /// Faults injected on purpose: connections cut mid-content and garbage replies
    /// ([`super::Profile::cut_per_mille`], [`super::Profile::garbage_per_mille`]).
    pub faults: u64,
    /// Sessions that went over TLS (STARTTLS taken).
    pub tls_sessions: u64,
    /// Most messages accepted in any sliding one-second window (100 ms granularity), to check
    /// the engine honours rate limits.
    pub max_in_any_second: u64,
    /// Messages accepted in each whole second since the sink started (index = second), for
    /// throughput graphs.
    pub per_second: Vec<u64>,
}

/// The live, shared counters of one profile name.
#[derive(Debug)]
pub struct ProfileCounters {
    /// When the sink started; bucket 0 begins here.
    start: Instant,
    /// See [`ProfileStats::accepted`].
    accepted: AtomicU64,
    /// See [`ProfileStats::connections_total`].
    connections_total: AtomicU64,
    /// Sessions open right now, for `max_conns`.
    open: AtomicU64,
    /// See [`ProfileStats::max_concurrent_conns`].
    max_open: AtomicU64,
    /// See [`ProfileStats::throttled`].
    throttled: AtomicU64,
    /// See [`ProfileStats::faults`].
    faults: AtomicU64,
    /// See [`ProfileStats::tls_sessions`].
    tls_sessions: AtomicU64,
    /// Accepted messages per 100 ms since `start`; a test run is short, so keeping them all
    /// is cheap (36,000 buckets an hour).
    buckets: Mutex<Vec<u64>>,
}

impl ProfileCounters {
    /// Zeroed counters whose time buckets start at `start`.
    pub fn new(start: Instant) -> Self {
        ProfileCounters {
            start,
            accepted: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            open: AtomicU64::new(0),
            max_open: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            tls_sessions: AtomicU64::new(0),
            buckets: Mutex::new(Vec::new()),
        }
    }

    /// Registers a new session unless `max` (0 = unlimited) sessions are already open. The
    /// returned guard closes the session's slot when dropped, however the session ends.
    pub fn try_open(self: &Arc<Self>, max: u32) -> Option<OpenSession> {
        let max = u64::from(max);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (max == 0 || open < max).then_some(open + 1)
            })
            .ok()
            .map(|before| {
                self.connections_total.fetch_add(1, Ordering::Relaxed);
                self.max_open.fetch_max(before + 1, Ordering::Relaxed);
                OpenSession(Arc::clone(self))
            })
    }

    /// Counts one fault injected on purpose.
    pub fn fault(&self) {
        self.faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one session that took STARTTLS.
    pub fn tls(&self) {
        self.tls_sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one throttle reply (or reset).
    pub fn throttle(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` accepted deliveries now.
    pub fn add_accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Ordering::Relaxed);
        let index = self.bucket_now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() <= index {
            buckets.resize(index + 1, 0);
        }
        if let Some(bucket) = buckets.get_mut(index) {
            *bucket += n;
        }
    }

    /// Deliveries accepted in the current one-second window (this bucket and the nine
    /// before it), for the rate limit.
    pub fn accepted_last_second(&self) -> u64 {
        let now = self.bucket_now();
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let from = (now + 1).saturating_sub(BUCKETS_PER_SECOND);
        buckets.iter().skip(from).take(now + 1 - from).sum()
    }

    /// A consistent-enough snapshot for reports.
    pub fn snapshot(&self) -> ProfileStats {
        let now = self.bucket_now();
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let seconds = now / BUCKETS_PER_SECOND + 1;
        let per_second = (0..seconds)
            .map(|s| {
                buckets
                    .iter()
                    .skip(s * BUCKETS_PER_SECOND)
                    .take(BUCKETS_PER_SECOND)
                    .sum()
            })
            .collect();
        ProfileStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            max_concurrent_conns: self.max_open.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            tls_sessions: self.tls_sessions.load(Ordering::Relaxed),
            max_in_any_second: max_window_sum(&buckets, BUCKETS_PER_SECOND),
            per_second,
        }
    }

    /// Index of the bucket the current instant falls in.
    fn bucket_now(&self) -> usize {
        let ms = self.start.elapsed().as_millis() / BUCKET_MS;
        usize::try_from(ms).unwrap_or(usize::MAX - 1)
    }
}

/// The largest sum of `width` consecutive values (a shorter slice sums whole).
fn max_window_sum(values: &[u64], width: usize) -> u64 {
    let mut sum = 0;
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        sum += v;
        if i >= width {
            sum -= values.get(i - width).copied().unwrap_or(0);
        }
        best = best.max(sum);
    }
    best
}

/// One open session's slot in its profile's connection count; frees it on drop.
#[derive(Debug)]
pub struct OpenSession(Arc<ProfileCounters>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sliding_window_maximum() {
        assert_eq!(max_window_sum(&[], 10), 0);
        assert_eq!(max_window_sum(&[1, 2, 3], 10), 6);
        let v = [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 1];
        assert_eq!(max_window_sum(&v, 10), 8);
    }

    #[test]
    fn connection_cap_and_guard() {
        let c = Arc::new(ProfileCounters::new(Instant::now()));
        let a = c.try_open(2).unwrap();
        let _b = c.try_open(2).unwrap();
        assert!(c.try_open(2).is_none());
        drop(a);
        let _c = c.try_open(2).unwrap();
        let s = c.snapshot();
        assert_eq!((s.connections_total, s.max_concurrent_conns), (3, 2));
    }

    #[test]
    fn accepted_counts_land_in_the_current_second() {
        let c = ProfileCounters::new(Instant::now());
        c.add_accepted(3);
        assert_eq!(c.accepted_last_second(), 3);
        let s = c.snapshot();
        assert_eq!(s.accepted, 3);
        assert_eq!(s.per_second, vec![3]);
        assert_eq!(s.max_in_any_second, 3);
    }
}
