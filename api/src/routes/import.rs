//! `POST /v1/lists/{id}/subscribers/import`: a streamed CSV (`text/csv`, header row with an
//! `email` column, other columns become attributes) or NDJSON (`application/x-ndjson`, one
//! `{"email": …, "attributes": {…}}` per line) body. The body is never held whole: lines are
//! parsed as chunks arrive and inserted in batches; the report names duplicate and invalid rows by
//! line number. Batches commit as they go (a 10-million-row import is not one transaction): if
//! the body breaks off, a line is over 64 KiB, or a batch would pass the tenant's list size
//! (409 `list-full`: that batch is refused whole), the error names the line and the rows before
//! it stay imported — importing the same file again reports them as duplicates. An import that
//! added many rows ends with `ANALYZE subscribers`, so the first campaign sent to the list is
//! planned from its real size.

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use serde::Serialize;

use super::lists::owned;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::import_rows::{Format, Row, RowParser};
use crate::json::Path;
use crate::state::AppState;

/// Rows per INSERT.
const BATCH: usize = 5_000;
/// Imports adding at least this many rows refresh the planner's statistics of `subscribers`.
const ANALYZE_AFTER: u64 = 10_000;
/// Line numbers listed per category in the report (counts are always exact).
const MAX_LISTED: usize = 1_000;
/// Longest accepted line.
const MAX_LINE: usize = 64 * 1024;

/// A rejected row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// 1-based line number in the body.
    pub line: u64,
    /// Why.
    pub error: String,
}

/// What an import did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Rows added to the list.
    pub accepted: u64,
    /// Rows whose address was already in the list (or earlier in the body).
    pub duplicates: u64,
    /// Rows that could not be used.
    pub invalid: u64,
    /// Line numbers of duplicates (the first 1,000).
    pub duplicate_lines: Vec<u64>,
    /// Invalid rows with reasons (the first 1,000).
    pub invalid_rows: Vec<RowError>,
}

impl ImportReport {
    fn invalid(&mut self, line: u64, error: String) {
        self.invalid += 1;
        if self.invalid_rows.len() < MAX_LISTED {
            self.invalid_rows.push(RowError { line, error });
        }
    }

    fn duplicate(&mut self, line: u64) {
        self.duplicates += 1;
        if self.duplicate_lines.len() < MAX_LISTED {
            self.duplicate_lines.push(line);
        }
    }
}

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/lists/{id}/subscribers/import", post(import))
}

/// Inserts a batch; rows whose address exists already (the unique index says so) or repeats
/// within the batch are duplicates. No set of seen addresses is kept: memory stays flat
/// whatever the body's size.
async fn flush(
    state: &AppState,
    tenant: i64,
    list: i64,
    batch: &mut Vec<Row>,
    report: &mut ImportReport,
) -> Result<(), ApiError> {
    let mut fresh: Vec<&Row> = Vec::with_capacity(batch.len());
    let mut in_batch = HashSet::with_capacity(batch.len());
    for r in batch.iter() {
        if !in_batch.insert(r.lower.as_str()) {
            report.duplicate(r.line);
        } else {
            fresh.push(r);
        }
    }
    let emails: Vec<&str> = fresh.iter().map(|r| r.email.as_str()).collect();
    let lowers: Vec<&str> = fresh.iter().map(|r| r.lower.as_str()).collect();
    let attrs: Vec<&serde_json::Value> = fresh.iter().map(|r| &r.attributes).collect();
    let inserted: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO subscribers (list_id, tenant_id, email, email_lower, attributes) \
         SELECT $1, $2, e, l, a FROM UNNEST($3::text[], $4::text[], $5::jsonb[]) AS u(e, l, a) \
         ON CONFLICT (list_id, email_lower) DO NOTHING RETURNING email_lower",
    )
    .bind(list)
    .bind(tenant)
    .bind(&emails)
    .bind(&lowers)
    .bind(&attrs)
    .fetch_all(&state.db)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::ListFull(d) => ApiError::ListFull(format!(
            "{d}: nothing from line {} on was imported; the {} rows accepted before it stay \
             ({} duplicate and {} invalid lines before it)",
            batch.first().map_or(0, |r| r.line),
            report.accepted,
            report.duplicates,
            report.invalid
        )),
        other => other,
    })?;
    let inserted: HashSet<String> = inserted.into_iter().map(|(l,)| l).collect();
    for r in fresh {
        if inserted.contains(&r.lower) {
            report.accepted += 1;
        } else {
            report.duplicate(r.line);
        }
    }
    batch.clear();
    Ok(())
}

