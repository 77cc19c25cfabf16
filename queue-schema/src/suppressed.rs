//! The suppression feed: `hk:suppressed`, a stream of addresses suppressed (or released) for a
//! tenant, so engines can skip a job whose address was suppressed after its campaign was
//! expanded — the last check before sending.
//!
//! Expansion already skips every address suppressed when its page was read; the feed only has
//! to cover what happens later, while jobs wait in queues and retry sets. Entries are kept for
//! [`RETENTION_MS`] (trimmed by `MINID` on every write), longer than any job lives: engines end
//! a job [`MAX_JOB_LIFE_MS`] after its first enqueue whatever its campaign or site says (the
//! shipped retry expiry is 24 hours). Engines read the feed from its start when they begin and
//! then follow it. Addresses are lower-cased with Unicode rules, as PostgreSQL's `lower`.

use redis::aio::ConnectionLike;

use crate::keys::Keys;

/// How long entries stay in the feed: 8 days.
pub const RETENTION_MS: u64 = 8 * 24 * 3600 * 1000;

/// The longest a job lives after its first enqueue: 7 days, a day inside the feed's retention.
pub const MAX_JOB_LIFE_MS: u64 = 7 * 24 * 3600 * 1000;

/// Field: the tenant id.
pub const TENANT_FIELD: &str = "t";
/// Field: the address, lower case.
pub const ADDRESS_FIELD: &str = "a";
/// Field: `add` or `del`.
pub const OP_FIELD: &str = "op";

/// One change of a tenant's suppression list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'a> {
    /// Tenant id, as snapshots carry it.
    pub tenant: &'a str,
    /// The address (lower-cased on write).
    pub address: &'a str,
    /// Suppressed (`true`) or released (`false`).
    pub suppressed: bool,
}

/// Appends `changes` to the feed in one pipeline, trimming entries older than the retention.
pub async fn publish<C: ConnectionLike>(
    con: &mut C,
    now_ms: u64,
    changes: &[Change<'_>],
) -> redis::RedisResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let min_id = now_ms.saturating_sub(RETENTION_MS);
    let mut pipe = redis::pipe();
    for c in changes {
        pipe.cmd("XADD")
            .arg(Keys::suppressed())
            .arg("MINID")
            .arg("~")
            .arg(min_id)
            .arg("*")
            .arg(TENANT_FIELD)
            .arg(c.tenant)
            .arg(ADDRESS_FIELD)
            .arg(c.address.to_lowercase())
            .arg(OP_FIELD)
            .arg(if c.suppressed { "add" } else { "del" })
            .ignore();
    }
    pipe.query_async(con).await
}
