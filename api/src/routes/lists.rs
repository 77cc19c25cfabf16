//! `/v1/lists`: a tenant's mailing lists.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::json::{Json, Path};
use crate::state::AppState;

/// A list.
#[derive(Debug, Serialize, FromRow, utoipa::ToSchema)]
pub struct List {
    /// Id.
    pub id: i64,
    /// Name, unique within the tenant.
    pub name: String,
    /// Subscribers in the list (any status).
    pub subscribers: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Body of create and update.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// Name, 1–200 characters, unique within the tenant.
    pub name: String,
}

fn check_name(name: &str) -> Result<&str, ApiError> {
    let n = name.trim();
    if n.is_empty()
        || n.chars().count() > 200
        || n.chars()
            .any(|c| c.is_control() || crate::text::is_invisible_format(c))
    {
        return Err(ApiError::invalid(
            "name",
            "must be 1–200 printable characters",
        ));
    }
    Ok(n)
}

/// `subscribers` is the count the triggers of migration 0010 keep (no scan of the list).
const SELECT: &str =
    "SELECT l.id, l.name, l.created_at, l.subscriber_count AS subscribers FROM lists l";

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/lists", get(list).post(create))
        .route("/v1/lists/{id}", get(show).patch(update).delete(remove))
}

/// Fetches a list of the tenant, or 404.
pub async fn owned(state: &AppState, tenant: Tenant, id: i64) -> Result<List, ApiError> {
    sqlx::query_as::<_, List>(&format!("{SELECT} WHERE l.id = $1 AND l.tenant_id = $2"))
        .bind(id)
        .bind(tenant.0)
        .fetch_optional(&state.db)
        .await?
        .ok_or(ApiError::NotFound("list"))
}

#[utoipa::path(post, path = "/v1/lists", request_body = ListInput, responses((status = 201, body = List), (status = 409, description = "a list of this name exists")), security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(input): Json<ListInput>,
) -> Result<(StatusCode, axum::Json<List>), ApiError> {
    let name = check_name(&input.name)?;
    let (id,): (i64,) =
        sqlx::query_as("INSERT INTO lists (tenant_id, name) VALUES ($1, $2) RETURNING id")
            .bind(tenant.0)
            .bind(name)
            .fetch_one(&state.db)
            .await
            .map_err(|e| match ApiError::from(e) {
                ApiError::Conflict { .. } => ApiError::Conflict {
                    field: Some("name".into()),
                    detail: format!("a list named {name:?} exists"),
                },
                other => other,
            })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(owned(&state, tenant, id).await?),
    ))
}

#[utoipa::path(get, path = "/v1/lists", responses((status = 200, body = [List])), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::Json<Vec<List>>, ApiError> {
    let rows = sqlx::query_as::<_, List>(&format!("{SELECT} WHERE l.tenant_id = $1 ORDER BY l.id"))
        .bind(tenant.0)
        .fetch_all(&state.db)
        .await?;
    Ok(axum::Json(rows))
}

#[utoipa::path(get, path = "/v1/lists/{id}", params(("id" = i64, Path)), responses((status = 200, body = List), (status = 404)), security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<axum::Json<List>, ApiError> {
    Ok(axum::Json(owned(&state, tenant, id).await?))
}

#[utoipa::path(patch, path = "/v1/lists/{id}", params(("id" = i64, Path)), request_body = ListInput, responses((status = 200, body = List), (status = 404), (status = 409, description = "a list of this name exists")), security(("bearer" = [])))]
async fn update(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
    Json(input): Json<ListInput>,
) -> Result<axum::Json<List>, ApiError> {
    let name = check_name(&input.name)?;
    let done = sqlx::query("UPDATE lists SET name = $3 WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant.0)
        .bind(name)
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("list"));
    }
    Ok(axum::Json(owned(&state, tenant, id).await?))
}

#[utoipa::path(delete, path = "/v1/lists/{id}", params(("id" = i64, Path)), responses((status = 204), (status = 404), (status = 409)), security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let done = sqlx::query("DELETE FROM lists WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant.0)
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("list"));
    }
    Ok(StatusCode::NO_CONTENT)
}
