//! Open and click tracking (see [`crate::tracking`]): `GET /t/{token}/o.gif`, the pixel, and
//! `GET /t/{token}/c/{n}`, a redirect to the campaign's N-th link. Keyed by a signed tracking
//! token, no API key. Each hit is one statement: a row appended to `tracking_events` for the
//! first [`RECORDED_PER_HOUR`] hits of a token and kind in an hour, beyond that a count in
//! `tracking_unrecorded` (and [`crate::metrics::TRACKING_UNRECORDED`]): the routes answer
//! every hit, but a loop over one link cannot grow the record without bound. (Hits that
//! arrive together may pass the cap by a few: the count and the insert are one statement, not
//! a lock.)
//!
//! A click redirects only to a target stored at freeze for the token's campaign, of the
//! token's tenant: nothing from the request becomes a `Location`, so this is no open redirect.
//! Test sends' tokens ([`NO_SUBSCRIBER`]) load and redirect but record nothing.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::json::Path;
use crate::state::AppState;
use crate::tokens::{self, Purpose, Recipient, NO_SUBSCRIBER};

/// A transparent 1×1 GIF (43 bytes).
const PIXEL: [u8; 43] = *b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\
    \x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

/// Longest user agent kept, in bytes.
const USER_AGENT_MAX: usize = 256;

/// Hits of one token and kind (open, click) recorded as rows per hour; the rest are counted.
/// A person reopens or clicks again a few times; a loop does not get a row per request.
pub const RECORDED_PER_HOUR: i64 = 10;

/// The statement's parts that record a hit or count it: `live` (a CTE yielding one row when
/// the hit may be recorded) must precede; `$1` tenant, `$2` campaign, `$3` subscriber, and
/// `$cap` the per-hour cap. Yields the CTEs `recorded` and `counted`.
fn record_or_count(kind: &str, columns: &str, values: &str, cap: &str) -> String {
    format!(
        "recent AS (SELECT count(*) AS n FROM (SELECT 1 FROM tracking_events \
                    WHERE campaign_id = $2 AND kind = '{kind}' AND subscriber_id = $3 \
                    AND at > now() - interval '1 hour' LIMIT {cap}) r), \
         recorded AS (INSERT INTO tracking_events (tenant_id, campaign_id, subscriber_id, kind, {columns}) \
                      SELECT $1, $2, $3, '{kind}', {values} FROM live, recent WHERE recent.n < {cap} \
                      RETURNING 1), \
         counted AS (INSERT INTO tracking_unrecorded (campaign_id, kind, hits) \
                     SELECT $2, '{kind}', 1 FROM live, recent WHERE recent.n >= {cap} \
                     ON CONFLICT (campaign_id, kind) \
                     DO UPDATE SET hits = tracking_unrecorded.hits + 1 RETURNING 1)"
    )
}

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{token}/o.gif", get(open))
        .route("/t/{token}/c/{n}", get(click))
}

fn recipient(state: &AppState, token: &str) -> Result<Recipient, ApiError> {
    tokens::verify(&state.token_secret, Purpose::Track, token)
        .ok_or(ApiError::NotFound("tracking link"))
}

/// The request's user agent, cut to [`USER_AGENT_MAX`] bytes on a character boundary.
fn user_agent(headers: &HeaderMap) -> String {
    let Some(v) = headers.get(header::USER_AGENT) else {
        return String::new();
    };
    let mut ua = String::from_utf8_lossy(v.as_bytes()).into_owned();
    if ua.len() > USER_AGENT_MAX {
        let mut end = USER_AGENT_MAX;
        while !ua.is_char_boundary(end) {
            end -= 1;
        }
        ua.truncate(end);
    }
    ua
}

