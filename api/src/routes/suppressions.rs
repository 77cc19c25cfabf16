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
    check_reason(&reason).map_err(|detail| ApiError::invalid("reason", detail))?;
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
}

/// A suppression's reason, as every path that takes one checks it: 1–64 bytes, no control
/// characters, no invisible formatting ([`crate::text::is_invisible_format`]).
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.is_empty() || reason.len() > 64 || reason.chars().any(char::is_control) {
        return Err("must be 1–64 printable characters".into());
    }
    if let Some(c) = crate::text::invisible_format_in(reason) {
        return Err(format!("contains the invisible formatting character {c}"));
    }
    Ok(())
}

/// `POST /v1/suppressions/import`: `text/plain` or `text/csv`, one address per line with an
/// optional `,reason` (a header line `email,reason` is skipped; further columns, as in an
/// export, are ignored). Bodies are streamed. Every row is checked like `POST
/// /v1/suppressions`; one bad row refuses the whole import (422 naming its line and field)
/// and nothing is stored.
#[utoipa::path(post, path = "/v1/suppressions/import", request_body(content = String, content_type = "text/csv"), responses((status = 200, body = SuppressionImport), (status = 415), (status = 422)), security(("bearer" = [])))]
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

/// One import line (without its `\n`, trimmed) → `(lower-cased address, reason)`, `None` for
/// a header, or the field at fault and why. Cells are CSV (RFC 4180 quoting), as an export
/// writes them, with the export's formula guard taken off ([`crate::text::csv_unguard`]).
fn import_row(line_no: u64, raw: &str) -> Result<Option<(String, String)>, ApiError> {
    let at =
        |field: &str, detail: String| ApiError::invalid(field, format!("line {line_no}: {detail}"));
    let header = raw.to_ascii_lowercase();
    if (line_no == 1 && (header == "email,reason" || header.starts_with("email,reason,")))
        || header == "email"
    {
        return Ok(None);
    }
    // `email[,reason[,…]]`: further columns (an export's source and date) are ignored, so an
    // export imports back as it was.
    let cells = crate::import_rows::csv_fields(raw).map_err(|e| at("body", e))?;
    let email = cells
        .first()
        .map_or("", |c| crate::text::csv_unguard(c.trim()));
    let reason = cells
        .get(1)
        .map_or("manual", |c| crate::text::csv_unguard(c.trim()));
    let (_, lower) = address::normalize("email", email).map_err(|e| match e {
        ApiError::Invalid { detail, .. } => at("email", detail),
        other => other,
    })?;
    check_reason(reason).map_err(|detail| at("reason", detail))?;
    Ok(Some((lower, reason.to_owned())))
}

/// Imports suppressions for `tenant` from a stream of byte chunks (see [`import`] for the
/// format); `on_chunk` hears each chunk's size (progress). One transaction: a bad row refuses
/// the import and nothing is stored; the addresses it adds reach the engines' feed once it
/// commits. Shared by the API route and the admin CLI.
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
    let mut tx = state.db.begin().await?;
    // `now()` is the transaction's start: every row this import adds carries it.
    let (started,): (DateTime<Utc>,) = sqlx::query_as("SELECT now()").fetch_one(&mut *tx).await?;
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
            let text = String::from_utf8_lossy(&pending[start..start + nl]);
            start += nl + 1;
            // Spreadsheet exports often start with a byte-order mark.
            let text = if line == 1 {
                text.strip_prefix('\u{feff}').unwrap_or(&text)
            } else {
                &text
            };
            let raw = text.trim();
            if raw.is_empty() {
                continue;
            }
            if let Some(row) = import_row(line, raw)? {
                batch.push(row);
            }
            if batch.len() >= 5000 {
                report.accepted += flush(&mut tx, tenant, &mut batch).await?;
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
    report.accepted += flush(&mut tx, tenant, &mut batch).await?;
    tx.commit().await?;
    publish_added(state, tenant, started).await?;
    Ok(report)
}

/// Publishes to the engines' feed the addresses an import added (those created at `started`,
/// its transaction's time), a page at a time. An address whose reason it only updated was
/// suppressed, and published, before.
async fn publish_added(
    state: &AppState,
    tenant: i64,
    started: DateTime<Utc>,
) -> Result<(), ApiError> {
    let mut after = String::new();
    loop {
        let page: Vec<(String,)> = sqlx::query_as(
            "SELECT email_lower FROM suppressions WHERE tenant_id = $1 AND created_at = $2 \
             AND email_lower > $3 ORDER BY email_lower LIMIT 5000",
        )
        .bind(tenant)
        .bind(started)
        .bind(&after)
        .fetch_all(&state.db)
        .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.0.clone();
        let changes: Vec<(i64, &str, bool)> =
            page.iter().map(|(e,)| (tenant, e.as_str(), true)).collect();
        crate::suppression_feed::publish(state, &changes).await;
    }
}

async fn flush(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
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
    .execute(&mut **tx)
    .await?;
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
    /// The export CSV line, every cell through [`crate::text::csv_field`] (quoted where
    /// needed, a formula kept as text); reasons lose line breaks and other control characters
    /// (an import is line by line).
    pub fn csv_line(&self) -> String {
        use crate::text::csv_field;
        let reason: String = self
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!(
            "{},{},{},{}\n",
            csv_field(&self.email),
            csv_field(&reason),
            csv_field(&self.source),
            self.created_at.to_rfc3339()
        )
    }
}
