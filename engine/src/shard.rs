//! A shard consumer: reads its shard's ready stream as a member of the engine consumer group,
//! only as much as the in-flight budget allows, and hands jobs to the dispatcher.
//!
//! It also keeps the shard safe across crashes: at start it replays this node's own pending
//! entries (a restarted node resumes at once), it refreshes the idle time of entries it holds,
//! and it reclaims entries idle longer than `claim_idle` from consumers that are not live nodes
//! (XPENDING per such consumer, then XCLAIM with the same minimum idle time), once this node's
//! heartbeats have been steady long enough ([`crate::membership::FleetView`]): a live node's
//! entries are never taken, however long a Redis outage made them look idle. Its own entries
//! that it does not hold (a read whose reply was lost in an outage) it takes back at any time.
//! Reclaim waits for room in the in-flight budget, ahead of new reads: a saturated budget does
//! not starve it.

use std::sync::Arc;
use std::time::Duration;

use hikyaku_queue_schema::Redis;
use hikyaku_queue_schema::{Job, Keys, ENGINE_GROUP};
use tokio::sync::watch;

use crate::clock;
use crate::config::QueueConfig;
use crate::dispatcher::Dispatcher;
use crate::inflight::InFlight;
use crate::metrics::Metrics;
use crate::report::Reporter;
use crate::streams::{self, Entry};

/// One shard's reader.
#[derive(Debug)]
pub struct ShardConsumer {
    /// Shard number.
    pub shard: u16,
    /// This node's consumer name.
    pub node_id: String,
    /// A connection of its own: XREADGROUP BLOCK would stall every other command queued
    /// behind it on a shared connection.
    pub con: Redis,
    /// Budget and held entries.
    pub inflight: Arc<InFlight>,
    /// Where jobs go.
    pub dispatcher: Arc<Dispatcher>,
    /// For undecodable entries.
    pub reporter: Reporter,
    /// Reading settings.
    pub queue: QueueConfig,
    /// Counters.
    pub metrics: Metrics,
    /// Replay this node's own pending entries first (the first time this process reads the
    /// shard).
    pub replay_own: bool,
    /// Who is alive: only other consumers' entries are reclaimed.
    pub fleet: Arc<crate::membership::FleetView>,
}

impl ShardConsumer {
    /// Runs until `stop` turns true; then returns without reading further.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let key = Keys::ready(self.shard);
        let replayed = if self.replay_own {
            self.replay_own_pending(&key, &mut stop).await
        } else {
            Ok(())
        };
        if let Err(e) = replayed {
            tracing::warn!(shard = self.shard, error = %e, "replaying own pending entries failed");
        }
        let claim_every = self.queue.claim_idle.0 / 3;
        let mut last_claim = clock::now();
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            let want = self.queue.read_batch;
            let got = tokio::select! {
                n = self.inflight.reserve(want) => n,
                _ = stop.changed() => break,
            };
            let block_ms = self.queue.block.0.as_millis() as u64;
            let read: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(ENGINE_GROUP)
                .arg(&self.node_id)
                .arg("COUNT")
                .arg(got)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .query_async(&mut self.con)
                .await;
            match read {
                Ok(v) => {
                    backoff = Duration::from_millis(100);
                    let entries = streams::parse_read(v);
                    self.inflight.release(got.saturating_sub(entries.len()));
                    self.accept(entries, false);
                }
                Err(e) => {
                    self.inflight.release(got);
                    tracing::warn!(shard = self.shard, error = %e, "XREADGROUP failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if last_claim.elapsed() >= claim_every {
                last_claim = clock::now();
                if let Err(e) = self.reclaim(&key, &mut stop).await {
                    tracing::warn!(shard = self.shard, error = %e, "reclaiming idle entries failed");
                }
            }
        }
    }

    /// Decodes entries and hands them on. `redelivered` marks entries that may have been
    /// attempted before (own-pending replay, reclaim).
    fn accept(&self, entries: Vec<Entry>, redelivered: bool) {
        if entries.is_empty() {
            return;
        }
        {
            let mut held = self.inflight.held(self.shard);
            for (id, _) in &entries {
                held.insert(id.clone());
            }
        }
        self.metrics.read(entries.len());
        for (entry, body) in entries {
            let Some(bytes) = body else {
                // Deleted while pending: nothing to deliver. Finishing it acks it with an
                // event explaining why.
                self.reporter
                    .undecodable(self.shard, entry, "entry body missing".into());
                continue;
            };
            match Job::decode(&bytes) {
                Ok(job) => {
                    let work = self.dispatcher.work(self.shard, entry, job, redelivered);
                    self.dispatcher.dispatch(work)
                }
                Err(e) => self.reporter.undecodable(self.shard, entry, e.to_string()),
            }
        }
    }

