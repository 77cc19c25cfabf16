//! Tenants: create, list, retire (stop, export, delete).

use sqlx::PgPool;

use super::AdminError;
use crate::keys;
use crate::scope::Scope;

/// A tenant with its first key (shown once).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreatedTenant {
    /// Tenant id.
    pub tenant_id: i64,
    /// The API key.
    pub api_key: String,
    /// Its visible prefix.
    pub prefix: String,
    /// Its scopes.
    pub scopes: Vec<String>,
}

/// Creates a tenant and its first API key (every scope).
pub async fn create_tenant(db: &PgPool, name: &str) -> Result<CreatedTenant, AdminError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > 200
        || name
            .chars()
            .any(|c| c.is_control() || crate::text::is_invisible_format(c))
    {
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
        scopes: Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
    })
}

/// Fails with `NotFound` unless tenant `id` exists.
pub async fn check_exists(db: &PgPool, id: i64) -> Result<(), AdminError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.map(|_| ())
        .ok_or_else(|| AdminError::NotFound(format!("tenant {id}")))
}

/// A tenant as operators see it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct TenantRow {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// API keys not revoked.
    pub active_keys: i64,
    /// Campaigns.
    pub campaigns: i64,
    /// Subscribers over all lists.
    pub subscribers: i64,
}

/// Every tenant, oldest first.
pub async fn list(db: &PgPool) -> Result<Vec<TenantRow>, AdminError> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.name, t.created_at, \
           (SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id AND k.revoked_at IS NULL) AS active_keys, \
           (SELECT count(*) FROM campaigns c WHERE c.tenant_id = t.id) AS campaigns, \
           (SELECT count(*) FROM subscribers s WHERE s.tenant_id = t.id) AS subscribers \
         FROM tenants t ORDER BY t.id",
    )
    .fetch_all(db)
    .await?)
}

/// A tenant's monthly sending quota, this month's use and its list size, after setting the
/// quota to `set`'s value when given (`Some(None)`: no limit) and the list size to
/// `list_size`'s. Both are checked before either changes. A list already larger than a lowered
/// list size keeps its subscribers and takes no more.
pub async fn quota(
    db: &PgPool,
    tenant: i64,
    set: Option<Option<i64>>,
    list_size: Option<i64>,
) -> Result<crate::quota::Usage, AdminError> {
    check_exists(db, tenant).await?;
    if set.is_some_and(|q| q.is_some_and(|n| n < 0)) {
        return Err(AdminError::Invalid(
            "--monthly must be 0 or more messages".into(),
        ));
    }
    if list_size.is_some_and(|n| n < 0) {
        return Err(AdminError::Invalid(
            "--list-size must be 0 or more subscribers".into(),
        ));
    }
    if let Some(q) = set {
        sqlx::query("UPDATE tenants SET monthly_quota = $2 WHERE id = $1")
            .bind(tenant)
            .bind(q)
            .execute(db)
            .await?;
    }
    if let Some(n) = list_size {
        sqlx::query("UPDATE tenants SET max_list_size = $2 WHERE id = $1")
            .bind(tenant)
            .bind(n)
            .execute(db)
            .await?;
    }
    crate::quota::usage(db, tenant)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("tenant {tenant}")))
}

/// What retiring a tenant did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Retired {
    /// Tenant id.
    pub tenant_id: i64,
    /// Keys revoked.
    pub keys_revoked: u64,
    /// Campaigns cancelled (their queued jobs end unsent).
    pub campaigns_cancelled: u64,
    /// Files written to the export directory.
    pub exported: Vec<String>,
    /// Rows deleted, by table (cascaded rows not counted).
    pub deleted: Vec<(String, u64)>,
}

