//! `/v1/campaigns`: create, read, send, and live stats.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::lists::owned;
use crate::address;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::expansion;
use crate::json::{Json, Path, Query};
use crate::quota;
use crate::state::AppState;

/// A campaign.
#[derive(Debug, Serialize, FromRow, utoipa::ToSchema)]
pub struct Campaign {
    /// Id.
    pub id: i64,
    /// Owning tenant (implied by the key; not shown).
    #[serde(skip)]
    pub tenant_id: i64,
    /// The list it goes to.
    pub list_id: i64,
    /// Internal name.
    pub name: String,
    /// Sender display name.
    pub from_name: String,
    /// Sender address (header From and envelope sender).
    pub from_addr: String,
    /// Reply-To, or empty.
    pub reply_to: String,
    /// Subject; may hold `{{field}}` merge placeholders.
    pub subject: String,
    /// Plain-text body with merge placeholders.
    pub text_body: String,
    /// HTML body, or empty.
    pub html_body: String,
    /// `draft`, `scheduled`, `sending`, `paused`, `completed`, `cancelled`.
    pub status: String,
    /// Lane: 0 bulk, higher first.
    pub priority: i16,
    /// After this, undelivered jobs expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// Recipients enqueued so far.
    pub expanded: i64,
    /// Recipients skipped (suppressed, unsubscribed, bounced).
    pub skipped: i64,
    /// Whether expansion finished.
    pub expansion_done: bool,
    /// Whether the HTML body carries an open pixel.
    pub track_opens: bool,
    /// Whether the HTML body's links go through click redirects.
    pub track_clicks: bool,
    /// Charset for recipients at Japanese mobile carriers: `iso-2022-jp`, `utf-8`, or null
    /// for the engine's site policy.
    pub mobile_charset: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Charset of the messages to Japanese mobile carrier addresses (docomo.ne.jp, ezweb.ne.jp,
/// au.com, softbank.ne.jp, i.softbank.jp, ymobile.ne.jp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub enum MobileCharset {
    /// UTF-8, as every other recipient gets.
    #[serde(rename = "utf-8")]
    Utf8,
    /// ISO-2022-JP (7bit), which older handsets need; every character of the templates must
    /// be one it can carry (emoji cannot be).
    #[serde(rename = "iso-2022-jp")]
    Iso2022Jp,
}

impl MobileCharset {
    fn as_str(self) -> &'static str {
        match self {
            MobileCharset::Utf8 => "utf-8",
            MobileCharset::Iso2022Jp => "iso-2022-jp",
        }
    }
}

/// Refuses templates ISO-2022-JP cannot carry when it is the campaign's mobile charset, naming
/// the field and the character.
fn check_mobile_charset(
    charset: Option<&str>,
    texts: [(&'static str, &str); 4],
) -> Result<(), ApiError> {
    if charset != Some("iso-2022-jp") {
        return Ok(());
    }
    for (field, text) in texts {
        if !encoding_rs::ISO_2022_JP.encode(text).2 {
            continue;
        }
        let bad = text.chars().find(|c| {
            let mut b = [0u8; 4];
            encoding_rs::ISO_2022_JP.encode(c.encode_utf8(&mut b)).2
        });
        if let Some(c) = bad {
            return Err(ApiError::invalid(
                field,
                format!(
                    "character {c:?} (U+{:04X}) cannot be written in ISO-2022-JP (mobile_charset)",
                    u32::from(c)
                ),
            ));
        }
    }
    Ok(())
}

/// Body of create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// Internal name.
    pub name: String,
    /// The list to send to (one of the tenant's).
    pub list_id: i64,
    /// Sender display name.
    #[serde(default)]
    pub from_name: String,
    /// Sender address.
    pub from_addr: String,
    /// Reply-To address.
    #[serde(default)]
    pub reply_to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub text_body: String,
    /// HTML body.
    #[serde(default)]
    pub html_body: String,
    /// Lane (0–9), default 0.
    #[serde(default)]
    pub priority: i16,
    /// Expiry of undelivered jobs.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Count opens: a 1×1 pixel goes before the HTML body's `</body>` (no HTML body, no
    /// pixel). Default false.
    #[serde(default)]
    pub track_opens: bool,
    /// Count clicks: the HTML body's `http(s)` links (except ones with merge placeholders, such
    /// as `{{unsubscribe_url}}`) go through a signed redirect of this API. The text body is
    /// left as written. Default false.
    #[serde(default)]
    pub track_clicks: bool,
    /// Charset for recipients at Japanese mobile carriers; absent: the engine's site policy.
    #[serde(default)]
    pub mobile_charset: Option<MobileCharset>,
}

/// Live counts of a campaign.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Campaign status.
    pub status: String,
    /// Recipients enqueued.
    pub expanded: i64,
    /// Recipients skipped at expansion.
    pub skipped: i64,
    /// Whether expansion finished.
    pub expansion_done: bool,
    /// Jobs finished, by end state (`delivered`, `bounced`, `expired`).
    pub by_status: BTreeMap<String, i64>,
    /// Jobs finished, by destination site and end state.
    pub by_site: BTreeMap<String, BTreeMap<String, i64>>,
    /// Open pixel loads (with `track_opens`), repeats included.
    pub opens: i64,
    /// Recipients who opened at least once.
    pub unique_opens: i64,
    /// Link clicks (with `track_clicks`), repeats included.
    pub clicks: i64,
    /// Recipients who clicked at least once.
    pub unique_clicks: i64,
}