    /// Re-reads this node's own pending entries (from a previous run under the same name).
    async fn replay_own_pending(
        &mut self,
        key: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> redis::RedisResult<()> {
        let mut cursor: String = "0-0".into();
        loop {
            let got = tokio::select! {
                n = self.inflight.reserve(self.queue.read_batch) => n,
                _ = stop.changed() => return Ok(()),
            };
            let v: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(ENGINE_GROUP)
                .arg(&self.node_id)
                .arg("COUNT")
                .arg(got)
                .arg("STREAMS")
                .arg(key)
                .arg(&cursor)
                .query_async(&mut self.con)
                .await?;
            let entries = streams::parse_read(v);
            let Some(last) = entries.last().map(|(id, _)| id.to_string()) else {
                self.inflight.release(got);
                return Ok(());
            };
            cursor = last;
            let fresh = self.not_held(entries);
            self.inflight.release(got.saturating_sub(fresh.len()));
            self.metrics.reclaimed(fresh.len());
            self.accept(fresh, true);
        }
    }

    /// The entries this node does not hold already (a replay or reclaim may return some).
    fn not_held(&self, entries: Vec<Entry>) -> Vec<Entry> {
        let held = self.inflight.held(self.shard);
        entries
            .into_iter()
            .filter(|(id, _)| !held.contains(id))
            .collect()
    }

    /// Takes over entries idle longer than `claim_idle` from consumers that are not live nodes
    /// (their node died, or left without finishing), when the fleet view allows it; and this
    /// node's own entries it does not hold (delivered to it by a read whose reply was lost, in a
    /// Redis outage say), at any time.
    async fn reclaim(
        &mut self,
        key: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> redis::RedisResult<()> {
        let live = self.fleet.live_if_steady();
        let consumers: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(key)
            .arg(ENGINE_GROUP)
            .query_async(&mut self.con)
            .await?;
        let idle_ms = self.queue.claim_idle.0.as_millis() as u64;
        for c in consumers.consumers {
            let own = c.name == self.node_id;
            let claimable = own || live.as_ref().is_some_and(|l| !l.contains(&c.name));
            if c.pending == 0 || !claimable {
                continue;
            }
            // Pages of the consumer's idle entries, in id order.
            let mut start = "-".to_owned();
            loop {
                let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
                    .arg(key)
                    .arg(ENGINE_GROUP)
                    .arg("IDLE")
                    .arg(idle_ms)
                    .arg(&start)
                    .arg("+")
                    .arg(self.queue.read_batch)
                    .arg(&c.name)
                    .query_async(&mut self.con)
                    .await?;
                let listed = pending.ids.len();
                if let Some(last) = pending.ids.last() {
                    start = format!("({}", last.id);
                }
                let ids: Vec<String> = {
                    let held = self.inflight.held(self.shard);
                    pending
                        .ids
                        .into_iter()
                        .map(|p| p.id)
                        .filter(|id| !(own && held.contains(id.as_str())))
                        .collect()
                };
                if ids.is_empty() {
                    if listed < self.queue.read_batch {
                        break;
                    }
                    continue;
                }
                // Room first, ahead of new reads (this reader waits here, not in its read).
                let got = tokio::select! {
                    n = self.inflight.reserve(ids.len()) => n,
                    _ = stop.changed() => return Ok(()),
                };
                if got == 0 {
                    return Ok(());
                }
                let mut cmd = redis::cmd("XCLAIM");
                cmd.arg(key)
                    .arg(ENGINE_GROUP)
                    .arg(&self.node_id)
                    .arg(idle_ms);
                for id in &ids[..got] {
                    cmd.arg(id);
                }
                let v: redis::Value = cmd.query_async(&mut self.con).await?;
                let fresh = self.not_held(streams::parse_entries(v));
                self.inflight.release(got.saturating_sub(fresh.len()));
                if !fresh.is_empty() {
                    tracing::info!(
                        shard = self.shard,
                        from = %c.name,
                        count = fresh.len(),
                        "reclaimed idle entries (of a node not live, or this node's own orphans)"
                    );
                }
                self.metrics.reclaimed(fresh.len());
                self.accept(fresh, true);
                if listed < self.queue.read_batch || *stop.borrow() {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Keeps this node's held entries from looking idle: every `every`, XCLAIM … JUSTID to itself
/// for each held entry of `shard`. Runs on its own timer, apart from reading, so that a node
/// whose budget is full of slow jobs (and so reads nothing) still keeps them; runs until
/// aborted, through the shutdown grace.
pub async fn refresh_held(
    shard: u16,
    node_id: String,
    mut con: Redis,
    inflight: Arc<InFlight>,
    every: Duration,
) {
    let key = Keys::ready(shard);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ids: Vec<Arc<str>> = inflight.held(shard).iter().cloned().collect();
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(&key).arg(ENGINE_GROUP).arg(&node_id).arg(0);
            for id in chunk {
                cmd.arg(&**id);
            }
            cmd.arg("JUSTID");
            if let Err(e) = cmd.query_async::<redis::Value>(&mut con).await {
                tracing::warn!(shard, error = %e, "refreshing held entries failed");
                break;
            }
        }
    }
}
