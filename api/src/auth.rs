//! Bearer API key → tenant. Every resource is scoped to the key's tenant.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::keys;
use crate::state::AppState;

/// The tenant the request acts for.
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub i64);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let key = value
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|k| k.starts_with("hk_") && k.len() < 200)
            .ok_or(ApiError::Unauthorized)?;
        // The lookup is by hash: comparing digests in the index leaks nothing about the key.
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT id, tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(keys::hash(key))
        .fetch_optional(&state.db)
        .await?;
        let (key_id, tenant) = row.ok_or(ApiError::Unauthorized)?;
        if let Some(limiter) = &state.key_limiter {
            if let Err(not_until) = limiter.check_key(&key_id) {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(limiter.clock().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(ApiError::TooManyRequests(secs.max(1)));
            }
        }
        Ok(Tenant(tenant))
    }
}
