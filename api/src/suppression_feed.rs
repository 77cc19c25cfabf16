//! Publishing suppressions to the engines: every path that suppresses or releases an address
//! (one-click unsubscribe, bounces and complaints, the recorder's hard bounces, the
//! suppression routes and import) writes the change to PostgreSQL, the record, and then to the
//! `hk:suppressed` feed ([`hikyaku_queue_schema::suppressed`]), which engines check just before
//! sending — so jobs expanded before the suppression are not sent either.
//!
//! The feed is written after the record commits: a change the feed misses (Redis down at that
//! moment) is logged and still honoured by every later expansion.

use hikyaku_queue_schema::suppressed::{publish as write_feed, Change};

use crate::state::AppState;

/// Publishes `changes` — `(tenant, address, suppressed)` — to the feed; failures are logged.
pub async fn publish(state: &AppState, changes: &[(i64, &str, bool)]) {
    if changes.is_empty() {
        return;
    }
    let tenants: Vec<String> = changes.iter().map(|c| c.0.to_string()).collect();
    let feed: Vec<Change<'_>> = changes
        .iter()
        .zip(&tenants)
        .map(|(&(_, address, suppressed), tenant)| Change {
            tenant,
            address,
            suppressed,
        })
        .collect();
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let mut con = state.redis.clone();
    if let Err(e) = write_feed(&mut con, now_ms, &feed).await {
        tracing::warn!(error = %e, changes = changes.len(), "suppression feed not written; engines may still send jobs already queued");
    }
}
