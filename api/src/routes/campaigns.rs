//! `/v1/campaigns`: create, read, send, and live stats.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::lists::owned;
use crate::address;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::expansion;
use crate::json::Json;
use crate::state::AppState;

/// A campaign.
#[derive(Debug, Serialize, FromRow, utoipa::ToSchema)]
pub struct Campaign {
    /// Id.
    pub id: i64,
    /// The list it goes to.
    pub list_id: i64,
    /// Internal name.
    pub name: String,
    /// Sender display name.
    pub from_name: String,
    /// Sender address (header From and envelope sender).
    pub from_addr: String,
    /// Reply-To, or empty.
    pub reply_to: String,
    /// Subject; may hold `{{field}}` merge placeholders.
    pub subject: String,
    /// Plain-text body with merge placeholders.
    pub text_body: String,
    /// HTML body, or empty.
    pub html_body: String,
    /// `draft`, `scheduled`, `sending`, `paused`, `completed`, `cancelled`.
    pub status: String,
    /// Lane: 0 bulk, higher first.
    pub priority: i16,
    /// After this, undelivered jobs expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// Recipients enqueued so far.
    pub expanded: i64,
    /// Recipients skipped (suppressed, unsubscribed, bounced).
    pub skipped: i64,
    /// Whether expansion finished.
    pub expansion_done: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Body of create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// Internal name.
    pub name: String,
    /// The list to send to (one of the tenant's).
    pub list_id: i64,
    /// Sender display name.
    #[serde(default)]
    pub from_name: String,
    /// Sender address.
    pub from_addr: String,
    /// Reply-To address.
    #[serde(default)]
    pub reply_to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub text_body: String,
    /// HTML body.
    #[serde(default)]
    pub html_body: String,
    /// Lane (0–9), default 0.
    #[serde(default)]
    pub priority: i16,
    /// Expiry of undelivered jobs.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Live counts of a campaign.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Campaign status.
    pub status: String,
    /// Recipients enqueued.
    pub expanded: i64,
    /// Recipients skipped at expansion.
    pub skipped: i64,
    /// Whether expansion finished.
    pub expansion_done: bool,
    /// Jobs finished, by end state (`delivered`, `bounced`, `expired`).
    pub by_status: BTreeMap<String, i64>,
    /// Jobs finished, by destination site and end state.
    pub by_site: BTreeMap<String, BTreeMap<String, i64>>,
}

const COLUMNS: &str =
    "id, list_id, name, from_name, from_addr, reply_to, subject, text_body, html_body, \
     status, priority, expires_at, expanded, skipped, expansion_done, created_at";

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/campaigns", get(list).post(create))
        .route("/v1/campaigns/{id}", get(show))
        .route("/v1/campaigns/{id}/send", post(send))
        .route("/v1/campaigns/{id}/stats", get(stats))
}

