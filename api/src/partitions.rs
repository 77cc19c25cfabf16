//! Day partitions of `delivery_events` (migration 0008): the API creates the partitions of the
//! coming days ahead of time — at start and every hour, [`AHEAD_DAYS`] ahead — and the retention
//! purge drops the partitions of whole days past the cut ([`droppable`]) instead of deleting their
//! rows. Days are UTC days; a partition is `delivery_events_pYYYYMMDD`. An event outside every
//! partition (a clock far off, a day nobody created) lands in `delivery_events_default`, so the
//! recorder never fails for want of a partition; the purge deletes such rows one by one.
//!
//! Hand-written rather than pg_partman: that extension is not in Debian's PostgreSQL packages the
//! scripts install, and the whole job here is two statements.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::PgPool;

/// The partitioned table.
pub const PARENT: &str = "delivery_events";
/// Days of partitions kept ready ahead of today.
pub const AHEAD_DAYS: u64 = 7;
/// Name prefix of day partitions.
const PREFIX: &str = "delivery_events_p";

/// The partition of `day`.
pub fn name(day: NaiveDate) -> String {
    format!("{PREFIX}{}", day.format("%Y%m%d"))
}

/// The day a partition name stands for (`None` for the default partition or a foreign table).
pub fn day_of(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix(PREFIX)?, "%Y%m%d").ok()
}

/// Creates the missing partitions of the `days` days from `from`; returns how many it created.
/// Serialized by an advisory lock, so several API nodes may call it at once. A day whose rows
/// already sit in the default partition cannot get its own (PostgreSQL refuses); it is logged
/// and skipped: those rows stay where they are.
pub async fn ensure(db: &PgPool, from: NaiveDate, days: u64) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('hikyaku: event partitions'))")
        .execute(&mut *tx)
        .await?;
    let mut created = 0;
    for i in 0..days {
        let Some(day) = from.checked_add_days(Days::new(i)) else {
            break;
        };
        let part = name(day);
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(&part)
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            continue;
        }
        let next = day.succ_opt().unwrap_or(day);
        // Names and bounds come from dates, never from input.
        let sql = format!(
            "CREATE TABLE {part} PARTITION OF {PARENT} FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')"
        );
        sqlx::query("SAVEPOINT part").execute(&mut *tx).await?;
        match sqlx::query(&sql).execute(&mut *tx).await {
            Ok(_) => created += 1,
            Err(e) => {
                tracing::warn!(partition = %part, error = %e, "cannot create the day's partition; its events stay in the default partition");
                sqlx::query("ROLLBACK TO SAVEPOINT part")
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(created)
}

/// Day partitions whose whole day is before `before`, oldest first.
pub async fn droppable(db: &PgPool, before: DateTime<Utc>) -> Result<Vec<String>, sqlx::Error> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(PARENT)
    .fetch_all(db)
    .await?;
    let cut = before.date_naive();
    Ok(names
        .into_iter()
        .map(|(n,)| n)
        // A day ends at the next midnight: droppable when that is at or before the cut.
        .filter(|n| {
            day_of(n)
                .and_then(|d| d.succ_opt())
                .is_some_and(|end| end <= cut)
        })
        .collect())
}

/// Keeps today's and the next [`AHEAD_DAYS`] days' partitions ready, every hour, until `stop`.
pub async fn maintain(db: PgPool, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let today = Utc::now().date_naive();
        let from = today.pred_opt().unwrap_or(today);
        match ensure(&db, from, AHEAD_DAYS + 2).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(created = n, "event partitions created ahead"),
            Err(e) => {
                tracing::warn!(error = %e, "creating event partitions failed; retrying in an hour")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 21).expect("date");
        assert_eq!(name(d), "delivery_events_p20261121");
        assert_eq!(day_of(&name(d)), Some(d));
        assert_eq!(day_of("delivery_events_default"), None);
    }
}
