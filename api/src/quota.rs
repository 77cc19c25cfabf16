//! Each tenant's sending quota: messages per calendar month (UTC), `tenants.monthly_quota`
//! (none: no limit), set by operators (`hikyaku tenant quota`).
//!
//! What counts: every job the expander enqueues and every test-send recipient, counted in
//! `tenant_usage` in the same transaction that records the work. Where it is enforced:
//! - `send` and `schedule` refuse (403 `quota-exceeded`, nothing changes) when the list's
//!   active subscribers would not fit in what is left this month — an early, clear answer;
//! - the expander, page by page, is the real wall: a page that would pass the quota is not
//!   enqueued and the campaign is paused; resuming it (next month, or after the quota is
//!   raised) carries on where it stopped. Pages are whole (up to 10,000 recipients): a
//!   campaign paused with less than its next page left stays paused until the month turns or
//!   the quota is raised, rather than sending part of a page. Two expanders of one tenant running at the same
//!   moment may each fit a page in what is left: the quota can be passed by at most one page
//!   per concurrent expander (documented bound, not a leak).

use crate::error::ApiError;

/// A tenant's quota and this month's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Usage {
    /// Messages per month; `None`: no limit.
    pub quota: Option<i64>,
    /// Messages counted this month.
    pub used: i64,
    /// Subscribers each of the tenant's lists may hold (migration 0010's triggers hold it).
    pub max_list_size: i64,
}

impl Usage {
    /// Whether `more` messages fit in what is left.
    pub fn fits(&self, more: i64) -> bool {
        self.quota
            .is_none_or(|q| self.used.saturating_add(more) <= q)
    }
}

/// The tenant's quota and this month's use (`None` if there is no such tenant).
pub async fn usage<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    tenant: i64,
) -> Result<Option<Usage>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.monthly_quota AS quota, COALESCE(u.messages, 0) AS used, t.max_list_size \
         FROM tenants t \
         LEFT JOIN tenant_usage u ON u.tenant_id = t.id \
              AND u.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date \
         WHERE t.id = $1",
    )
    .bind(tenant)
    .fetch_optional(db)
    .await
}

/// Refuses with [`ApiError::QuotaExceeded`] unless `more` messages fit in the tenant's quota
/// this month; `what` says what would send them.
pub async fn check<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    tenant: i64,
    more: i64,
    what: &str,
) -> Result<(), ApiError> {
    let Some(u) = usage(db, tenant).await? else {
        return Ok(());
    };
    if u.fits(more) {
        return Ok(());
    }
    Err(ApiError::QuotaExceeded(format!(
        "{what} would send {more} messages; the monthly sending quota is {} and {} are used this month (the quota resets on the 1st, UTC)",
        u.quota.unwrap_or_default(),
        u.used
    )))
}

/// Counts `n` messages against the tenant's month, in the caller's transaction.
pub async fn count<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    tenant: i64,
    n: i64,
) -> Result<(), sqlx::Error> {
    if n == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tenant_usage (tenant_id, month, messages) \
         VALUES ($1, date_trunc('month', now() AT TIME ZONE 'UTC')::date, $2) \
         ON CONFLICT (tenant_id, month) DO UPDATE SET messages = tenant_usage.messages + $2",
    )
    .bind(tenant)
    .bind(n)
    .execute(db)
    .await?;
    Ok(())
}

/// Active subscribers of `list` not suppressed for its tenant: what sending to it now would
/// enqueue.
pub async fn list_size<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    tenant: i64,
    list: i64,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM subscribers s WHERE s.list_id = $1 AND s.status = 'active' \
         AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.tenant_id = $2 AND x.email_lower = s.email_lower)",
    )
    .bind(list)
    .bind(tenant)
    .fetch_one(db)
    .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_within_the_quota_or_without_one() {
        let u = Usage {
            quota: Some(100),
            used: 90,
            max_list_size: 1,
        };
        assert!(u.fits(10));
        assert!(!u.fits(11));
        assert!(Usage {
            quota: None,
            used: i64::MAX,
            max_list_size: 1,
        }
        .fits(i64::MAX));
        assert!(!Usage {
            quota: Some(0),
            used: 0,
            max_list_size: 1,
        }
        .fits(1));
    }
}
