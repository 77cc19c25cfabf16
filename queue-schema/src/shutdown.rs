//! The one shutdown signal every hikyaku binary stops on: SIGTERM (what service managers and
//! a rolling upgrade send) or SIGINT (Ctrl-C). It lives here because this crate is the one
//! every binary depends on; it is the only process plumbing the crate holds.

/// Resolves on the first SIGTERM or SIGINT (on SIGINT alone where SIGTERM cannot be watched).
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