async fn fetch(state: &AppState, tenant: Tenant, id: i64) -> Result<Campaign, ApiError> {
    sqlx::query_as::<_, Campaign>(&format!(
        "SELECT {COLUMNS} FROM campaigns WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(id)
    .bind(tenant.0)
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound("campaign"))
}

fn check_text(field: &str, v: &str, max: usize, single_line: bool) -> Result<(), ApiError> {
    if v.len() > max {
        return Err(ApiError::invalid(field, format!("longer than {max} bytes")));
    }
    if v.contains('\0') || (single_line && v.contains(['\r', '\n'])) {
        return Err(ApiError::invalid(field, "contains CR, LF or NUL"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/campaigns", request_body = NewCampaign, responses((status = 201, body = Campaign), (status = 422)), security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(c): Json<NewCampaign>,
) -> Result<(StatusCode, axum::Json<Campaign>), ApiError> {
    if c.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    check_text("name", &c.name, 200, true)?;
    check_text("from_name", &c.from_name, 200, true)?;
    check_text("subject", &c.subject, 998, true)?;
    if c.subject.trim().is_empty() {
        return Err(ApiError::invalid("subject", "must not be empty"));
    }
    check_text("text_body", &c.text_body, 1 << 20, false)?;
    check_text("html_body", &c.html_body, 1 << 20, false)?;
    if c.text_body.split('\n').any(|l| l.len() > 998)
        || c.html_body.split('\n').any(|l| l.len() > 998)
    {
        return Err(ApiError::invalid(
            "text_body",
            "lines must be at most 998 bytes",
        ));
    }
    let (from_addr, _) = address::normalize("from_addr", &c.from_addr)?;
    let reply_to = if c.reply_to.trim().is_empty() {
        String::new()
    } else {
        address::normalize("reply_to", &c.reply_to)?.0
    };
    if !(0..=9).contains(&c.priority) {
        return Err(ApiError::invalid("priority", "must be within 0..=9"));
    }
    owned(&state, tenant, c.list_id)
        .await
        .map_err(|_| ApiError::invalid("list_id", "no such list"))?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO campaigns (tenant_id, list_id, name, from_name, from_addr, reply_to, subject, \
         text_body, html_body, priority, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) RETURNING id",
    )
    .bind(tenant.0)
    .bind(c.list_id)
    .bind(c.name.trim())
    .bind(&c.from_name)
    .bind(&from_addr)
    .bind(&reply_to)
    .bind(&c.subject)
    .bind(&c.text_body)
    .bind(&c.html_body)
    .bind(c.priority)
    .bind(c.expires_at)
    .fetch_one(&state.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(fetch(&state, tenant, id).await?),
    ))
}

#[utoipa::path(get, path = "/v1/campaigns", responses((status = 200, body = [Campaign])), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::Json<Vec<Campaign>>, ApiError> {
    let rows = sqlx::query_as::<_, Campaign>(&format!(
        "SELECT {COLUMNS} FROM campaigns WHERE tenant_id = $1 ORDER BY id"
    ))
    .bind(tenant.0)
    .fetch_all(&state.db)
    .await?;
    Ok(axum::Json(rows))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", params(("id" = i64, Path)), responses((status = 200, body = Campaign), (status = 404)), security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<axum::Json<Campaign>, ApiError> {
    Ok(axum::Json(fetch(&state, tenant, id).await?))
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/send", params(("id" = i64, Path)), responses((status = 202, body = Campaign), (status = 404), (status = 409)), security(("bearer" = [])))]
async fn send(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<(StatusCode, axum::Json<Campaign>), ApiError> {
    let campaign = fetch(&state, tenant, id).await?;
    if !matches!(campaign.status.as_str(), "draft" | "scheduled") {
        return Err(ApiError::Conflict {
            field: Some("status".into()),
            detail: format!(
                "campaign is {}; only a draft or scheduled campaign can be sent",
                campaign.status
            ),
        });
    }
    // Freeze first: the snapshot is in Redis before any job can reference it.
    expansion::freeze(&state, tenant.0, &campaign).await?;
    let done = sqlx::query(
        "UPDATE campaigns SET status = 'sending', updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND status IN ('draft', 'scheduled')",
    )
    .bind(id)
    .bind(tenant.0)
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::Conflict {
            field: Some("status".into()),
            detail: "campaign changed status meanwhile".into(),
        });
    }
    state.expander.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(fetch(&state, tenant, id).await?),
    ))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}/stats", params(("id" = i64, Path)), responses((status = 200, body = Stats), (status = 404)), security(("bearer" = [])))]
async fn stats(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<axum::Json<Stats>, ApiError> {
    let c = fetch(&state, tenant, id).await?;
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT status, site, n FROM campaign_counters WHERE campaign_id = $1")
            .bind(id)
            .fetch_all(&state.db)
            .await?;
    let mut by_status = BTreeMap::new();
    let mut by_site: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (status, site, n) in rows {
        *by_status.entry(status.clone()).or_insert(0) += n;
        *by_site.entry(site).or_default().entry(status).or_insert(0) += n;
    }
    Ok(axum::Json(Stats {
        status: c.status,
        expanded: c.expanded,
        skipped: c.skipped,
        expansion_done: c.expansion_done,
        by_status,
        by_site,
    }))
}
