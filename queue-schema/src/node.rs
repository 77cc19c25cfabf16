//! What each engine node publishes about its sites, for operators (`hikyaku site list`):
//! `hk:node:<node>:sites`, a hash of site name → encoded [`SiteState`], rewritten every second
//! with a short expiry so a stopped node's entry disappears by itself.

use crate::codec::{DecodeError, Reader, Writer};

const TAG: u8 = b'S';
const VERSION: u8 = 1;

/// How long a node's entry outlives its last write, in seconds.
pub const TTL_S: u64 = 10;

/// One site as one engine node sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SiteState {
    /// Messages per second in force (policy or operator rate under the adaptive cap); 0 = none.
    pub rate: f64,
    /// The operator's override, 0 = none.
    pub override_rate: f64,
    /// Adaptive state: `normal`, `cut`, `suspended` or `blocked`.
    pub adaptive: String,
    /// Paused by an operator.
    pub paused: bool,
    /// Open SMTP connections.
    pub connections: u64,
    /// Jobs waiting in the site's queue on this node.
    pub queued: u64,
    /// When the node wrote this (ms since the epoch).
    pub at_ms: u64,
}

impl SiteState {
    /// Compact binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG, VERSION, 48 + self.adaptive.len());
        w.u64((self.rate * 1000.0) as u64)
            .u64((self.override_rate * 1000.0) as u64)
            .str(&self.adaptive)
            .u64(u64::from(self.paused))
            .u64(self.connections)
            .u64(self.queued)
            .u64(self.at_ms);
        w.finish()
    }

    /// Reads [`SiteState::encode`]'s form.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, _) = Reader::new(bytes, TAG, VERSION)?;
        let s = SiteState {
            rate: r.u64("rate")? as f64 / 1000.0,
            override_rate: r.u64("override_rate")? as f64 / 1000.0,
            adaptive: r.str("adaptive")?.to_owned(),
            paused: r.u64("paused")? != 0,
            connections: r.u64("connections")?,
            queued: r.u64("queued")?,
            at_ms: r.u64("at_ms")?,
        };
        r.end()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = SiteState {
            rate: 300.5,
            override_rate: 0.0,
            adaptive: "cut".into(),
            paused: true,
            connections: 7,
            queued: 1234,
            at_ms: 1_700_000_000_000,
        };
        let bytes = s.encode();
        assert_eq!(SiteState::decode(&bytes), Ok(s));
        assert!(SiteState::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
