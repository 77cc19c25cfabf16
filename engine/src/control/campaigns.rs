//! Campaign run states set by the API (`hk:camp:{id}` field `state`): a paused campaign's jobs
//! are parked (kept in Redis, out of every reader's way, until the campaign is resumed or
//! cancelled), a cancelled campaign's jobs are finished unsent with a `cancelled` event.
//!
//! The node tracks only campaigns it holds jobs of: every job in the engine's hands carries a
//! [`Hold`] on its campaign, the control loop refreshes the states of campaigns with jobs held
//! once a second, and forgets a campaign (with its rendered form, [`crate::message::Renderer`])
//! once no job of it has been held for [`CampaignStates::idle_keep`]. So a node's memory and
//! its per-second Redis polling follow the campaigns it is working on, not every campaign
//! (or test send) it ever saw.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hikyaku_queue_schema::keys::STATE_FIELD;
use hikyaku_queue_schema::Keys;
use hikyaku_queue_schema::Redis;

use crate::clock;

/// What the engine does with a campaign's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Deliver.
    Sending,
    /// Hold back.
    Paused,
    /// Finish unsent.
    Cancelled,
}

impl RunState {
    /// The state a `state` field value means.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("paused") => RunState::Paused,
            Some("cancelled") => RunState::Cancelled,
            _ => RunState::Sending,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            RunState::Sending => 0,
            RunState::Paused => 1,
            RunState::Cancelled => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => RunState::Paused,
            2 => RunState::Cancelled,
            _ => RunState::Sending,
        }
    }
}

/// One campaign as this node knows it.
#[derive(Debug)]
struct Tracked {
    state: AtomicU8,
    /// The state was read from Redis (not the default of a campaign first seen).
    known: AtomicBool,
    /// Jobs of the campaign in this node's hands.
    held: AtomicUsize,
    /// When `held` last fell to zero, ms.
    idle_since_ms: AtomicU64,
    /// Bumped whenever the state goes stale (the last hold dropped): a poll that read the state
    /// before the bump must not overwrite a fresher read made after it.
    epoch: AtomicU64,
}

impl Tracked {
    fn new(now_ms: u64) -> Self {
        Tracked {
            state: AtomicU8::new(RunState::Sending.to_u8()),
            known: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms),
            epoch: AtomicU64::new(0),
        }
    }

    fn set(&self, state: RunState) {
        self.state.store(state.to_u8(), Ordering::Release);
        self.known.store(true, Ordering::Release);
    }
}

/// A job's claim on its campaign's tracking: while any job of a campaign is held, the node
/// keeps its state (and polls it) and its rendered form. Dropped with the job.
#[derive(Debug)]
pub struct Hold(Arc<Tracked>);

impl Drop for Hold {
    fn drop(&mut self) {
        if self.0.held.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0
                .idle_since_ms
                .store(clock::now_ms(), Ordering::Release);
            // No longer polled: the state goes stale, and is read again with the next job.
            self.0.epoch.fetch_add(1, Ordering::AcqRel);
            self.0.known.store(false, Ordering::Release);
        }
    }
}

/// States of the campaigns this node holds jobs of.
#[derive(Debug)]
pub struct CampaignStates {
    /// A std lock: read per job, written when a campaign is first seen or forgotten, never
    /// held across an await.
    states: RwLock<HashMap<u64, Arc<Tracked>>>,
    idle_keep: Duration,
}

impl Default for CampaignStates {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl CampaignStates {
    /// Tracking that forgets a campaign `idle_keep` after its last job left.
    pub fn new(idle_keep: Duration) -> Self {
        CampaignStates {
            states: RwLock::new(HashMap::new()),
            idle_keep,
        }
    }

    /// How long a campaign no job of which is held stays known.
    pub fn idle_keep(&self) -> Duration {
        self.idle_keep
    }

    fn tracked(&self, campaign: u64) -> Arc<Tracked> {
        if let Some(t) = self
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&campaign)
        {
            return t.clone();
        }
        self.states
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(campaign)
            .or_insert_with(|| Arc::new(Tracked::new(clock::now_ms())))
            .clone()
    }

    /// A hold on `campaign` for one job entering the engine. The count is raised under the
    /// map's lock, so [`CampaignStates::forget_idle`] (which takes the write lock) never drops
    /// an entry a hold is being taken on: a held campaign is always the one in the map, polled.
    pub fn hold(&self, campaign: u64) -> Hold {
        {
            let states = self.states.read().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = states.get(&campaign) {
                t.held.fetch_add(1, Ordering::AcqRel);
                return Hold(t.clone());
            }
        }
        let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
        let t = states
            .entry(campaign)
            .or_insert_with(|| Arc::new(Tracked::new(clock::now_ms())))
            .clone();
        t.held.fetch_add(1, Ordering::AcqRel);
        Hold(t)
    }

