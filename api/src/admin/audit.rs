//! The audit trail: one `audit_events` row per admin command — who ran it, what (command and
//! arguments; secrets are never arguments: keys are shown once and not taken on the command
//! line), and how it ended.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::AdminError;

/// Who is acting: the invoking user behind `sudo`, else the login user.
pub fn actor() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Writes one audit event.
pub async fn record(
    db: &PgPool,
    actor: &str,
    command: &str,
    args: &serde_json::Value,
    result: Result<(), &str>,
) -> Result<(), AdminError> {
    let (outcome, detail) = match result {
        Ok(()) => ("ok", ""),
        Err(e) => ("error", e),
    };
    sqlx::query(
        "INSERT INTO audit_events (actor, command, args, outcome, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(command)
    .bind(args)
    .bind(outcome)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(())
}

/// An audit event.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AuditRow {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// Which command (`site pause`, …).
    pub command: String,
    /// Its arguments.
    pub args: serde_json::Value,
    /// `ok` or `error`.
    pub outcome: String,
    /// The error, if any.
    pub detail: String,
}

/// The latest `limit` events, newest first.
pub async fn list(db: &PgPool, limit: i64) -> Result<Vec<AuditRow>, AdminError> {
    Ok(sqlx::query_as(
        "SELECT at, actor, command, args, outcome, detail FROM audit_events ORDER BY id DESC LIMIT $1",
    )
    .bind(limit.clamp(1, 10_000))
    .fetch_all(db)
    .await?)
}
