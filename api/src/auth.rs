//! Bearer API key → tenant. Every resource is scoped to the key's tenant, and every request
//! needs the scope [`crate::scope::required`] names for its route.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::header;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::keys;
use crate::scope::{self, Scope};
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
        let row: Option<(i64, i64, Vec<String>)> = sqlx::query_as(
            "SELECT id, tenant_id, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(keys::hash(key))
        .fetch_optional(&state.db)
        .await?;
        let (key_id, tenant, scopes) = row.ok_or(ApiError::Unauthorized)?;
        if let Some(limiter) = &state.key_limiter {
            if let Err(not_until) = limiter.check_key(&key_id) {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(limiter.clock().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(ApiError::TooManyRequests(secs.max(1)));
            }
        }
        // Handlers sit behind the router, which put the matched template here; a request that
        // somehow has none needs the widest scope.
        let need = parts
            .extensions
            .get::<MatchedPath>()
            .map_or(Scope::Admin, |p| scope::required(&parts.method, p.as_str()));
        if !scopes.iter().any(|s| s == need.as_str()) {
            return Err(ApiError::Forbidden(need.as_str()));
        }
        Ok(Tenant(tenant))
    }
}
