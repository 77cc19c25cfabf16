//! The API's Prometheus metrics and `GET /metrics`.
//!
//! Each metric's description says what a change means to an operator during a peak.

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Recipients enqueued by expansion.
pub const EXPANDED: &str = "hikyaku_api_expanded_total";
/// Recipients skipped by expansion (suppressed, unsubscribed, bounced).
pub const SKIPPED: &str = "hikyaku_api_expansion_skipped_total";
/// Events written to PostgreSQL by the recorder, by status.
pub const RECORDED: &str = "hikyaku_api_events_recorded_total";
/// Time to record one batch of events.
pub const RECORD_SECONDS: &str = "hikyaku_api_record_batch_seconds";
/// Subscribers accepted by imports.
pub const IMPORTED: &str = "hikyaku_api_imported_total";
/// Bounce and complaint reports taken by the inbound listener, by outcome (`bounce`,
/// `soft-bounce`, `complaint`, `duplicate`, `ignored`). A rise in `complaint` during a peak
/// means a campaign to stop.
pub const FEEDBACK: &str = "hikyaku_api_feedback_total";
/// Events engines wrote that the recorder has not yet recorded, per shard.
pub const EVENTS_BACKLOG: &str = "hikyaku_api_events_backlog";
/// Campaigns the expander paused because their tenant's monthly quota was used up.
pub const QUOTA_PAUSED: &str = "hikyaku_api_quota_paused_total";
/// Campaigns sending whose expansion has not finished.
pub const CAMPAIGNS_EXPANDING: &str = "hikyaku_api_campaigns_expanding";
/// Tracking hits (`open`, `click`) over a token's hourly cap: answered, counted, not recorded.
pub const TRACKING_UNRECORDED: &str = "hikyaku_api_tracking_unrecorded_total";

/// Events of a newer release the recorder left pending for a recorder of that release.
pub const EVENTS_NEWER: &str = "hikyaku_api_events_newer_release_total";
/// HTTP requests by method, route template and status class.
pub const HTTP_REQUESTS: &str = "hikyaku_api_http_requests_total";
/// HTTP request time by method and route template.
pub const HTTP_SECONDS: &str = "hikyaku_api_http_request_duration_seconds";
/// PostgreSQL pool connections by state (`used`, `idle`).
pub const DB_POOL: &str = "hikyaku_api_db_pool_connections";
/// The PostgreSQL pool's size limit.
pub const DB_POOL_MAX: &str = "hikyaku_api_db_pool_max_connections";

