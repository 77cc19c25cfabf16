//! `/v1/suppressions`: addresses the tenant never sends to (bounces, complaints, unsubscribes,
//! manual entries). Expansion skips them.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::address;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::json::Json;
use crate::state::AppState;

/// A suppressed address.
#[derive(Debug, Serialize, FromRow, utoipa::ToSchema)]
pub struct Suppression {
    /// Lower-cased address.
    pub email: String,
    /// Why (`bad-mailbox`, `complaint`, `unsubscribe`, `manual`, …).
    pub reason: String,
    /// Where it came from (`bounce`, `api`, `unsubscribe`, …).
    pub source: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Body of add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    /// The address.
    pub email: String,
    /// Why; default `manual`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Keyset pagination by address.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Return addresses after this one.
    #[serde(default)]
    pub after: Option<String>,
    /// At most this many (1–1000, default 100).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/suppressions", get(page).post(add))
        .route("/v1/suppressions/{email}", delete(remove))
}

#[utoipa::path(post, path = "/v1/suppressions", request_body = NewSuppression, responses((status = 201, body = Suppression), (status = 422)), security(("bearer" = [])))]
async fn add(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(input): Json<NewSuppression>,
) -> Result<(StatusCode, axum::Json<Suppression>), ApiError> {
    let (_, lower) = address::normalize("email", &input.email)?;
    let reason = input.reason.unwrap_or_else(|| "manual".into());
    if reason.is_empty() || reason.len() > 64 || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "reason",
            "must be 1–64 printable characters",
        ));
    }
    let row = sqlx::query_as::<_, Suppression>(
        "INSERT INTO suppressions (tenant_id, email_lower, reason, source) VALUES ($1, $2, $3, 'api') \
         ON CONFLICT (tenant_id, email_lower) DO UPDATE SET reason = EXCLUDED.reason \
         RETURNING email_lower AS email, reason, source, created_at",
    )
    .bind(tenant.0)
    .bind(&lower)
    .bind(&reason)
    .fetch_one(&state.db)
    .await?;
    Ok((StatusCode::CREATED, axum::Json(row)))
}

#[utoipa::path(get, path = "/v1/suppressions", params(Page), responses((status = 200, body = [Suppression])), security(("bearer" = [])))]
async fn page(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(p): Query<Page>,
) -> Result<axum::Json<Vec<Suppression>>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be within 1..=1000"));
    }
    let rows = sqlx::query_as::<_, Suppression>(
        "SELECT email_lower AS email, reason, source, created_at FROM suppressions \
         WHERE tenant_id = $1 AND email_lower > $2 ORDER BY email_lower LIMIT $3",
    )
    .bind(tenant.0)
    .bind(p.after.unwrap_or_default().to_lowercase())
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    Ok(axum::Json(rows))
}

#[utoipa::path(delete, path = "/v1/suppressions/{email}", params(("email" = String, Path)), responses((status = 204), (status = 404)), security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(email): Path<String>,
) -> Result<StatusCode, ApiError> {
    let done = sqlx::query("DELETE FROM suppressions WHERE tenant_id = $1 AND email_lower = $2")
        .bind(tenant.0)
        .bind(email.trim().to_lowercase())
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("suppression"));
    }
    Ok(StatusCode::NO_CONTENT)
}
