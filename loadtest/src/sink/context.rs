//! What every session of one listener shares: its profile, counters and prepared replies.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use super::profile::Profile;
use super::profile_stats::ProfileCounters;
use super::replies;
use super::stats::SinkStats;

/// Per-listener state, built once at start so sessions never format fixed replies.
pub struct ListenerCtx {
    /// Reply texts and limits.
    pub profile: Profile,
    /// The profile's live counters.
    pub counters: Arc<ProfileCounters>,
    /// The sink-wide statistics (recipient tally).
    pub stats: Arc<SinkStats>,
    /// STARTTLS acceptor, when the sink offers STARTTLS.
    pub tls: Option<TlsAcceptor>,
    /// `220 <hostname> ESMTP hikyaku-sink`.
    pub greeting: Vec<u8>,
    /// EHLO answer advertising STARTTLS (used before the TLS upgrade when TLS is offered);
    /// both EHLO answers advertise CHUNKING when the profile allows it.
    pub ehlo_with_tls: Vec<u8>,
    /// EHLO answer without STARTTLS (after the upgrade, or when TLS is not offered).
    pub ehlo_without_tls: Vec<u8>,
    /// HELO answer.
    pub helo: Vec<u8>,
}

impl ListenerCtx {
    /// Prepares the shared state of a listener.
    pub fn new(
        profile: Profile,
        counters: Arc<ProfileCounters>,
        stats: Arc<SinkStats>,
        hostname: &str,
        tls: Option<TlsAcceptor>,
    ) -> Self {
        ListenerCtx {
            greeting: replies::greeting(hostname),
            ehlo_with_tls: replies::ehlo(hostname, tls.is_some(), profile.chunking),
            ehlo_without_tls: replies::ehlo(hostname, false, profile.chunking),
            helo: replies::helo(hostname),
            profile,
            counters,
            stats,
            tls,
        }
    }
}

impl std::fmt::Debug for ListenerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCtx")
            .field("profile", &self.profile)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}
