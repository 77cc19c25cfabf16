//! Tenant and API-key administration, shared by the `hikyaku` CLI and tests.

use sqlx::PgPool;

use crate::keys;

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database refused.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(#[from] std::io::Error),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such thing.
    #[error("{0} not found")]
    NotFound(String),
}

/// A tenant with its first key (shown once).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedTenant {
    /// Tenant id.
    pub tenant_id: i64,
    /// The API key.
    pub api_key: String,
    /// Its visible prefix.
    pub prefix: String,
}

/// Creates a tenant and its first API key.
pub async fn create_tenant(db: &PgPool, name: &str) -> Result<CreatedTenant, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "tenant name must be 1–200 printable characters".into(),
        ));
    }
    let mut tx = db.begin().await?;
    let (tenant_id,): (i64,) =
        sqlx::query_as("INSERT INTO tenants (name) VALUES ($1) RETURNING id")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    let key = keys::generate()?;
    sqlx::query("INSERT INTO api_keys (tenant_id, prefix, key_hash) VALUES ($1, $2, $3)")
        .bind(tenant_id)
        .bind(&key.prefix)
        .bind(&key.hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(CreatedTenant {
        tenant_id,
        api_key: key.key,
        prefix: key.prefix,
    })
}

/// Adds an API key to a tenant.
pub async fn create_key(db: &PgPool, tenant_id: i64) -> Result<CreatedTenant, AdminError> {
    let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(db)
        .await?;
    if exists.is_none() {
        return Err(AdminError::NotFound(format!("tenant {tenant_id}")));
    }
    let key = keys::generate()?;
    sqlx::query("INSERT INTO api_keys (tenant_id, prefix, key_hash) VALUES ($1, $2, $3)")
        .bind(tenant_id)
        .bind(&key.prefix)
        .bind(&key.hash)
        .execute(db)
        .await?;
    Ok(CreatedTenant {
        tenant_id,
        api_key: key.key,
        prefix: key.prefix,
    })
}

/// Revokes the key with `prefix`; effective for the next request.
pub async fn revoke_key(db: &PgPool, prefix: &str) -> Result<(), AdminError> {
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
