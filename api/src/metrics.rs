//! The API's Prometheus metrics and `GET /metrics`.
//!
//! Each metric's description says what a change means to an operator during a peak.

use std::sync::OnceLock;

use axum::routing::get;
use axum::Router;
use metrics::{counter, describe_counter, describe_histogram, histogram};
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

/// Counts an import.
pub fn imported(n: u64) {
    counter!(IMPORTED).increment(n);
}

/// Counts what became of an inbound report.
pub fn feedback(outcome: &crate::inbound::Applied) {
    use crate::inbound::Applied;
    let label = match outcome {
        Applied::Recorded { kind, .. } => kind,
        Applied::Duplicate => "duplicate",
        Applied::Ignored(_) => "ignored",
    };
    counter!(FEEDBACK, "outcome" => label).increment(1);
}

/// `GET /metrics`.
pub fn router() -> Router<AppState> {
    let handle = install();
    Router::new().route("/metrics", get(move || async move { handle.render() }))
}
