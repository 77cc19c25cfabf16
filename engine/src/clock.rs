//! The engine's one clock.
//!
//! Every read of the time goes through here (clippy's `disallowed-methods` enforces it), so
//! monotonic time follows tokio's clock — which tests can pause and advance — and wall-clock
//! time, used for due times and expiry shared through Redis, has one definition.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
