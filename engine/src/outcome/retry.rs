//! When to try a deferred job again: a pure function of the attempt number.

use std::time::Duration;

/// Exponential backoff with jitter: `initial × factor^(attempt-1)`, capped at `max`, then spread
/// by ±`jitter` so a burst of deferrals does not come back as a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySchedule {
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Growth per further attempt.
    pub factor: f64,
    /// Longest delay between attempts.
    pub max: Duration,
    /// Fraction of the delay by which it is randomly spread (0.2 = ±20%).
    pub jitter: f64,
}

impl RetrySchedule {
    /// Delay after `failed_attempts` failed attempts (1 after the first failure).
    /// `unit_random` is a number in `[0, 1)`; 0.5 gives the un-jittered delay.
    pub fn delay(&self, failed_attempts: u32, unit_random: f64) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let capped = base.min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter.clamp(0.0, 1.0) * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * spread).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            initial: Duration::from_secs(60),
            factor: 2.0,
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let table = [
            (1, 60),
            (2, 120),
            (3, 240),
            (4, 480),
            (6, 1920),
            (7, 3600),
            (50, 3600),
        ];
        for (attempt, secs) in table {
            assert_eq!(
                schedule().delay(attempt, 0.5),
                Duration::from_secs(secs),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_its_band() {
        assert_eq!(schedule().delay(1, 0.0), Duration::from_secs(48));
        assert_eq!(schedule().delay(1, 1.0), Duration::from_secs(72));
        let s = RetrySchedule {
            jitter: 0.0,
            ..schedule()
        };
        assert_eq!(s.delay(0, 0.9), Duration::from_secs(60));
        assert_eq!(s.delay(u32::MAX, 0.9), Duration::from_secs(3600));
    }
}