/// The columns of [`Campaign`], for every query that reads one.
pub const COLUMNS: &str =
    "id, tenant_id, list_id, name, from_name, from_addr, reply_to, subject, text_body, html_body, \
     status, priority, expires_at, expanded, skipped, expansion_done, track_opens, track_clicks, mobile_charset, created_at";

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/campaigns", get(list).post(create))
        .route("/v1/campaigns/{id}", get(show).patch(update).delete(remove))
        .route("/v1/campaigns/{id}/test", post(test_send))
        .route("/v1/campaigns/{id}/send", post(send))
        .route("/v1/campaigns/{id}/schedule", post(schedule))
        .route("/v1/campaigns/{id}/pause", post(pause))
        .route("/v1/campaigns/{id}/resume", post(resume))
        .route("/v1/campaigns/{id}/cancel", post(cancel))
        .route("/v1/campaigns/{id}/events", get(events))
        .route("/v1/campaigns/{id}/stats", get(stats))
}

async fn fetch(state: &AppState, tenant: Tenant, id: i64) -> Result<Campaign, ApiError> {
    sqlx::query_as::<_, Campaign>(&format!(
        "SELECT {COLUMNS} FROM campaigns WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(id)
    .bind(tenant.0)
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound("campaign"))
}

/// Checks a text field: at most `max` bytes, no control characters but tab, CR and LF — and,
/// for a `single_line` field (bound for a header: names, subject), no CR or LF and no
/// invisible formatting that could disguise it ([`crate::text::is_invisible_format`]: bidi
/// overrides, zero-width characters, …). Bodies keep those (emoji sequences need them).
fn check_text(field: &str, v: &str, max: usize, single_line: bool) -> Result<(), ApiError> {
    if v.len() > max {
        return Err(ApiError::invalid(field, format!("longer than {max} bytes")));
    }
    if v.contains('\0') || (single_line && v.contains(['\r', '\n'])) {
        return Err(ApiError::invalid(field, "contains CR, LF or NUL"));
    }
    if single_line {
        if let Some(c) = crate::text::invisible_format_in(v) {
            return Err(ApiError::invalid(
                field,
                format!("contains the invisible formatting character {c}"),
            ));
        }
    }
    if v.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    {
        return Err(ApiError::invalid(
            field,
            "contains a control character (only tab, CR and LF are allowed)",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/campaigns", request_body = NewCampaign, responses((status = 201, body = Campaign), (status = 422)), security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(c): Json<NewCampaign>,
) -> Result<(StatusCode, axum::Json<Campaign>), ApiError> {
    if c.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    check_text("name", &c.name, 200, true)?;
    check_text("from_name", &c.from_name, 200, true)?;
    check_text("subject", &c.subject, 998, true)?;
    if c.subject.trim().is_empty() {
        return Err(ApiError::invalid("subject", "must not be empty"));
    }
    check_text("text_body", &c.text_body, 1 << 20, false)?;
    check_text("html_body", &c.html_body, 1 << 20, false)?;
    let mobile_charset = c.mobile_charset.map(MobileCharset::as_str);
    check_mobile_charset(
        mobile_charset,
        [
            ("subject", &c.subject),
            ("from_name", &c.from_name),
            ("text_body", &c.text_body),
            ("html_body", &c.html_body),
        ],
    )?;
    let (from_addr, _) = address::normalize("from_addr", &c.from_addr)?;
    let reply_to = if c.reply_to.trim().is_empty() {
        String::new()
    } else {
        address::normalize("reply_to", &c.reply_to)?.0
    };
    if !(0..=9).contains(&c.priority) {
        return Err(ApiError::invalid("priority", "must be within 0..=9"));
    }
    owned(&state, tenant, c.list_id)
        .await
        .map_err(|_| ApiError::invalid("list_id", "no such list"))?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO campaigns (tenant_id, list_id, name, from_name, from_addr, reply_to, subject, \
         text_body, html_body, priority, expires_at, track_opens, track_clicks, mobile_charset) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) RETURNING id",
    )
    .bind(tenant.0)
    .bind(c.list_id)
    .bind(c.name.trim())
    .bind(&c.from_name)
    .bind(&from_addr)
    .bind(&reply_to)
    .bind(&c.subject)
    .bind(&c.text_body)
    .bind(&c.html_body)
    .bind(c.priority)
    .bind(c.expires_at)
    .bind(c.track_opens)
    .bind(c.track_clicks)
    .bind(mobile_charset)
    .fetch_one(&state.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(fetch(&state, tenant, id).await?),
    ))
}

#[utoipa::path(get, path = "/v1/campaigns", responses((status = 200, body = [Campaign])), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<axum::Json<Vec<Campaign>>, ApiError> {
    let rows = sqlx::query_as::<_, Campaign>(&format!(
        "SELECT {COLUMNS} FROM campaigns WHERE tenant_id = $1 ORDER BY id"
    ))
    .bind(tenant.0)
    .fetch_all(&state.db)
    .await?;
    Ok(axum::Json(rows))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", params(("id" = i64, Path)), responses((status = 200, body = Campaign), (status = 404)), security(("bearer" = [])))]
async fn show(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<axum::Json<Campaign>, ApiError> {
    Ok(axum::Json(fetch(&state, tenant, id).await?))
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/send", params(("id" = i64, Path)), responses((status = 202, body = Campaign), (status = 403, description = "quota exceeded"), (status = 404), (status = 409)), security(("bearer" = [])))]
async fn send(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<(StatusCode, axum::Json<Campaign>), ApiError> {
    // The row stays locked from the read to the status change, so an edit cannot slip in
    // between the snapshot and `sending` (the snapshot and the expansion see the same text).
    let mut tx = state.db.begin().await?;
    let campaign = sqlx::query_as::<_, Campaign>(&format!(
        "SELECT {COLUMNS} FROM campaigns WHERE id = $1 AND tenant_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(tenant.0)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("campaign"))?;
    if !matches!(campaign.status.as_str(), "draft" | "scheduled") {
        return Err(ApiError::Conflict {
            field: Some("status".into()),
            detail: format!(
                "campaign is {}; only a draft or scheduled campaign can be sent",
                campaign.status
            ),
        });
    }
    // On the transaction's connection: a send takes one pool connection, not two.
    let size = quota::list_size(&mut *tx, tenant.0, campaign.list_id).await?;
    quota::check(&mut *tx, tenant.0, size, "this campaign").await?;
    // Freeze first: the snapshot is in Redis before any job can reference it. In this
    // transaction: its link targets reference the row locked here.
    expansion::freeze(&state, &mut *tx, &campaign).await?;
    sqlx::query("UPDATE campaigns SET status = 'sending', sent_at = COALESCE(sent_at, now()), updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state.expander.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(fetch(&state, tenant, id).await?),
    ))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}/stats", params(("id" = i64, Path)), responses((status = 200, body = Stats), (status = 404)), security(("bearer" = [])))]
async fn stats(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<axum::Json<Stats>, ApiError> {
    let c = fetch(&state, tenant, id).await?;
    let (opens, unique_opens, clicks, unique_clicks): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'open'), \
                count(DISTINCT subscriber_id) FILTER (WHERE kind = 'open'), \
                count(*) FILTER (WHERE kind = 'click'), \
                count(DISTINCT subscriber_id) FILTER (WHERE kind = 'click') \
         FROM tracking_events WHERE campaign_id = $1",
    )
    .bind(id)
    .fetch_one(&state.db)
    .await?;
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT status, site, n FROM campaign_counters WHERE campaign_id = $1")
            .bind(id)
            .fetch_all(&state.db)
            .await?;
    let mut by_status = BTreeMap::new();
    let mut by_site: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (status, site, n) in rows {
        *by_status.entry(status.clone()).or_insert(0) += n;
        *by_site.entry(site).or_default().entry(status).or_insert(0) += n;
    }
    Ok(axum::Json(Stats {
        status: c.status,
        expanded: c.expanded,
        skipped: c.skipped,
        expansion_done: c.expansion_done,
        by_status,
        by_site,
        opens,
        unique_opens,
        clicks,
        unique_clicks,
    }))
}

/// Tells the engines how to treat the campaign's queued jobs (`None` = deliver).
async fn set_run_state(state: &AppState, id: i64, run: Option<&str>) -> Result<(), ApiError> {
    use hikyaku_queue_schema::keys::STATE_FIELD;
    let mut con = state.redis.clone();
    let key = hikyaku_queue_schema::Keys::campaign(id as u64);
    let _: () = match run {
        Some(v) => {
            redis::cmd("HSET")
                .arg(&key)
                .arg(STATE_FIELD)
                .arg(v)
                .query_async(&mut con)
                .await?
        }
        None => {
            redis::cmd("HDEL")
                .arg(&key)
                .arg(STATE_FIELD)
                .query_async(&mut con)
                .await?
        }
    };
    Ok(())
}

/// Moves a campaign from one of `from` to `to`, or says why it cannot.
async fn transition(
    state: &AppState,
    tenant: Tenant,
    id: i64,
    from: &[&str],
    to: &str,
) -> Result<Campaign, ApiError> {
    let current = fetch(state, tenant, id).await?;
    let from_owned: Vec<String> = from.iter().map(|s| (*s).to_owned()).collect();
    let done = sqlx::query(
        "UPDATE campaigns SET status = $3, updated_at = now() WHERE id = $1 AND tenant_id = $2 AND status = ANY($4)",
    )
    .bind(id)
    .bind(tenant.0)
    .bind(to)
    .bind(&from_owned)
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::Conflict {
            field: Some("status".into()),
            detail: format!("campaign is {}; this needs one of {from:?}", current.status),
        });
    }
    fetch(state, tenant, id).await
}

/// Body of schedule.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    /// When to start sending (RFC 3339).
    pub send_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/schedule", params(("id" = i64, Path)), request_body = ScheduleInput, responses((status = 200, body = Campaign), (status = 409), (status = 422)), security(("bearer" = [])))]
async fn schedule(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
    Json(input): Json<ScheduleInput>,
) -> Result<axum::Json<Campaign>, ApiError> {
    if input.send_at < Utc::now() - chrono::Duration::minutes(1) {
        return Err(ApiError::invalid("send_at", "is in the past"));
    }
    let c = fetch(&state, tenant, id).await?;
    if matches!(c.status.as_str(), "draft" | "scheduled") {
        let size = quota::list_size(&state.db, tenant.0, c.list_id).await?;
        quota::check(&state.db, tenant.0, size, "this campaign").await?;
    }
    sqlx::query("UPDATE campaigns SET send_at = $3 WHERE id = $1 AND tenant_id = $2 AND status IN ('draft', 'scheduled')")
        .bind(id)
        .bind(tenant.0)
        .bind(input.send_at)
        .execute(&state.db)
        .await?;
    Ok(axum::Json(
        transition(&state, tenant, id, &["draft", "scheduled"], "scheduled").await?,
    ))
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/pause", params(("id" = i64, Path)), responses((status = 200, body = Campaign), (status = 409)), security(("bearer" = [])))]
async fn pause(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<axum::Json<Campaign>, ApiError> {
    Ok(axum::Json(
        run_action(&state, tenant, id, RunAction::Pause).await?,
    ))
}

/// A change of a campaign's run, by its owner (API) or an operator (admin CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAction {
    /// Hold queued jobs back, stop expanding (from `sending`).
    Pause,
    /// Go on (from `paused`).
    Resume,
    /// End every queued job unsent (from any state before `completed`).
    Cancel,
}

/// Applies `action` to campaign `id` of `tenant` as one ordered operation: the campaign's row
/// is locked, its status checked and changed, and the engines' run state written to Redis while
/// the lock is held; then the change commits. Two actions on one campaign (a cancel and a
/// resume racing) therefore write Redis in the order their database changes commit, and the
/// run state the engines see is always the last status's: a cancelled campaign never ends up
/// delivering. Should Redis refuse, nothing changes (the transaction is not committed); should
/// the commit itself fail after Redis was written, the operator or customer repeats the action.
pub async fn run_action(
    state: &AppState,
    tenant: Tenant,
    id: i64,
    action: RunAction,
) -> Result<Campaign, ApiError> {
    let (from, to, run): (&[&str], &str, Option<&str>) = match action {
        // Expansion stops at its next page; engines park queued jobs within a second.
        RunAction::Pause => (&["sending"], "paused", Some("paused")),
        RunAction::Resume => (&["paused"], "sending", None),
        // Engines finish the queued jobs unsent, each with a `cancelled` event.
        RunAction::Cancel => (
            &["draft", "scheduled", "sending", "paused"],
            "cancelled",
            Some("cancelled"),
        ),
    };
    let mut tx = state.db.begin().await?;
    let current: Option<(String,)> =
        sqlx::query_as("SELECT status FROM campaigns WHERE id = $1 AND tenant_id = $2 FOR UPDATE")
            .bind(id)
            .bind(tenant.0)
            .fetch_optional(&mut *tx)
            .await?;
    let (status,) = current.ok_or(ApiError::NotFound("campaign"))?;
    if !from.contains(&status.as_str()) {
        return Err(ApiError::Conflict {
            field: Some("status".into()),
            detail: format!("campaign is {status}; this needs one of {from:?}"),
        });
    }
    sqlx::query("UPDATE campaigns SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    set_run_state(state, id, run).await?;
    tx.commit().await?;
    if action == RunAction::Resume {
        // An API process's expander also looks every second (an operator's resume comes
        // from another process).
        state.expander.notify_one();
    }
    fetch(state, tenant, id).await
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/resume", params(("id" = i64, Path)), responses((status = 200, body = Campaign), (status = 409)), security(("bearer" = [])))]
async fn resume(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<axum::Json<Campaign>, ApiError> {
    Ok(axum::Json(
        run_action(&state, tenant, id, RunAction::Resume).await?,
    ))
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/cancel", params(("id" = i64, Path)), responses((status = 200, body = Campaign), (status = 409)), security(("bearer" = [])))]
async fn cancel(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<axum::Json<Campaign>, ApiError> {
    Ok(axum::Json(
        run_action(&state, tenant, id, RunAction::Cancel).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/campaigns/{id}", params(("id" = i64, Path)), responses((status = 204), (status = 404), (status = 409)), security(("bearer" = [])))]
async fn remove(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let c = fetch(&state, tenant, id).await?;
    let done =
        sqlx::query("DELETE FROM campaigns WHERE id = $1 AND tenant_id = $2 AND status = 'draft'")
            .bind(id)
            .bind(tenant.0)
            .execute(&state.db)
            .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::Conflict {
            field: Some("status".into()),
            detail: format!(
                "campaign is {}; only drafts can be deleted (cancel it instead)",
                c.status
            ),
        });
    }
    Ok(StatusCode::NO_CONTENT)
}

/// One recorded delivery event.
#[derive(Debug, Serialize, FromRow, utoipa::ToSchema)]
pub struct DeliveryEvent {
    /// Job (subscriber) sequence number.
    pub seq: i64,
    /// Attempt number.
    pub attempt: i32,
    /// `delivered`, `bounced`, `expired`.
    pub status: String,
    /// Reason class.
    pub reason: String,
    /// SMTP code (0 if none).
    pub code: i32,
    /// Enhanced status code.
    pub enhanced: String,
    /// Reply text or error.
    pub detail: String,
    /// Destination site.
    pub site: String,
    /// MX host.
    pub mx: String,
    /// Recipient.
    pub rcpt: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Event filters and cursor.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Cursor from the previous page's `next`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Only this end state.
    #[serde(default)]
    pub status: Option<String>,
    /// Only this recipient.
    #[serde(default)]
    pub rcpt: Option<String>,
    /// At most this many (1–1000, default 100).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// The events.
    pub events: Vec<DeliveryEvent>,
    /// Cursor of the next page, if there may be one.
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/v1/campaigns/{id}/events", params(("id" = i64, Path), EventQuery), responses((status = 200, body = EventPage), (status = 404), (status = 422)), security(("bearer" = [])))]
async fn events(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
    Query(q): Query<EventQuery>,
) -> Result<axum::Json<EventPage>, ApiError> {
    fetch(&state, tenant, id).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be within 1..=1000"));
    }
    let (after_seq, after_attempt) = match q.cursor.as_deref() {
        None | Some("") => (-1i64, 0i32),
        Some(c) => c
            .split_once(':')
            .and_then(|(s, a)| Some((s.parse().ok()?, a.parse().ok()?)))
            .ok_or_else(|| ApiError::invalid("cursor", "not a cursor from a previous page"))?,
    };
    if let Some(s) = &q.status {
        if !["delivered", "bounced", "expired"].contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "status",
                "must be delivered, bounced or expired",
            ));
        }
    }
    let rows = sqlx::query_as::<_, DeliveryEvent>(
        "SELECT seq, attempt, status, reason, code, enhanced, detail, site, mx, rcpt, at FROM delivery_events          WHERE campaign_id = $1 AND (seq, attempt) > ($2, $3)            AND ($4::text IS NULL OR status = $4) AND ($5::text IS NULL OR lower(rcpt) = lower($5))          ORDER BY seq, attempt LIMIT $6",
    )
    .bind(id)
    .bind(after_seq)
    .bind(after_attempt)
    .bind(&q.status)
    .bind(&q.rcpt)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|e| format!("{}:{}", e.seq, e.attempt)))
        .flatten();
    Ok(axum::Json(EventPage { events: rows, next }))
}

/// Body of update (drafts only); absent fields are unchanged.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignUpdate {
    /// Internal name.
    #[serde(default)]
    pub name: Option<String>,
    /// Sender display name.
    #[serde(default)]
    pub from_name: Option<String>,
    /// Subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// Plain-text body.
    #[serde(default)]
    pub text_body: Option<String>,
    /// HTML body.
    #[serde(default)]
    pub html_body: Option<String>,
    /// Count opens (see create).
    #[serde(default)]
    pub track_opens: Option<bool>,
    /// Count clicks (see create).
    #[serde(default)]
    pub track_clicks: Option<bool>,
    /// Charset for Japanese mobile carrier recipients (see create).
    #[serde(default)]
    pub mobile_charset: Option<MobileCharset>,
}

#[utoipa::path(patch, path = "/v1/campaigns/{id}", params(("id" = i64, Path)), request_body = CampaignUpdate, responses((status = 200, body = Campaign), (status = 404), (status = 409), (status = 422)), security(("bearer" = [])))]
async fn update(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
    Json(u): Json<CampaignUpdate>,
) -> Result<axum::Json<Campaign>, ApiError> {
    let c = fetch(&state, tenant, id).await?;
    if let Some(v) = &u.name {
        check_text("name", v, 200, true)?;
    }
    if let Some(v) = &u.from_name {
        check_text("from_name", v, 200, true)?;
    }
    if let Some(v) = &u.subject {
        check_text("subject", v, 998, true)?;
    }
    for (field, v) in [("text_body", &u.text_body), ("html_body", &u.html_body)] {
        if let Some(v) = v {
            check_text(field, v, 1 << 20, false)?;
        }
    }
    let mobile_charset = u
        .mobile_charset
        .map(MobileCharset::as_str)
        .or(c.mobile_charset.as_deref());
    check_mobile_charset(
        mobile_charset,
        // A stored text refused only because of the new charset names the charset field.
        [
            ("subject", &u.subject, &c.subject),
            ("from_name", &u.from_name, &c.from_name),
            ("text_body", &u.text_body, &c.text_body),
            ("html_body", &u.html_body, &c.html_body),
        ]
        .map(|(field, new, old)| match new {
            Some(v) => (field, v.as_str()),
            None => ("mobile_charset", old.as_str()),
        }),
    )?;
    let done = sqlx::query(
        "UPDATE campaigns SET name = COALESCE($3, name), from_name = COALESCE($4, from_name), \
         subject = COALESCE($5, subject), text_body = COALESCE($6, text_body), html_body = COALESCE($7, html_body), \
         track_opens = COALESCE($8, track_opens), track_clicks = COALESCE($9, track_clicks), \
         mobile_charset = COALESCE($10, mobile_charset), updated_at = now() WHERE id = $1 AND tenant_id = $2 AND status = 'draft'",
    )
    .bind(id)
    .bind(tenant.0)
    .bind(&u.name)
    .bind(&u.from_name)
    .bind(&u.subject)
    .bind(&u.text_body)
    .bind(&u.html_body)
    .bind(u.track_opens)
    .bind(u.track_clicks)
    .bind(u.mobile_charset.map(MobileCharset::as_str))
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::Conflict {
            field: Some("status".into()),
            detail: format!("campaign is {}; only drafts can be edited", c.status),
        });
    }
    Ok(axum::Json(fetch(&state, tenant, id).await?))
}

/// Body of a test send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSend {
    /// 1–10 addresses to send the campaign to now.
    pub recipients: Vec<String>,
}

