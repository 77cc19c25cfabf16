//! What every handler shares.

use hikyaku_queue_schema::Redis;
use sqlx::PgPool;

/// Shared state: the record, the queues, and settings handlers need.
#[derive(Debug, Clone)]
pub struct AppState {
    /// PostgreSQL pool.
    pub db: PgPool,
    /// Redis (queues): one server or a cluster, reconnecting by itself; cheap to clone.
    pub redis: Redis,
    /// Shard count of the queues (from `hk:meta`).
    pub shards: u16,
    /// Key of the unsubscribe tokens.
    pub token_secret: std::sync::Arc<[u8]>,
    /// Public base URL of this API (for unsubscribe links), without a trailing slash.
    pub public_url: String,
    /// Mailbox of the `mailto:` unsubscribe link, if one is offered.
    pub unsubscribe_mailbox: Option<String>,
    /// Domain of VERP bounce addresses, if messages carry them.
    pub bounce_domain: Option<String>,
    /// Wakes the expander when a campaign starts sending.
    pub expander: std::sync::Arc<tokio::sync::Notify>,
    /// Days after a campaign started sending that its tracking tokens record opens and clicks
    /// (after: the pixel and the redirects still answer, nothing is recorded).
    pub tracking_days: u32,
    /// Requests per second each API key may make (`None`: unlimited).
    pub key_limiter: Option<std::sync::Arc<KeyLimiter>>,
    /// Test-send recipients per tenant per clock hour (0: unlimited).
    pub test_sends_per_hour: u32,
}

/// Per-API-key request limiter, keyed by the key's id.
pub type KeyLimiter = governor::DefaultKeyedRateLimiter<i64>;

/// A limiter of `per_second` requests per key (bursts of up to one second's worth); `None` for
/// 0 (unlimited).
pub fn key_limiter(per_second: u32) -> Option<std::sync::Arc<KeyLimiter>> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    Some(std::sync::Arc::new(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate),
    )))
}
