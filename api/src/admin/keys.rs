//! API keys: create, list, revoke.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{AdminError, CreatedTenant};
use crate::keys;
use crate::scope::Scope;

/// Adds an API key with `scopes` (at least one) to a tenant.
pub async fn create_key(
    db: &PgPool,
    tenant_id: i64,
    scopes: &[Scope],
) -> Result<CreatedTenant, AdminError> {
    super::tenants::check_exists(db, tenant_id).await?;
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(AdminError::Invalid(
            "a key needs at least one scope (read, send, admin)".into(),
        ));
    }
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let key = keys::generate()?;
    sqlx::query(
        "INSERT INTO api_keys (tenant_id, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4)",
    )
    .bind(tenant_id)
    .bind(&key.prefix)
    .bind(&key.hash)
    .bind(&names)
    .execute(db)
    .await?;
    Ok(CreatedTenant {
        tenant_id,
        api_key: key.key,
        prefix: key.prefix,
        scopes: names.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// Revokes a key, given by its prefix or whole (`hk_<prefix>_<secret>`: revoked by its
/// prefix); effective for the next request. What was given is never echoed: an error names
/// the prefix alone, or nothing of a malformed key.
pub async fn revoke_key(db: &PgPool, given: &str) -> Result<(), AdminError> {
    let prefix = keys::prefix_of(given).ok_or_else(|| {
        AdminError::Invalid(
            "not a key: give its prefix (8 hex characters) or the whole key hk_<prefix>_<secret>"
                .into(),
        )
    })?;
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL",
    )
    .bind(prefix)
    .execute(db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(AdminError::NotFound(format!(
            "active key with prefix {prefix}"
        )));
    }
    Ok(())
}

/// An API key as operators see it (never the secret).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct KeyRow {
    /// Visible prefix.
    pub prefix: String,
    /// Owner.
    pub tenant_id: i64,
    /// What it may do (`read`, `send`, `admin`).
    pub scopes: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Every key, or one tenant's, oldest first.
pub async fn list_keys(db: &PgPool, tenant: Option<i64>) -> Result<Vec<KeyRow>, AdminError> {
    Ok(sqlx::query_as(
        "SELECT prefix, tenant_id, scopes, created_at, revoked_at FROM api_keys \
         WHERE $1::bigint IS NULL OR tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(db)
    .await?)
}
