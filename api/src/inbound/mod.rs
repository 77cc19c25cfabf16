//! The inbound SMTP listener for bounces and complaints: DSNs sent to VERP addresses under the
//! bounce domain ([`hikyaku_queue_schema::verp`]) and ARF reports sent to the feedback address.
//! It takes mail for those addresses only (never a relay: any other recipient gets `550`),
//! limits message size, connections and messages per minute per client address, and turns
//! each report into a recorded bounce or complaint that suppresses the address
//! ([`apply`]). `hikyaku-api` runs it when `--inbound-listen` and `--bounce-domain` are set.
//!
//! Hand-written, like the sink: a receive-only server of ~200 lines with five commands is
//! smaller than adapting a general SMTP server crate, and the parsing of what arrives is
//! mail-parser's ([`report`]).

pub mod apply;
pub mod report;
mod session;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use apply::{Applied, SoftBounces};

use crate::state::AppState;

/// Settings of the listener.
#[derive(Debug, Clone)]
pub struct InboundSettings {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Domain of the VERP bounce addresses (lowercase).
    pub bounce_domain: String,
    /// Address complaint (ARF) reports are sent to, lowercase; none: complaints arrive at
    /// `fbl@<bounce domain>`.
    pub fbl_address: String,
    /// Largest message taken, bytes.
    pub max_message_bytes: usize,
    /// Simultaneous connections.
    pub max_connections: usize,
    /// Messages per minute from one client address.
    pub per_ip_per_minute: u32,
    /// How soft bounces add up to a suppression.
    pub soft: SoftBounces,
    /// A client silent this long is disconnected.
    pub idle_timeout: Duration,
}

impl InboundSettings {
    /// Defaults for `bounce_domain`: 10 MiB messages, 200 connections, 600 messages a minute
    /// per client, 3 soft bounces in 30 days, 60 s idle.
    pub fn new(bounce_domain: &str) -> Self {
        let d = bounce_domain.to_ascii_lowercase();
        InboundSettings {
            hostname: d.clone(),
            fbl_address: format!("fbl@{d}"),
            bounce_domain: d,
            max_message_bytes: 10 << 20,
            max_connections: 200,
            per_ip_per_minute: 600,
            soft: SoftBounces {
                limit: 3,
                window: Duration::from_secs(30 * 24 * 3600),
            },
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Shared by the sessions.
struct Shared {
    state: AppState,
    settings: InboundSettings,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

/// Serves `listener` until `shutdown` turns true.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    settings: InboundSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let per_minute = NonZeroU32::new(settings.per_ip_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let shared = Arc::new(Shared {
        limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        state,
        settings,
    });
    let slots = Arc::new(Semaphore::new(shared.settings.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "inbound accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(session::refuse_busy(stream));
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = session::run(&shared, stream, peer.ip()).await {
                tracing::debug!(%peer, error = %e, "inbound session ended");
            }
            drop(permit);
        });
    }
}
