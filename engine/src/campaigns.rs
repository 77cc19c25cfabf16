//! Campaign run states set by the API (`hk:camp:{id}` field `state`): a paused campaign's jobs
//! are held back (returned to the retry set without an attempt), a cancelled campaign's jobs are
//! finished unsent with a `cancelled` event. The control loop refreshes the states of every
//! campaign this node has seen, once a second.

use std::collections::HashMap;
use std::sync::RwLock;

use hikyaku_queue_schema::keys::STATE_FIELD;
use hikyaku_queue_schema::Keys;
use hikyaku_queue_schema::Redis;

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
}

/// States of the campaigns this node has seen.
#[derive(Debug, Default)]
pub struct CampaignStates {
    /// A std lock: read per job, written once a second, never held across an await.
    states: RwLock<HashMap<u64, RunState>>,
}

impl CampaignStates {
    /// The state of `campaign` as last read (a new campaign counts as sending until the next
    /// refresh, at most a second later).
    pub fn get(&self, campaign: u64) -> RunState {
        if let Some(s) = self
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&campaign)
        {
            return *s;
        }
        self.states
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(campaign)
            .or_insert(RunState::Sending);
        RunState::Sending
    }

    /// Records a state read elsewhere (the renderer reads it with the snapshot, so a campaign's
    /// first message already honours it).
    pub fn set(&self, campaign: u64, state: RunState) {
        self.states
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(campaign, state);
    }

    /// Reads every known campaign's state from Redis.
    pub async fn refresh(&self, con: &mut Redis) -> redis::RedisResult<()> {
        let ids: Vec<u64> = self
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(Keys::campaign(*id), STATE_FIELD);
        }
        let values: Vec<Option<String>> = pipe.query_async(con).await?;
        let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
        for (id, v) in ids.into_iter().zip(values) {
            states.insert(id, RunState::parse(v.as_deref()));
        }
        Ok(())
    }
}
