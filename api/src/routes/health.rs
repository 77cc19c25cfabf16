//! `/healthz` (the process answers) and `/readyz` (PostgreSQL and Redis answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503)))]
async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, &'static str), ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.db)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let mut con = state.redis.clone();
    let _: String = redis::cmd("PING").query_async(&mut con).await?;
    Ok((StatusCode::OK, "ready\n"))
}
