//! `/v1/lists/{id}/subscribers`: one subscriber at a time (bulk import is in [`super::import`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::lists::owned;
use crate::address;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::json::{Json, Path, Query};
use crate::state::AppState;

/// A subscriber.
#[derive(Debug, Serialize, FromRow, utoipa::ToSchema)]
pub struct Subscriber {
    /// Id (also the job sequence number in a campaign).
    pub id: i64,
    /// Address.
    pub email: String,
    /// Merge-field values.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// `active`, `unsubscribed`, `bounced` or `complained`.
    pub status: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Body of create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscriber {
    /// Address; unique in the list, case-insensitively.
    pub email: String,
    /// Merge-field values (a JSON object of strings, numbers or booleans).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Option<serde_json::Value>,
}

/// Body of update; absent fields are unchanged.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberUpdate {
    /// Replaces the attributes.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Option<serde_json::Value>,
    /// New status.
    #[serde(default)]
    pub status: Option<String>,
}

/// Cursor pagination.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Return subscribers with an id above this.
    #[serde(default)]
    pub after: i64,
    /// At most this many (1–1000, default 100).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Checks that attributes are a flat object of scalars without control characters or
/// invisible formatting ([`crate::text::is_invisible_format`]): merge values may land in
/// headers (the subject, the sender's name).
pub fn check_attributes(v: &serde_json::Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("must be a JSON object")?;
    if obj.len() > 100 {
        return Err("at most 100 attributes".into());
    }
    for (k, val) in obj {
        if k.is_empty() || k.len() > 64 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!("attribute name {k:?} must be 1–64 of [A-Za-z0-9_]"));
        }
        match val {
            serde_json::Value::String(s)
                if s.len() > 2000 || s.chars().any(|c| c.is_control() && c != '\t') =>
            {
                return Err(format!(
                    "attribute {k:?}: at most 2000 bytes, no control characters (CR, LF, NUL, …) but tab"
                ))
            }
            serde_json::Value::String(s) if crate::text::invisible_format_in(s).is_some() => {
                return Err(format!(
                    "attribute {k:?}: contains the invisible formatting character {}",
                    crate::text::invisible_format_in(s).unwrap_or_default()
                ))
            }
            serde_json::Value::String(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Bool(_)
            | serde_json::Value::Null => {}
            _ => {
                return Err(format!(
                    "attribute {k:?} must be a string, number or boolean"
                ))
            }
        }
    }
    Ok(())
}

const STATUSES: [&str; 4] = ["active", "unsubscribed", "bounced", "complained"];
const COLUMNS: &str = "id, email, attributes, status, created_at, updated_at";

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/lists/{id}/subscribers", get(page).post(create))
        .route(
            "/v1/lists/{id}/subscribers/{sid}",
            get(show).patch(update).delete(remove),
        )
}

async fn fetch(state: &AppState, list: i64, sid: i64) -> Result<Subscriber, ApiError> {
    sqlx::query_as::<_, Subscriber>(&format!(
        "SELECT {COLUMNS} FROM subscribers WHERE id = $1 AND list_id = $2"
    ))
    .bind(sid)
    .bind(list)
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound("subscriber"))
}

#[utoipa::path(post, path = "/v1/lists/{id}/subscribers", params(("id" = i64, Path)), request_body = NewSubscriber, responses((status = 201, body = Subscriber), (status = 409, description = "the address is on the list already, or the list is full (`list-full`)"), (status = 422)), security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(list): Path<i64>,
    Json(input): Json<NewSubscriber>,
) -> Result<(StatusCode, axum::Json<Subscriber>), ApiError> {
    owned(&state, tenant, list).await?;
    let (email, lower) = address::normalize("email", &input.email)?;
    let attributes = input.attributes.unwrap_or_else(|| serde_json::json!({}));
    check_attributes(&attributes).map_err(|e| ApiError::invalid("attributes", e))?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO subscribers (list_id, tenant_id, email, email_lower, attributes) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(list)
    .bind(tenant.0)
    .bind(&email)
    .bind(&lower)
    .bind(&attributes)
    .fetch_one(&state.db)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::Conflict {
            field: Some("email".into()),
            detail: format!("{email} is already in the list"),
        },
        other => other,
    })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(fetch(&state, list, id).await?),
    ))
}

#[utoipa::path(get, path = "/v1/lists/{id}/subscribers", params(("id" = i64, Path), Page), responses((status = 200, body = [Subscriber])), security(("bearer" = [])))]
async fn page(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(list): Path<i64>,
    Query(p): Query<Page>,
) -> Result<axum::Json<Vec<Subscriber>>, ApiError> {
    owned(&state, tenant, list).await?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be within 1..=1000"));
    }
    let rows = sqlx::query_as::<_, Subscriber>(&format!(
        "SELECT {COLUMNS} FROM subscribers WHERE list_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(list)
    .bind(p.after)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    Ok(axum::Json(rows))
}

#[utoipa::path(get, path = "/v1/lists/{id}/subscribers/{sid}", params(("id" = i64, Path), ("sid" = i64, Path)), responses((status = 200, body = Subscriber), (status = 404)), security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    tenant: Tenant,
    Path((list, sid)): Path<(i64, i64)>,
) -> Result<axum::Json<Subscriber>, ApiError> {
    owned(&state, tenant, list).await?;
    Ok(axum::Json(fetch(&state, list, sid).await?))
}

#[utoipa::path(patch, path = "/v1/lists/{id}/subscribers/{sid}", params(("id" = i64, Path), ("sid" = i64, Path)), request_body = SubscriberUpdate, responses((status = 200, body = Subscriber), (status = 404), (status = 422)), security(("bearer" = [])))]
async fn update(
    State(state): State<AppState>,
    tenant: Tenant,
    Path((list, sid)): Path<(i64, i64)>,
    Json(input): Json<SubscriberUpdate>,
) -> Result<axum::Json<Subscriber>, ApiError> {
    owned(&state, tenant, list).await?;
    if let Some(a) = &input.attributes {
        check_attributes(a).map_err(|e| ApiError::invalid("attributes", e))?;
    }
    if let Some(s) = &input.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "status",
                format!("must be one of {STATUSES:?}"),
            ));
        }
    }
    let done = sqlx::query(
        "UPDATE subscribers SET attributes = COALESCE($3, attributes), status = COALESCE($4, status), \
         updated_at = now() WHERE id = $1 AND list_id = $2",
    )
    .bind(sid)
    .bind(list)
    .bind(&input.attributes)
    .bind(&input.status)
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("subscriber"));
    }
    Ok(axum::Json(fetch(&state, list, sid).await?))
}

#[utoipa::path(delete, path = "/v1/lists/{id}/subscribers/{sid}", params(("id" = i64, Path), ("sid" = i64, Path)), responses((status = 204), (status = 404)), security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    tenant: Tenant,
    Path((list, sid)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    owned(&state, tenant, list).await?;
    let done = sqlx::query("DELETE FROM subscribers WHERE id = $1 AND list_id = $2")
        .bind(sid)
        .bind(list)
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("subscriber"));
    }
    Ok(StatusCode::NO_CONTENT)
}
