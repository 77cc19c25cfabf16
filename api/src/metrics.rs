//! The API's Prometheus metrics and `GET /metrics`.
//!
//! Each metric's description says what a change means to an operator during a peak.

use std::sync::OnceLock;

use axum::routing::get;
use axum::Router;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

/// Outcomes of [`FEEDBACK`], registered at zero so rates start from the first scrape.
const FEEDBACK_OUTCOMES: [&str; 4] = ["bounce", "soft-bounce", "complaint", "not-applied"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
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

/// `GET /metrics`.
pub fn router() -> Router<AppState> {
    let handle = install();
    Router::new().route("/metrics", get(move || async move { handle.render() }))
}
