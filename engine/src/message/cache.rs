//! The node's campaigns, built once and shared by every connection: read from the snapshot in
//! Redis on first use, kept while the node holds jobs of the campaign, within a byte budget.

use super::build::*;
use super::*;
use crate::clock;
use crate::control::campaigns::{CampaignStates, RunState};
use crate::message::dkim::DkimKeys;
use hikyaku_queue_schema::keys::{SNAPSHOT_FIELD, STATE_FIELD};
use hikyaku_queue_schema::Redis;
use hikyaku_queue_schema::{CampaignSnapshot, Keys};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The per-engine campaign cache (snapshots never change once written). Bounded: a campaign
/// leaves it when the node forgets it (no job of it held for a while,
/// [`CampaignStates::forget_idle`]), and beyond [`MAX_CACHED_BYTES`] of rendered templates
/// the least recently used leave first (they are built again if needed).
#[derive(Debug)]
pub struct Renderer {
    pub(super) con: Redis,
    pub(super) states: Arc<CampaignStates>,
    pub(super) dkim: Arc<DkimKeys>,
    pub(super) cache: Mutex<HashMap<u64, Cached>>,
}

/// Rendered templates kept at most, in bytes (approximately: the skeletons and texts).
pub const MAX_CACHED_BYTES: usize = 256 << 20;

#[derive(Debug)]
pub(super) struct Cached {
    pub(super) campaign: Arc<Campaign>,
    pub(super) bytes: usize,
    pub(super) last_used_ms: std::sync::atomic::AtomicU64,
}

impl Renderer {
    /// A renderer reading snapshots over `con`, recording run states in `states`, signing
    /// with `dkim`.
    pub fn new(con: Redis, states: Arc<CampaignStates>, dkim: Arc<DkimKeys>) -> Self {
        Renderer {
            con,
            states,
            dkim,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The run state of `campaign`: as known while jobs of it are held, else read from Redis
    /// (and known from then on). Asked before each message is admitted, so no message of a
    /// paused or cancelled campaign goes out on a state the node has not read.
    pub async fn state(&self, id: u64) -> Result<RunState, RenderError> {
        if let Some(state) = self.states.known_state(id) {
            return Ok(state);
        }
        let mut con = self.con.clone();
        let state: Option<String> = redis::cmd("HGET")
            .arg(Keys::campaign(id))
            .arg(STATE_FIELD)
            .query_async(&mut con)
            .await
            .map_err(|e| RenderError::reading(id, &e))?;
        let state = RunState::parse(state.as_deref());
        self.states.set(id, state);
        Ok(state)
    }

    /// The campaign, from the cache or Redis. A campaign this node has started tracking anew
    /// has its run state read here before its first message.
    pub async fn campaign(&self, id: u64) -> Result<Arc<Campaign>, RenderError> {
        let cached = self.lock().get(&id).map(|c| {
            c.last_used_ms
                .store(clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
            c.campaign.clone()
        });
        let redis_error = |e: redis::RedisError| RenderError::reading(id, &e);
        let mut con = self.con.clone();
        if let Some(c) = cached {
            self.state(id).await?;
            return Ok(c);
        }
        let (bytes, state): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
            .arg(Keys::campaign(id))
            .arg(SNAPSHOT_FIELD)
            .arg(STATE_FIELD)
            .query_async(&mut con)
            .await
            .map_err(redis_error)?;
        self.states.set(id, RunState::parse(state.as_deref()));
        let bytes = bytes.ok_or(RenderError::Missing(id))?;
        let snap = CampaignSnapshot::decode(&bytes).map_err(|e| match e {
            hikyaku_queue_schema::DecodeError::TooNew(version) => {
                RenderError::TooNew { id, version }
            }
            e => RenderError::Invalid {
                id,
                error: e.to_string(),
            },
        })?;
        let campaign = Arc::new(Campaign::build(&snap, &self.dkim)?);
        self.insert(id, campaign.clone());
        Ok(campaign)
    }

    pub(super) fn insert(&self, id: u64, campaign: Arc<Campaign>) {
        let bytes = campaign.footprint();
        let mut cache = self.lock();
        cache.insert(
            id,
            Cached {
                campaign,
                bytes,
                last_used_ms: std::sync::atomic::AtomicU64::new(clock::now_ms()),
            },
        );
        let mut total: usize = cache.values().map(|c| c.bytes).sum();
        while total > MAX_CACHED_BYTES && cache.len() > 1 {
            let oldest = cache
                .iter()
                .filter(|(k, _)| **k != id)
                .min_by_key(|(_, c)| c.last_used_ms.load(std::sync::atomic::Ordering::Relaxed))
                .map(|(k, c)| (*k, c.bytes));
            let Some((k, b)) = oldest else { break };
            cache.remove(&k);
            total -= b;
        }
    }

    /// Drops the campaigns `ids` (forgotten by the node).
    pub fn forget(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut cache = self.lock();
        for id in ids {
            cache.remove(id);
        }
    }

    /// Campaigns cached now, and their approximate size in bytes.
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.lock();
        (cache.len(), cache.values().map(|c| c.bytes).sum())
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
