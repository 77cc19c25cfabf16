//! `/v1/suppressions`: addresses the tenant never sends to (bounces, complaints, unsubscribes,
//! manual entries). Expansion skips them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::address;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::json::{Json, Path, Query};
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
        .route("/v1/suppressions/import", axum::routing::post(import))
        .route("/v1/suppressions/export", get(export))
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
    crate::suppression_feed::publish(&state, &[(tenant.0, &lower, true)]).await;
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
    let lower = email.trim().to_lowercase();
    let done = sqlx::query("DELETE FROM suppressions WHERE tenant_id = $1 AND email_lower = $2")
        .bind(tenant.0)
        .bind(&lower)
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("suppression"));
    }
    crate::suppression_feed::publish(&state, &[(tenant.0, &lower, false)]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// What a suppression import did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SuppressionImport {
    /// Addresses added (or whose reason was updated).
    pub accepted: u64,
    /// Rows that could not be used.
    pub invalid: u64,
    /// Invalid rows (the first 1,000) as `line: reason`.
    pub invalid_rows: Vec<String>,
}

/// `POST /v1/suppressions/import`: `text/plain` or `text/csv`, one address per line with an
/// optional `,reason` (a header line `email,reason` is skipped; further columns, as in an
/// export, are ignored). Bodies are streamed.
#[utoipa::path(post, path = "/v1/suppressions/import", request_body(content = String, content_type = "text/csv"), responses((status = 200, body = SuppressionImport), (status = 415)), security(("bearer" = [])))]
async fn import(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<axum::Json<SuppressionImport>, ApiError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(ct.starts_with("text/csv") || ct.starts_with("text/plain")) {
        return Err(ApiError::UnsupportedMediaType("text/csv or text/plain"));
    }
    let report = import_stream(&state, tenant.0, body.into_data_stream(), |_| {}).await?;
    Ok(axum::Json(report))
}

/// Imports suppressions for `tenant` from a stream of byte chunks: one address per line with an
/// optional `,reason` (a header line `email,reason…` is skipped; further columns are ignored); `on_chunk` hears each chunk's
/// size (progress). Shared by the API route and the admin CLI.
pub async fn import_stream<S, B, E>(
    state: &AppState,
    tenant: i64,
    mut stream: S,
    mut on_chunk: impl FnMut(usize),
) -> Result<SuppressionImport, ApiError>
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    let mut report = SuppressionImport::default();
    let mut batch: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut line = 0u64;
    let mut finished = false;
    while !finished {
        match stream.next().await {
            Some(Ok(chunk)) => {
                on_chunk(chunk.as_ref().len());
                pending.extend_from_slice(chunk.as_ref());
            }
            Some(Err(e)) => {
                return Err(ApiError::BadRequest {
                    field: None,
                    detail: format!("reading the body failed: {e}"),
                })
            }
            None => {
                finished = true;
                pending.push(b'\n');
            }
        }
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
            line += 1;
            let raw = String::from_utf8_lossy(&pending[start..start + nl])
                .trim()
                .to_owned();
            start += nl + 1;
            let header = raw.to_ascii_lowercase();
            if raw.is_empty()
                || (line == 1 && (header == "email,reason" || header.starts_with("email,reason,")))
                || header == "email"
            {
                continue;
            }
            // `email[,reason[,…]]`: further columns (an export's source and date) are ignored,
            // so an export imports back as it was.
            let mut cols = raw.split(',');
            let email = cols.next().unwrap_or_default();
            let reason = cols.next().map_or("manual", str::trim);
            match address::normalize("email", email) {
                Ok((_, lower)) if !reason.is_empty() && reason.len() <= 64 => {
                    batch.push((lower, reason.to_owned()))
                }
                Ok(_) => {
                    report.invalid += 1;
                    if report.invalid_rows.len() < 1000 {
                        report
                            .invalid_rows
                            .push(format!("{line}: reason must be 1-64 characters"));
                    }
                }
                Err(e) => {
                    report.invalid += 1;
                    if report.invalid_rows.len() < 1000 {
                        report.invalid_rows.push(format!("{line}: {e}"));
                    }
                }
            }
            if batch.len() >= 5000 {
                report.accepted += flush(state, tenant, &mut batch).await?;
            }
        }
        pending.drain(..start);
        if pending.len() > 64 * 1024 {
            return Err(ApiError::invalid(
                "body",
                format!("line {} is too long", line + 1),
            ));
        }
    }
    report.accepted += flush(state, tenant, &mut batch).await?;
    Ok(report)
}

async fn flush(
    state: &AppState,
    tenant: i64,
    batch: &mut Vec<(String, String)>,
) -> Result<u64, ApiError> {
    if batch.is_empty() {
        return Ok(0);
    }
    // One row per address in a statement (ON CONFLICT DO UPDATE may not touch a row twice).
    batch.sort();
    batch.dedup_by(|a, b| a.0 == b.0);
    let emails: Vec<&str> = batch.iter().map(|b| b.0.as_str()).collect();
    let reasons: Vec<&str> = batch.iter().map(|b| b.1.as_str()).collect();
    let done = sqlx::query(
        "INSERT INTO suppressions (tenant_id, email_lower, reason, source) \
         SELECT $1, e, r, 'import' FROM UNNEST($2::text[], $3::text[]) AS u(e, r) \
         ON CONFLICT (tenant_id, email_lower) DO UPDATE SET reason = EXCLUDED.reason",
    )
    .bind(tenant)
    .bind(&emails)
    .bind(&reasons)
    .execute(&state.db)
    .await?;
    let changes: Vec<(i64, &str, bool)> = emails.iter().map(|e| (tenant, *e, true)).collect();
    crate::suppression_feed::publish(state, &changes).await;
    batch.clear();
    Ok(done.rows_affected())
}

/// `GET /v1/suppressions/export`: every suppression of the tenant as CSV
/// (`email,reason,source,created_at`), read in keyset pages and streamed.
#[utoipa::path(get, path = "/v1/suppressions/export", responses((status = 200, content_type = "text/csv", body = String)), security(("bearer" = [])))]
async fn export(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let db = state.db.clone();
    tokio::spawn(async move {
        if tx.send(Ok(EXPORT_HEADER.into())).await.is_err() {
            return;
        }
        let mut after = String::new();
        loop {
            let rows = export_page(&db, tenant.0, &after).await;
            let rows = match rows {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            };
            let Some(last) = rows.last() else { return };
            after = last.email.clone();
            let mut chunk = String::new();
            for r in &rows {
                chunk.push_str(&r.csv_line());
            }
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Header of the export CSV.
pub const EXPORT_HEADER: &str = "email,reason,source,created_at\n";

/// One keyset page (5,000) of a tenant's suppressions after address `after`.
pub async fn export_page(
    db: &sqlx::PgPool,
    tenant: i64,
    after: &str,
) -> Result<Vec<Suppression>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email_lower AS email, reason, source, created_at FROM suppressions \
         WHERE tenant_id = $1 AND email_lower > $2 ORDER BY email_lower LIMIT 5000",
    )
    .bind(tenant)
    .bind(after)
    .fetch_all(db)
    .await
}

impl Suppression {
    /// The export CSV line (reasons lose commas, quotes and line breaks).
    pub fn csv_line(&self) -> String {
        let reason = self.reason.replace([',', '"', '\n', '\r'], " ");
        format!(
            "{},{},{},{}\n",
            self.email,
            reason,
            self.source,
            self.created_at.to_rfc3339()
        )
    }
}
