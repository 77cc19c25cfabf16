//! The engine's one clock.
//!
//! Every read of the time goes through here (clippy's `disallowed-methods` enforces it), so
//! monotonic time follows tokio's clock — which tests can pause and advance — and wall-clock
//! time, used for due times and expiry shared through Redis, has one definition.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Monotonic now, from tokio's clock (pausable in tests).
pub fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Wall-clock now in milliseconds since the Unix epoch: the unit of due times and expiry in
/// Redis, shared by every engine node.
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// The `SystemTime` of a wall-clock reading from [`now_ms`] (for header dates).
pub fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The beat of a periodic chore: every `period` (a late tick is delayed, never bunched) until
/// its stop signal turns true or its sender is gone. The first tick is at once.
#[derive(Debug)]
pub struct Ticks {
    interval: tokio::time::Interval,
    stop: watch::Receiver<bool>,
}

impl Ticks {
    /// Ticks every `period` until `stop`.
    pub fn new(period: Duration, stop: watch::Receiver<bool>) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticks { interval, stop }
    }

    /// Waits for the next tick: `true` to do the chore's work, `false` once stopped (at once,
    /// without waiting for the tick).
    pub async fn next(&mut self) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = self.interval.tick() => {}
            changed = self.stop.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
        }
        !*self.stop.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_until_stopped_or_orphaned() {
        let (tx, rx) = watch::channel(false);
        let mut ticks = Ticks::new(Duration::from_millis(20), rx);
        let start = now();
        assert!(ticks.next().await, "the first tick is at once");
        assert!(ticks.next().await);
        assert!(now() - start >= Duration::from_millis(20));
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send_replace(true);
            tx
        });
        let before = now();
        assert!(!ticks.next().await, "a stop ends the wait for the tick");
        assert!(now() - before < Duration::from_millis(20));
        assert!(!ticks.next().await);
        drop(stopper.await.expect("stopper"));
        let (tx, rx) = watch::channel(false);
        let mut ticks = Ticks::new(Duration::from_secs(3600), rx);
        assert!(ticks.next().await);
        drop(tx);
        assert!(!ticks.next().await, "a gone sender stops it");
    }
}