/// What a test send enqueued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestSent {
    /// Id the test messages carry (not the campaign's: test sends are not recorded).
    pub test_id: u64,
    /// Messages enqueued.
    pub enqueued: usize,
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/test", params(("id" = i64, Path)), request_body = TestSend, responses((status = 202, body = TestSent), (status = 403, description = "quota exceeded"), (status = 404), (status = 409, description = "the campaign is cancelled or completed"), (status = 422), (status = 429, description = "the tenant's test sends for this hour are used up (Retry-After)")), security(("bearer" = [])))]
async fn test_send(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<i64>,
    Json(t): Json<TestSend>,
) -> Result<(StatusCode, axum::Json<TestSent>), ApiError> {
    let c = fetch(&state, tenant, id).await?;
    if t.recipients.is_empty() || t.recipients.len() > 10 {
        return Err(ApiError::invalid("recipients", "give 1 to 10 addresses"));
    }
    if matches!(c.status.as_str(), "cancelled" | "completed") {
        return Err(ApiError::Conflict {
            field: Some("status".into()),
            detail: format!(
                "campaign is {}; test sends are for campaigns still to send",
                c.status
            ),
        });
    }
    let mut addrs = Vec::with_capacity(t.recipients.len());
    for r in &t.recipients {
        addrs.push(address::normalize("recipients", r)?.0);
    }
    quota::check(&state.db, tenant.0, addrs.len() as i64, "this test send").await?;
    let allowance = expansion::take_test_allowance(&state, tenant.0, addrs.len() as u64).await?;
    match expansion::test_send(&state, &c, &addrs).await {
        Ok(enqueued) => Ok((StatusCode::ACCEPTED, axum::Json(enqueued))),
        Err(e) => {
            // Nothing went out: the hour's allowance is not spent on it.
            allowance.give_back(&state).await;
            Err(e)
        }
    }
}
