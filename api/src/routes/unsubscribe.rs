//! One-click unsubscribe (RFC 8058): `POST /u/{token}` with the body
//! `List-Unsubscribe=One-Click`, and a human page at `GET /u/{token}` whose button posts the
//! same. Keyed by a signed token, no API key; effective at once: the subscriber becomes
//! `unsubscribed` and the address is suppressed for the tenant, so later expansions skip it.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::json::Path;
use crate::state::AppState;
use crate::tokens;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/u/{token}", get(page).post(one_click))
}

#[utoipa::path(get, path = "/u/{token}", params(("token" = String, Path)), responses((status = 200, description = "confirmation page"), (status = 404)))]
async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Html<String>, ApiError> {
    tokens::verify(&state.token_secret, tokens::Purpose::Unsubscribe, &token)
        .ok_or(ApiError::NotFound("unsubscribe link"))?;
    // The token is [0-9a-f.] only (verified above), safe inside the HTML.
    Ok(Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head><body>\
         <h1>Unsubscribe</h1><p>Stop receiving these emails?</p>\
         <form method=\"post\" action=\"/u/{token}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form></body></html>"
    )))
}

#[utoipa::path(post, path = "/u/{token}", params(("token" = String, Path)), request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "List-Unsubscribe=One-Click"), responses((status = 200), (status = 404)))]
async fn one_click(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: String,
) -> Result<Response, ApiError> {
    let u = tokens::verify(&state.token_secret, tokens::Purpose::Unsubscribe, &token)
        .ok_or(ApiError::NotFound("unsubscribe link"))?;
    if !body
        .split('&')
        .any(|kv| kv.trim() == "List-Unsubscribe=One-Click")
    {
        return Err(ApiError::invalid(
            "List-Unsubscribe",
            "body must be List-Unsubscribe=One-Click",
        ));
    }
    let mut tx = state.db.begin().await?;
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE subscribers SET status = 'unsubscribed', updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 RETURNING email_lower",
    )
    .bind(u.subscriber)
    .bind(u.tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((email,)) = row else {
        return Err(ApiError::NotFound("subscriber"));
    };
    sqlx::query(
        "INSERT INTO suppressions (tenant_id, email_lower, reason, source) VALUES ($1, $2, 'unsubscribe', 'one-click') \
         ON CONFLICT (tenant_id, email_lower) DO NOTHING",
    )
    .bind(u.tenant)
    .bind(&email)
    .execute(&mut *tx)
    .await?;
    // Counted for the campaign's report (not for test sends, nor a campaign deleted since).
    sqlx::query(
        "INSERT INTO tracking_events (tenant_id, campaign_id, subscriber_id, kind) \
         SELECT $1, $2, $3, 'unsubscribe' WHERE $3 > 0 \
           AND EXISTS (SELECT 1 FROM campaigns WHERE id = $2 AND tenant_id = $1)",
    )
    .bind(u.tenant)
    .bind(u.campaign)
    .bind(u.subscriber)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    crate::suppression_feed::publish(&state, &[(u.tenant, &email, true)]).await;
    tracing::info!(
        tenant = u.tenant,
        campaign = u.campaign,
        "one-click unsubscribe"
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "unsubscribed\n",
    )
        .into_response())
}