#[utoipa::path(get, path = "/t/{token}/o.gif", params(("token" = String, Path)), responses((status = 200, description = "transparent 1×1 GIF; the open is recorded within --tracking-days of the campaign's start", content_type = "image/gif"), (status = 404)))]
async fn open(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = recipient(&state, &token)?;
    if r.subscriber != NO_SUBSCRIBER {
        // Nothing for a campaign that is gone (or, impossibly, another tenant's): the pixel
        // still loads.
        let (counted,): (i64,) = sqlx::query_as(&format!(
            "WITH live AS (SELECT 1 FROM campaigns WHERE id = $2 AND tenant_id = $1 \
                           AND (sent_at IS NULL OR sent_at > now() - make_interval(days => $5))), \
             {} \
             SELECT (SELECT count(*) FROM counted)",
            record_or_count("open", "user_agent", "$4", "$6")
        ))
        .bind(r.tenant)
        .bind(r.campaign)
        .bind(r.subscriber)
        .bind(user_agent(&headers))
        .bind(state.tracking_days as i32)
        .bind(RECORDED_PER_HOUR)
        .fetch_one(&state.db)
        .await?;
        if counted > 0 {
            crate::metrics::tracking_unrecorded("open");
        }
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/gif"),
            // Every load is an open: no cache may answer in our place.
            (header::CACHE_CONTROL, "no-store"),
        ],
        PIXEL,
    )
        .into_response())
}

#[utoipa::path(get, path = "/t/{token}/c/{n}", params(("token" = String, Path), ("n" = i32, Path, description = "link position in the HTML body")), responses((status = 302, description = "to the link's target; the click is recorded within --tracking-days of the campaign's start"), (status = 404)))]
async fn click(
    State(state): State<AppState>,
    Path((token, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = recipient(&state, &token)?;
    // One spelling per link, as the body was written (`…/c/3`, not `03` or `+3`).
    let n = tokens::canonical_id(&n)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or(ApiError::NotFound("link"))?;
    // The target and the record (or the count) in one round trip; no target, no record.
    let row: Option<(String, i64)> = sqlx::query_as(&format!(
        "WITH link AS (SELECT l.url, \
                              (c.sent_at IS NOT NULL AND c.sent_at <= now() - make_interval(days => $7)) AS expired \
                       FROM campaign_links l JOIN campaigns c ON c.id = l.campaign_id \
                       WHERE l.campaign_id = $2 AND l.n = $4 AND c.tenant_id = $1), \
              live AS (SELECT 1 FROM link WHERE $6 AND NOT link.expired), \
              {} \
         SELECT url, (SELECT count(*) FROM counted) FROM link",
        record_or_count("click", "link, user_agent", "$4, $5", "$8")
    ))
    .bind(r.tenant)
    .bind(r.campaign)
    .bind(r.subscriber)
    .bind(n)
    .bind(user_agent(&headers))
    .bind(r.subscriber != NO_SUBSCRIBER)
    .bind(state.tracking_days as i32)
    .bind(RECORDED_PER_HOUR)
    .fetch_optional(&state.db)
    .await?;
    let (url, counted) = row.ok_or(ApiError::NotFound("link"))?;
    if counted > 0 {
        crate::metrics::tracking_unrecorded("click");
    }
    // Stored header-safe at freeze (visible ASCII only).
    let location = HeaderValue::from_str(&url).map_err(|_| {
        ApiError::Internal(format!(
            "stored link {n} of campaign {} is not a header value",
            r.campaign
        ))
    })?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_cut_on_a_character_boundary() {
        let mut h = HeaderMap::new();
        assert_eq!(user_agent(&h), "");
        h.insert(header::USER_AGENT, HeaderValue::from_static("Mozilla/5.0"));
        assert_eq!(user_agent(&h), "Mozilla/5.0");
        let long = format!("a{}", "ü".repeat(200));
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_bytes(long.as_bytes()).expect("opaque bytes"),
        );
        let ua = user_agent(&h);
        assert_eq!(ua.len(), USER_AGENT_MAX - 1);
        assert!(long.starts_with(&ua));
    }

    #[test]
    fn the_pixel_is_a_gif() {
        assert!(PIXEL.starts_with(b"GIF89a") && PIXEL.ends_with(b";"));
    }
}