/// Parses the body as its chunks arrive and inserts its rows batch by batch, counting into
/// `report`; an error leaves the batches flushed before it in place.
async fn stream_rows(
    state: &AppState,
    tenant: i64,
    list: i64,
    format: Format,
    body: Body,
    report: &mut ImportReport,
) -> Result<(), ApiError> {
    let mut parser = RowParser::new(format);
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH);
    let mut pending: Vec<u8> = Vec::new();
    let mut line_no = 0u64;
    let mut stream = body.into_data_stream();
    loop {
        let chunk = stream
            .next()
            .await
            .transpose()
            .map_err(|e| ApiError::BadRequest {
                field: None,
                detail: format!("reading the body failed: {e}"),
            })?;
        let finished = chunk.is_none();
        match chunk {
            Some(c) => pending.extend_from_slice(&c),
            None if !pending.is_empty() && pending.last() != Some(&b'\n') => pending.push(b'\n'),
            None => {}
        }
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
            line_no += 1;
            let raw = &pending[start..start + nl];
            start += nl + 1;
            let parsed = match std::str::from_utf8(raw) {
                Ok(line) => parser.row(line_no, line),
                Err(_) => Err("not UTF-8".into()),
            };
            match parsed {
                Ok(Some(row)) => batch.push(row),
                Ok(None) => {}
                Err(e) if format == Format::Csv && parser.before_header() => {
                    return Err(ApiError::invalid(
                        "body",
                        format!("line {line_no} (header): {e}"),
                    ))
                }
                Err(e) => report.invalid(line_no, e),
            }
            if batch.len() >= BATCH {
                flush(state, tenant, list, &mut batch, report).await?;
            }
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            return Err(ApiError::invalid(
                "body",
                format!("line {} is longer than {MAX_LINE} bytes", line_no + 1),
            ));
        }
        if finished {
            return flush(state, tenant, list, &mut batch, report).await;
        }
    }
}

#[utoipa::path(post, path = "/v1/lists/{id}/subscribers/import", params(("id" = i64, Path)),
    request_body(content = String, content_type = "text/csv", description = "CSV with an email column, or NDJSON (application/x-ndjson)"),
    responses((status = 200, body = ImportReport), (status = 409, description = "the list would pass its tenant's list size (`list-full`); batches before the one that would pass it stay imported"), (status = 413), (status = 415)), security(("bearer" = [])))]
async fn import(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(list): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<ImportReport>, ApiError> {
    owned(&state, tenant, list).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match ct.as_str() {
        "text/csv" => Format::Csv,
        "application/x-ndjson" | "application/ndjson" => Format::Ndjson,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "text/csv or application/x-ndjson",
            ))
        }
    };
    let mut report = ImportReport::default();
    // Rows commit batch by batch: whatever ends the import, what was added is counted and
    // a large addition refreshes the statistics.
    let outcome = stream_rows(&state, tenant.0, list, format, body, &mut report).await;
    if report.accepted >= ANALYZE_AFTER {
        // Statistics taken while the list was small make the planner sort the whole list for
        // every expansion page; refresh them now rather than at autovacuum's leisure.
        let analyzed = sqlx::query("ANALYZE subscribers").execute(&state.db).await;
        if outcome.is_ok() {
            analyzed?;
        }
    }
    crate::metrics::imported(report.accepted);
    outcome?;
    Ok(axum::Json(report))
}