/// Buckets of [`HTTP_SECONDS`], seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Outcomes of [`FEEDBACK`], registered at zero so rates start from the first scrape.
const FEEDBACK_OUTCOMES: [&str; 4] = ["bounce", "soft-bounce", "complaint", "not-applied"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_SECONDS.into()), HTTP_BUCKETS)
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only when another recorder is installed in this process (tests running the
            // engine in-process); the API then renders what that one does not collect.
            let _ = metrics::set_global_recorder(recorder);
            describe_counter!(EXPANDED, "Recipients enqueued by campaign expansion. Flat while a campaign is 'sending' and not expansion_done means expansion is stalled.");
            describe_counter!(SKIPPED, "Recipients skipped at expansion. A jump means a list full of suppressed or unsubscribed addresses.");
            describe_counter!(RECORDED, "Delivery events recorded in PostgreSQL, by status. Falling behind the engine's hikyaku_messages_total means recorder lag.");
            describe_histogram!(RECORD_SECONDS, "Seconds to record one batch of events. Rising means PostgreSQL is the bottleneck.");
            describe_counter!(IMPORTED, "Subscribers accepted by bulk imports.");
            describe_counter!(FEEDBACK, "Bounce and complaint reports taken by the inbound listener, by outcome. complaint against delivered messages is the complaint rate Gmail and Yahoo judge us by (keep it under 0.1%).");
            describe_gauge!(EVENTS_BACKLOG, "Events engines wrote that the recorder has not yet recorded, per shard. Growing means PostgreSQL (or the recorder) is behind: stats lag, nothing is lost.");
            describe_gauge!(CAMPAIGNS_EXPANDING, "Campaigns sending whose expansion has not finished. Non-zero with hikyaku_api_expanded_total flat means expansion is stalled.");
            for outcome in FEEDBACK_OUTCOMES {
                counter!(FEEDBACK, "outcome" => outcome).increment(0);
            }
            describe_counter!(TRACKING_UNRECORDED, "Tracking hits over a recipient's hourly cap (answered, counted per campaign in tracking_unrecorded, not recorded as rows), by kind. A steady rise is a client or scanner looping over a link, not readers.");
            for kind in ["open", "click"] {
                counter!(TRACKING_UNRECORDED, "kind" => kind).increment(0);
            }
            describe_counter!(EVENTS_NEWER, "Events a newer release wrote for its own recorders, left pending here (a rolling upgrade in progress: the API is older than an engine). Rising after the upgrade is done means an API node was left on the old release.");
            counter!(EVENTS_NEWER).increment(0);
            describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route (the matched template; unmatched for paths no route serves) and status class. A rise of 5xx is the API failing; of 4xx, clients sending bad requests (or probing).");
            describe_histogram!(HTTP_SECONDS, "Seconds from request to response head, by method and route. A rising tail on campaign and import routes means PostgreSQL is the bottleneck.");
            describe_gauge!(DB_POOL, "PostgreSQL pool connections by state (used, idle), read at each scrape. used pinned at hikyaku_api_db_pool_max_connections means requests queue for a connection.");
            describe_gauge!(DB_POOL_MAX, "The PostgreSQL pool's size limit (db_pool).");
            describe_counter!(QUOTA_PAUSED, "Campaigns the expander paused because their tenant's monthly sending quota was used up. A rise means customers hitting their plan: raise the quota or tell them.");
            counter!(QUOTA_PAUSED).increment(0);
            counter!(EXPANDED).increment(0);
            counter!(SKIPPED).increment(0);
            // The exporter keeps histogram samples until upkeep (or a scrape) drains them.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

/// Counts a recorded batch.
pub fn recorded(status: &str, n: u64, seconds: f64) {
    counter!(RECORDED, "status" => status.to_owned()).increment(n);
    histogram!(RECORD_SECONDS).record(seconds);
}

/// Counts an expansion page.
pub fn expanded(enqueued: u64, skipped: u64) {
    counter!(EXPANDED).increment(enqueued);
    counter!(SKIPPED).increment(skipped);
}

/// Counts a campaign paused for its tenant's quota.
pub fn quota_paused() {
    counter!(QUOTA_PAUSED).increment(1);
}

/// Counts a tracking hit over its token's hourly cap (`kind`: `open` or `click`).
pub fn tracking_unrecorded(kind: &'static str) {
    counter!(TRACKING_UNRECORDED, "kind" => kind).increment(1);
}

/// Counts events of a newer release left pending.
pub fn events_newer(n: u64) {
    counter!(EVENTS_NEWER).increment(n);
}

/// The recorder's backlog on `shard`.
pub fn events_backlog(shard: u16, n: u64) {
    gauge!(EVENTS_BACKLOG, "shard" => shard.to_string()).set(n as f64);
}

/// Campaigns whose expansion is not finished.
pub fn campaigns_expanding(n: usize) {
    gauge!(CAMPAIGNS_EXPANDING).set(n as f64);
}

/// Counts an import.
pub fn imported(n: u64) {
    counter!(IMPORTED).increment(n);
}

/// Counts what became of an inbound report: recorded by kind, or `not-applied` — a report
/// ignored and one recorded before count alike, so the metric (like the listener's reply)
/// does not tell a sender which jobs it named exist or were reported already.
pub fn feedback(outcome: &crate::inbound::Applied) {
    use crate::inbound::Applied;
    let label = match outcome {
        Applied::Recorded { kind, .. } => kind,
        Applied::Duplicate | Applied::Ignored(_) => "not-applied",
    };
    counter!(FEEDBACK, "outcome" => label).increment(1);
}

/// `GET /metrics`, with the PostgreSQL pool's use read as it is served.
pub fn router() -> Router<AppState> {
    let handle = install();
    Router::new().route(
        "/metrics",
        get(move |State(state): State<AppState>| async move {
            pool(&state.db);
            handle.render()
        }),
    )
}

/// The pool's connections now.
fn pool(db: &sqlx::PgPool) {
    let size = db.size() as f64;
    let idle = db.num_idle() as f64;
    gauge!(DB_POOL, "state" => "used").set((size - idle).max(0.0));
    gauge!(DB_POOL, "state" => "idle").set(idle);
    gauge!(DB_POOL_MAX).set(f64::from(db.options().get_max_connections()));
}

/// The method as a label: the standard ones by name, anything else `other` (a client picks
/// the method, and a label per invented one would grow the registry without bound).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware counting every request by method, route template and status class, and timing
/// it to the response head ([`HTTP_REQUESTS`], [`HTTP_SECONDS`]). The route is the matched
/// template, never the path a client sent, so the label set stays bounded.
pub async fn track_http(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = tokio::time::Instant::now();
    let resp = next.run(req).await;
    let class = match resp.status().as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "class" => class)
        .increment(1);
    histogram!(HTTP_SECONDS, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}
