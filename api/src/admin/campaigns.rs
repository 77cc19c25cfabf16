//! Campaigns as operators see them: every tenant's, with progress; pause, resume, cancel.

use chrono::{DateTime, Utc};

use super::{AdminError, Ctx};
use crate::auth::Tenant;
use crate::routes::campaigns::{run_action, Campaign, RunAction};

/// A campaign with its progress.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct CampaignRow {
    /// Id.
    pub id: i64,
    /// Owner.
    pub tenant_id: i64,
    /// Name.
    pub name: String,
    /// `draft`, `scheduled`, `sending`, `paused`, `completed`, `cancelled`.
    pub status: String,
    /// Jobs enqueued so far.
    pub expanded: i64,
    /// Jobs with an end state.
    pub finished: i64,
    /// Of those, delivered.
    pub delivered: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Campaigns, newest first, optionally one tenant's and/or in one status.
pub async fn list(
    ctx: &Ctx,
    tenant: Option<i64>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<CampaignRow>, AdminError> {
    const STATUSES: [&str; 6] = [
        "draft",
        "scheduled",
        "sending",
        "paused",
        "completed",
        "cancelled",
    ];
    if let Some(s) = status {
        if !STATUSES.contains(&s) {
            return Err(AdminError::Invalid(format!(
                "--status {s:?}: one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    Ok(sqlx::query_as(
        "SELECT c.id, c.tenant_id, c.name, c.status, c.expanded, \
                COALESCE(sum(n.n), 0)::bigint AS finished, \
                COALESCE(sum(n.n) FILTER (WHERE n.status = 'delivered'), 0)::bigint AS delivered, \
                c.created_at \
         FROM campaigns c LEFT JOIN campaign_counters n ON n.campaign_id = c.id \
         WHERE ($1::bigint IS NULL OR c.tenant_id = $1) AND ($2::text IS NULL OR c.status = $2) \
         GROUP BY c.id ORDER BY c.id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(status)
    .bind(limit.clamp(1, 100_000))
    .fetch_all(&ctx.db)
    .await?)
}

/// The owner of campaign `id`.
pub async fn owner(ctx: &Ctx, id: i64) -> Result<i64, AdminError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT tenant_id FROM campaigns WHERE id = $1")
        .bind(id)
        .fetch_optional(&ctx.db)
        .await?;
    row.map(|r| r.0)
        .ok_or_else(|| AdminError::NotFound(format!("campaign {id}")))
}

/// Pauses, resumes or cancels campaign `id` as its owner would through the API.
pub async fn act(ctx: &Ctx, id: i64, action: RunAction) -> Result<Campaign, AdminError> {
    let tenant = owner(ctx, id).await?;
    let state = ctx.state().await?;
    Ok(run_action(state, Tenant(tenant), id, action).await?)
}
