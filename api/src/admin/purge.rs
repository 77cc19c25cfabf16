//! Retention: `purge --older-than` deletes recorded events (deliveries, deferrals, reports
//! after delivery, opens and clicks) older than the cut, in batches so the record stays
//! writable meanwhile. Campaign counters and audit events are kept. `delivery_events`, the
//! big one, is partitioned by day: the partitions of whole days before the cut are dropped
//! (counted first), and only the rest — the day the cut falls in, the default partition — is
//! deleted row by row.

use chrono::{DateTime, Utc};

use super::{progress, AdminError, Ctx};

/// Tables of recorded events (purged by age, deleted with a retired tenant), each with a time
/// column `at` and a `campaign_id`.
pub const TABLES: [&str; 4] = [
    "delivery_events",
    "deferral_events",
    "feedback_events",
    "tracking_events",
];

/// Rows deleted per statement.
const BATCH: i64 = 10_000;

/// The longest retention accepted (keeps the cut a real date).
pub const MAX_RETENTION: chrono::Duration = chrono::Duration::days(36_525);

/// The shortest retention accepted: a day (a typo must not wipe today's record).
pub const MIN_RETENTION: chrono::Duration = chrono::Duration::days(1);

/// What a purge deleted (or, dry, would delete), per table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Purged {
    /// Cut: rows older than this.
    pub before: DateTime<Utc>,
    /// Whether nothing was deleted.
    pub dry_run: bool,
    /// Rows per table.
    pub tables: Vec<(String, u64)>,
}

/// Parses `30d`, `12h`, `90m`, `2w`.
pub fn parse_age(s: &str) -> Result<chrono::Duration, AdminError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| {
        AdminError::Invalid(format!(
            "{s:?}: expected a number and a unit (30d, 12h, 2w)"
        ))
    })?;
    let d = match unit {
        "w" => chrono::Duration::try_weeks(n),
        "d" => chrono::Duration::try_days(n),
        "h" => chrono::Duration::try_hours(n),
        "m" => chrono::Duration::try_minutes(n),
        _ => {
            return Err(AdminError::Invalid(format!(
                "{s:?}: unit must be w, d, h or m"
            )))
        }
    }
    .filter(|d| *d <= MAX_RETENTION)
    .ok_or_else(|| AdminError::Invalid(format!("{s:?}: at most 100 years")))?;
    if d < MIN_RETENTION {
        return Err(AdminError::Invalid(format!(
            "{s:?}: at least 1d (events younger than a day are never purged)"
        )));
    }
    Ok(d)
}

/// Deletes events older than `age` (or counts them, `dry_run`).
pub async fn purge(ctx: &Ctx, age: chrono::Duration, dry_run: bool) -> Result<Purged, AdminError> {
    if !(MIN_RETENTION..=MAX_RETENTION).contains(&age) {
        return Err(AdminError::Invalid(
            "retention must be between 1d and 100 years".into(),
        ));
    }
    let before = Utc::now()
        .checked_sub_signed(age)
        .ok_or_else(|| AdminError::Invalid("retention reaches before the epoch".into()))?;
    let mut counts = Vec::new();
    for t in TABLES {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {t} WHERE at < $1"))
            .bind(before)
            .fetch_one(&ctx.db)
            .await?;
        counts.push((t, n.max(0) as u64));
    }
    if dry_run {
        return Ok(Purged {
            before,
            dry_run,
            tables: counts.into_iter().map(|(t, n)| (t.to_owned(), n)).collect(),
        });
    }
    let pb = progress::bar(Some(counts.iter().map(|c| c.1).sum()), "rows purged");
    let mut tables = Vec::new();
    for (t, _) in counts {
        let mut deleted = 0u64;
        if t == crate::partitions::PARENT {
            for part in crate::partitions::droppable(&ctx.db, before).await? {
                let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {part}"))
                    .fetch_one(&ctx.db)
                    .await?;
                sqlx::query(&format!("DROP TABLE {part}"))
                    .execute(&ctx.db)
                    .await?;
                tracing::info!(partition = %part, rows = n, "day partition dropped");
                deleted += n.max(0) as u64;
                pb.inc(n.max(0) as u64);
            }
        }
        loop {
            // (tableoid, ctid) names a row: a ctid alone repeats across partitions.
            let done = sqlx::query(&format!(
                "DELETE FROM {t} WHERE at < $1 AND (tableoid, ctid) IN \
                 (SELECT tableoid, ctid FROM {t} WHERE at < $1 LIMIT {BATCH})"
            ))
            .bind(before)
            .execute(&ctx.db)
            .await?;
            let n = done.rows_affected();
            deleted += n;
            pb.inc(n);
            if n == 0 {
                break;
            }
        }
        tables.push((t.to_owned(), deleted));
    }
    pb.finish_and_clear();
    Ok(Purged {
        before,
        dry_run,
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_short_ones_are_refused() {
        assert_eq!(parse_age("30d").ok(), Some(chrono::Duration::days(30)));
        assert_eq!(parse_age("2w").ok(), Some(chrono::Duration::weeks(2)));
        assert_eq!(parse_age("36h").ok(), Some(chrono::Duration::hours(36)));
        assert!(parse_age("12h").is_err());
        assert!(parse_age("30").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("5y").is_err());
        assert!(parse_age("99999999999999d").is_err());
        assert!(parse_age("100000000d").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }
}
