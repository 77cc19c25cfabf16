//! The inbound SMTP listener for bounces and complaints: DSNs sent to VERP addresses under the
//! bounce domain ([`hikyaku_queue_schema::verp`]) and ARF reports sent to the feedback address.
//! It takes mail for those addresses only (never a relay: any other recipient gets `550`),
//! limits message size, connections (in all and per client address), session length, idle
//! time and messages per minute per client address, and turns each report into a recorded
//! bounce or complaint that suppresses the address ([`apply`]). `hikyaku-api` runs it when
//! `--inbound-listen` and `--bounce-domain` are set.
//!
//! One client cannot hold the listener: it gets at most `max_connections_per_ip` of the
//! `max_connections`, each session ends after `max_session` whatever it does, and only
//! commands that move a message on (the greeting, an accepted MAIL or RCPT, a message's
//! data) count as activity for `idle_timeout` — a NOOP or RSET every few seconds does not.
//!
//! Hand-written, like the sink: a receive-only server of ~200 lines with five commands is
//! smaller than adapting a general SMTP server crate, and the parsing of what arrives is
//! mail-parser's ([`report`]).

pub mod apply;
pub mod report;
mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
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
    /// Simultaneous connections from one client address (the next is told `421`), so that one
    /// client cannot take every connection.
    pub max_connections_per_ip: usize,
    /// Messages per minute from one client address.
    pub per_ip_per_minute: u32,
    /// How soft bounces add up to a suppression.
    pub soft: SoftBounces,
    /// A client that moves no message on this long is disconnected: only the greeting, an
    /// accepted MAIL or RCPT and a message's data count, so NOOP, RSET, VRFY and refused
    /// commands do not keep a session open.
    pub idle_timeout: Duration,
    /// The longest a session lasts, whatever it does.
    pub max_session: Duration,
}

impl InboundSettings {
    /// Defaults for `bounce_domain`: 10 MiB messages, 200 connections of which 10 per client
    /// address, 600 messages a minute per client, 3 soft bounces in 30 days, 60 s idle,
    /// sessions of at most 10 minutes.
    pub fn new(bounce_domain: &str) -> Self {
        let d = bounce_domain.to_ascii_lowercase();
        InboundSettings {
            hostname: d.clone(),
            fbl_address: format!("fbl@{d}"),
            bounce_domain: d,
            max_message_bytes: 10 << 20,
            max_connections: 200,
            max_connections_per_ip: 10,
            per_ip_per_minute: 600,
            soft: SoftBounces {
                limit: 3,
                window: Duration::from_secs(30 * 24 * 3600),
            },
            idle_timeout: Duration::from_secs(60),
            max_session: Duration::from_secs(600),
        }
    }
}

/// How often the per-client rate limiter forgets clients whose quota has refilled.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Shared by the sessions.
struct Shared {
    state: AppState,
    settings: InboundSettings,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Open connections per client address (addresses with none are removed). A std mutex:
    /// held for a lookup, never across an await.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's place among the open connections, given back on drop.
struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl IpSlot {
    /// Takes a place for `ip`, `None` when it holds `max_connections_per_ip` already.
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<IpSlot> {
        let mut map = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= shared.settings.max_connections_per_ip.max(1) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Forgets the clients whose rate quota has refilled, and gives their memory back: without
/// it the limiter keeps an entry per address ever seen.
fn prune(limiter: &DefaultKeyedRateLimiter<IpAddr>) {
    limiter.retain_recent();
    limiter.shrink_to_fit();
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
        per_ip: Mutex::new(HashMap::new()),
    });
    let slots = Arc::new(Semaphore::new(shared.settings.max_connections.max(1)));
    let mut prune_timer = tokio::time::interval(PRUNE_EVERY);
    prune_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = prune_timer.tick() => {
                prune(&shared.limiter);
                continue;
            }
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
        let Some(ip_slot) = IpSlot::take(&shared, peer.ip()) else {
            tokio::spawn(session::refuse(
                stream,
                b"421 4.7.0 Too many connections from your address, try again later\r\n",
            ));
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(session::refuse(
                stream,
                b"421 4.3.2 Too many connections, try again later\r\n",
            ));
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = session::run(&shared, stream, peer.ip()).await {
                tracing::debug!(%peer, error = %e, "inbound session ended");
            }
            drop(permit);
            drop(ip_slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_forgets_clients_whose_quota_refilled() {
        // 1,000 a second: a cell refills in a millisecond.
        let limiter: DefaultKeyedRateLimiter<IpAddr> = RateLimiter::keyed(Quota::per_second(
            NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN),
        ));
        for i in 0..100u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            assert!(limiter.check_key(&ip).is_ok());
        }
        assert_eq!(limiter.len(), 100);
        std::thread::sleep(Duration::from_millis(20));
        prune(&limiter);
        assert_eq!(limiter.len(), 0, "every client's quota is whole again");
    }
}
