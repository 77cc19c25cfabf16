//! A smoothed per-second rate: a counter the hot path bumps (one relaxed add) and a rate worked
//! out from it at most once a second. Used for the rate a site accepts at (adaptive shaping
//! starts its cuts from it) and the share of the fleet's rate a node leases (it paces refused
//! jobs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The state at the last update.
#[derive(Debug)]
struct Last {
    at_ms: u64,
    count: u64,
    rate: f64,
}

/// Events per second, smoothed over updates at least a second apart.
#[derive(Debug)]
pub struct Meter {
    count: AtomicU64,
    last: Mutex<Last>,
    /// Weight of the previous estimate in each update (the new second gets the rest).
    keep: f64,
}

impl Meter {
    /// A meter starting at `now_ms` whose updates keep `keep` of the previous estimate.
    pub fn new(now_ms: u64, keep: f64) -> Self {
        Meter {
            count: AtomicU64::new(0),
            last: Mutex::new(Last {
                at_ms: now_ms,
                count: 0,
                rate: 0.0,
            }),
            keep,
        }
    }

    /// Counts `n` events.
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Last> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The smoothed rate, updated first when a second or more has passed since the last
    /// update (the first measured second is taken as it is).
    pub fn update(&self, now_ms: u64) -> f64 {
        let count = self.count.load(Ordering::Relaxed);
        let mut l = self.last();
        let dt = now_ms.saturating_sub(l.at_ms);
        if dt >= 1000 {
            let r = count.saturating_sub(l.count) as f64 * 1000.0 / dt as f64;
            l.rate = if l.rate == 0.0 {
                r
            } else {
                self.keep * l.rate + (1.0 - self.keep) * r
            };
            l.at_ms = now_ms;
            l.count = count;
        }
        l.rate
    }

    /// The smoothed rate, or the count since the last update if higher — over at least a
    /// second, so a burst that filled a second in 100 ms reads as its count, not ten times it.
    pub fn recent(&self, now_ms: u64) -> f64 {
        let count = self.count.load(Ordering::Relaxed);
        let l = self.last();
        let dt = now_ms.saturating_sub(l.at_ms).max(1000);
        let recent = count.saturating_sub(l.count) as f64 * 1000.0 / dt as f64;
        l.rate.max(recent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooths_per_second_and_reads_a_burst_over_a_second() {
        let m = Meter::new(0, 0.5);
        m.add(100);
        assert_eq!(m.update(500), 0.0, "not a second yet");
        assert_eq!(m.recent(500), 100.0, "100 in half a second reads as 100/s");
        assert_eq!(m.update(1000), 100.0);
        m.add(300);
        assert_eq!(m.update(2000), 200.0, "half the old, half the new");
    }
}