/// Retires tenant `id`: stops it (keys revoked, campaigns cancelled, their deferred jobs made
/// due so engines end them now), exports its data to `dir` (created; must not exist or be
/// empty), then deletes everything it owns from the record and its campaign snapshots from
/// Redis. Each step finishes before the next starts; a failure stops there (re-running is safe).
pub async fn retire(
    ctx: &super::Ctx,
    id: i64,
    dir: &std::path::Path,
) -> Result<Retired, AdminError> {
    use crate::routes::campaigns::RunAction;
    check_exists(&ctx.db, id).await?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(AdminError::Invalid(format!(
            "{}: export directory exists and is not empty",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir.join("reports"))?;
    let mut out = Retired {
        tenant_id: id,
        ..Retired::default()
    };
    let pb = super::progress::bar(Some(4), "retire");
    // 1. Stop.
    out.keys_revoked = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(&ctx.db)
    .await?
    .rows_affected();
    let active: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM campaigns WHERE tenant_id = $1 \
         AND status IN ('draft', 'scheduled', 'sending', 'paused') ORDER BY id",
    )
    .bind(id)
    .fetch_all(&ctx.db)
    .await?;
    for (c,) in &active {
        super::campaigns::act(ctx, *c, RunAction::Cancel).await?;
        out.campaigns_cancelled += 1;
    }
    // Deferred jobs come back (to end unsent) only once every engine knows of the cancels.
    super::sites::await_engines(ctx).await?;
    for (c,) in &active {
        let filter = super::queue::Filter {
            site: None,
            campaign: Some(*c as u64),
        };
        super::queue::requeue(ctx, &filter, false).await?;
    }
    pb.inc(1);
    // 2. Export.
    let (tenant,): (serde_json::Value,) =
        sqlx::query_as("SELECT to_jsonb(t) FROM tenants t WHERE id = $1")
            .bind(id)
            .fetch_one(&ctx.db)
            .await?;
    std::fs::write(
        dir.join("tenant.json"),
        serde_json::to_vec_pretty(&tenant).unwrap_or_default(),
    )?;
    out.exported.push("tenant.json".into());
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("subscribers.ndjson"))?);
    let mut after = 0i64;
    loop {
        let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT s.id, jsonb_build_object('list', l.name, 'email', s.email, 'status', s.status, \
               'attributes', s.attributes, 'created_at', s.created_at) \
             FROM subscribers s JOIN lists l ON l.id = s.list_id \
             WHERE s.tenant_id = $1 AND s.id > $2 ORDER BY s.id LIMIT 5000",
        )
        .bind(id)
        .bind(after)
        .fetch_all(&ctx.db)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        for (_, row) in &rows {
            serde_json::to_writer(&mut f, row).map_err(|e| AdminError::Other(e.to_string()))?;
            std::io::Write::write_all(&mut f, b"\n")?;
        }
    }
    std::io::Write::flush(&mut f)?;
    out.exported.push("subscribers.ndjson".into());
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("suppressions.csv"))?);
    super::suppressions::export(ctx, id, &mut f).await?;
    out.exported.push("suppressions.csv".into());
    let campaigns: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT id, to_jsonb(c) FROM campaigns c WHERE tenant_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&ctx.db)
            .await?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("campaigns.ndjson"))?);
    for (c, row) in &campaigns {
        serde_json::to_writer(&mut f, row).map_err(|e| AdminError::Other(e.to_string()))?;
        std::io::Write::write_all(&mut f, b"\n")?;
        let report = super::report::build(ctx, *c).await?;
        std::fs::write(dir.join(format!("reports/{c}.csv")), report.to_csv())?;
        out.exported.push(format!("reports/{c}.csv"));
    }
    std::io::Write::flush(&mut f)?;
    out.exported.push("campaigns.ndjson".into());
    pb.inc(1);
    // 3. Delete from the record (tables without a foreign key to the tenant first; the rest
    // cascades from the tenant row).
    // By campaign (their primary keys).
    let ids: Vec<i64> = campaigns.iter().map(|c| c.0).collect();
    let mut tx = ctx.db.begin().await?;
    for t in super::purge::TABLES {
        let n = sqlx::query(&format!("DELETE FROM {t} WHERE campaign_id = ANY($1)"))
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        out.deleted.push((t.to_owned(), n));
    }
    let n = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    out.deleted.push(("tenants".into(), n));
    tx.commit().await?;
    // A recorder batch that began before the commit still saw the campaigns and may have
    // inserted behind the deletes; once committed, no new batch can (its insert joins the
    // campaigns, now gone). Batches take milliseconds: sweep once more after two seconds.
    // (A lock in the recorder would close this exactly but cost every batch: measured.)
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for t in ["delivery_events", "deferral_events"] {
        let n = sqlx::query(&format!("DELETE FROM {t} WHERE campaign_id = ANY($1)"))
            .bind(&ids)
            .execute(&ctx.db)
            .await?
            .rows_affected();
        if let Some(row) = out.deleted.iter_mut().find(|(name, _)| name == t) {
            row.1 += n;
        }
    }
    pb.inc(1);
    // 4. Redis: the snapshots go (message bodies); the run state stays until every queued job
    // could have ended, so engines still end them unsent.
    let mut con = ctx.redis().await?;
    let mut pipe = redis::pipe();
    for (c, _) in &campaigns {
        let key = hikyaku_queue_schema::Keys::campaign(*c as u64);
        pipe.hdel(&key, hikyaku_queue_schema::keys::SNAPSHOT_FIELD)
            .ignore()
            .expire(
                &key,
                (hikyaku_queue_schema::suppressed::MAX_JOB_LIFE_MS / 1000) as i64,
            )
            .ignore()
            .del(hikyaku_queue_schema::Keys::campaign_counters(*c as u64))
            .ignore();
    }
    let _: () = pipe.query_async(&mut con).await?;
    pb.finish_and_clear();
    Ok(out)
}