    /// The state of `campaign` when it is known (read from Redis while jobs of it were held);
    /// `None` when it must be read first.
    pub fn known_state(&self, campaign: u64) -> Option<RunState> {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        let t = states.get(&campaign)?;
        t.known
            .load(Ordering::Acquire)
            .then(|| RunState::from_u8(t.state.load(Ordering::Acquire)))
    }

    /// The state of `campaign` as last read. A campaign whose state is not known (first seen,
    /// or seen again after no job of it was held) counts as sending until its state is read:
    /// the renderer reads it before the job's message is built ([`CampaignStates::known`]).
    pub fn get(&self, campaign: u64) -> RunState {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        match states.get(&campaign) {
            Some(t) if t.known.load(Ordering::Acquire) => {
                RunState::from_u8(t.state.load(Ordering::Acquire))
            }
            _ => RunState::Sending,
        }
    }

    /// Whether the state of `campaign` was read from Redis since the node (re)started tracking
    /// it.
    pub fn known(&self, campaign: u64) -> bool {
        self.states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&campaign)
            .is_some_and(|t| t.known.load(Ordering::Acquire))
    }

    /// Records a state read elsewhere (the renderer reads it with the snapshot, so a campaign's
    /// first message already honours it).
    pub fn set(&self, campaign: u64, state: RunState) {
        self.tracked(campaign).set(state);
    }

    /// Campaigns tracked now.
    pub fn len(&self) -> usize {
        self.states.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no campaign is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets campaigns no job of which has been held for `idle_keep` as of `now_ms`; returns
    /// their ids.
    pub fn forget_idle(&self, now_ms: u64) -> Vec<u64> {
        let keep_ms = self.idle_keep.as_millis() as u64;
        let mut gone = Vec::new();
        self.states
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, t| {
                // Under the write lock no hold can be taken; a held count of zero stays zero.
                let idle = t.held.load(Ordering::Acquire) == 0
                    && now_ms.saturating_sub(t.idle_since_ms.load(Ordering::Acquire)) >= keep_ms;
                if idle {
                    gone.push(*id);
                }
                !idle
            });
        gone
    }

    /// Reads the states of the campaigns with jobs held (one pipelined round trip).
    pub async fn refresh(&self, con: &mut Redis) -> redis::RedisResult<()> {
        let ids: Vec<(u64, Arc<Tracked>, u64)> = self
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, t)| t.held.load(Ordering::Acquire) > 0)
            .map(|(id, t)| (*id, t.clone(), t.epoch.load(Ordering::Acquire)))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (id, _, _) in &ids {
            pipe.hget(Keys::campaign(*id), STATE_FIELD);
        }
        let values: Vec<Option<String>> = pipe.query_async(con).await?;
        for ((_, t, epoch), v) in ids.into_iter().zip(values) {
            // Went stale while the poll was in flight (and may have been read afresh since):
            // this older answer is dropped; the next poll or job reads it again.
            if t.epoch.load(Ordering::Acquire) == epoch {
                t.set(RunState::parse(v.as_deref()));
                if t.epoch.load(Ordering::Acquire) != epoch {
                    // The last hold dropped meanwhile: leave it unknown, as the drop did.
                    t.known.store(false, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    /// Campaigns with jobs held now (the ones [`CampaignStates::refresh`] polls).
    pub fn polled(&self) -> usize {
        self.states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| t.held.load(Ordering::Acquire) > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaigns_are_polled_while_held_and_forgotten_when_idle() {
        let states = CampaignStates::new(Duration::from_secs(60));
        let holds: Vec<Hold> = (0..1000).map(|c| states.hold(c)).collect();
        assert_eq!((states.len(), states.polled()), (1000, 1000));
        let now = clock::now_ms();
        assert!(states.forget_idle(now + 3_600_000).is_empty(), "held: kept");
        drop(holds);
        assert_eq!(states.polled(), 0, "no job held: nothing to poll");
        assert!(states.forget_idle(now).is_empty(), "kept a while after");
        let gone = states.forget_idle(now + 61_000);
        assert_eq!(gone.len(), 1000);
        assert!(states.is_empty());
        // Seen again: unknown until read, then the state read holds.
        let h = states.hold(7);
        assert!(!states.known(7));
        states.set(7, RunState::Paused);
        assert!(states.known(7));
        assert_eq!(states.get(7), RunState::Paused);
        // Once no job of it is held its state is no longer polled: read again next time.
        drop(h);
        assert!(!states.known(7));
        assert_eq!(states.get(7), RunState::Sending, "until read again");
    }
}
