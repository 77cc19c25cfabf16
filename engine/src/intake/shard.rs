//! A shard consumer: reads its shard's ready stream as a member of the engine consumer group,
//! only as much as the in-flight budget allows, and hands jobs to the dispatcher.
//!
//! It also keeps the shard safe across crashes: at start it replays this node's own pending
//! entries (a restarted node resumes at once), it refreshes the idle time of entries it holds,
//! and it reclaims entries idle longer than `claim_idle` from consumers that are not live nodes
//! (XPENDING per such consumer, then XCLAIM with the same minimum idle time), once this node's
//! heartbeats have been steady long enough ([`crate::intake::membership::FleetView`]): a live node's
//! entries are never taken, however long a Redis outage made them look idle: each node takes
//! back its own idle entries it does not hold, on every shard ([`keep_held`]). Reclaim waits
//! for room in the in-flight budget, ahead of new reads: a saturated budget does not starve
//! it.

use std::sync::Arc;
use std::time::Duration;

use hikyaku_queue_schema::Redis;
use hikyaku_queue_schema::{Job, Keys, ENGINE_GROUP};
use tokio::sync::watch;

use crate::clock;
use crate::config::QueueConfig;
use crate::intake::inflight::InFlight;
use crate::intake::streams::{self, Entry};
use crate::metrics::Metrics;
use crate::outcome::report::Reporter;
use crate::routing::dispatcher::Dispatcher;

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
    pub fleet: Arc<crate::intake::membership::FleetView>,
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

    fn handover(&self) -> Handover<'_> {
        Handover {
            shard: self.shard,
            inflight: &self.inflight,
            dispatcher: &self.dispatcher,
            reporter: &self.reporter,
            metrics: &self.metrics,
        }
    }

    /// Decodes entries read with `>` and hands them on.
    fn accept(&self, entries: Vec<Entry>, redelivered: bool) {
        let h = self.handover();
        h.dispatch(h.hold(entries), redelivered);
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
            let h = self.handover();
            let fresh = h.hold(entries);
            self.inflight.release(got.saturating_sub(fresh.len()));
            self.metrics.reclaimed(fresh.len());
            h.dispatch(fresh, true);
        }
    }

    /// Takes over entries idle longer than `claim_idle` from consumers that are not live nodes
    /// (their node died, or left without finishing), when the fleet view allows it. (This
    /// node's own idle entries it does not hold are [`keep_held`]'s, on every shard.)
    async fn reclaim(
        &mut self,
        key: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> redis::RedisResult<()> {
        let Some(live) = self.fleet.live_if_steady() else {
            return Ok(());
        };
        let consumers: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(key)
            .arg(ENGINE_GROUP)
            .query_async(&mut self.con)
            .await?;
        let idle_ms = self.queue.claim_idle.0.as_millis() as u64;
        for c in consumers.consumers {
            if c.pending == 0 || c.name == self.node_id || live.contains(&c.name) {
                continue;
            }
            // Pages of the consumer's idle entries, in id order.
            let mut start = "-".to_owned();
            loop {
                let (ids, full) = idle_page(
                    &mut self.con,
                    key,
                    &c.name,
                    idle_ms,
                    &mut start,
                    self.queue.read_batch,
                )
                .await?;
                if ids.is_empty() {
                    break;
                }
                // Room first, ahead of new reads (this reader waits here, not in its read).
                let got = tokio::select! {
                    n = self.inflight.reserve(ids.len()) => n,
                    _ = stop.changed() => return Ok(()),
                };
                if got == 0 {
                    return Ok(());
                }
                let h = Handover {
                    shard: self.shard,
                    inflight: &self.inflight,
                    dispatcher: &self.dispatcher,
                    reporter: &self.reporter,
                    metrics: &self.metrics,
                };
                let n = claim(&mut self.con, &h, key, &self.node_id, idle_ms, &ids, got).await?;
                if n > 0 {
                    tracing::info!(
                        shard = self.shard,
                        from = %c.name,
                        count = n,
                        "reclaimed idle entries of a node that is not live"
                    );
                }
                if !full || *stop.borrow() {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// What hands read or claimed entries to the dispatcher.
#[derive(Debug, Clone, Copy)]
pub struct Handover<'a> {
    /// The shard.
    pub shard: u16,
    /// Budget and held entries.
    pub inflight: &'a InFlight,
    /// Where jobs go.
    pub dispatcher: &'a Arc<Dispatcher>,
    /// For undecodable entries.
    pub reporter: &'a Reporter,
    /// Counters.
    pub metrics: &'a Metrics,
}

impl Handover<'_> {
    /// Marks `entries` held and returns those this node did not hold already, in one step
    /// under the held set's lock: a replay, a reclaim and a sweep that return the same entry
    /// hand it on once.
    pub fn hold(&self, entries: Vec<Entry>) -> Vec<Entry> {
        let mut held = self.inflight.held(self.shard);
        entries
            .into_iter()
            .filter(|(id, _)| held.insert(id.clone()))
            .collect()
    }

    /// Decodes entries (held already, [`Handover::hold`]) and hands them to the dispatcher.
    /// `redelivered` marks entries that may have been attempted before (replay, reclaim).
    pub fn dispatch(&self, entries: Vec<Entry>, redelivered: bool) {
        if entries.is_empty() {
            return;
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
                // A newer release's job in a rolling upgrade: back for another node.
                Err(e) if e.is_too_new() => self.reporter.newer_job(self.shard, entry, bytes),
                Err(e) => self.reporter.undecodable(self.shard, entry, e.to_string()),
            }
        }
    }
}

/// What [`keep_held`] needs.
#[derive(Debug)]
pub struct Keeper {
    /// The shard.
    pub shard: u16,
    /// This node's consumer name.
    pub node_id: String,
    /// A connection of its own.
    pub con: Redis,
    /// Budget and held entries.
    pub inflight: Arc<InFlight>,
    /// Where taken-back orphans go.
    pub dispatcher: Arc<Dispatcher>,
    /// For undecodable entries.
    pub reporter: Reporter,
    /// Reading settings (`claim_idle`, `read_batch`).
    pub queue: QueueConfig,
}

/// Keeps this node's entries of `shard` in order, every `claim_idle / 3`, whether or not the
/// node reads the shard now: it refreshes the idle time of the entries it holds (XCLAIM …
/// JUSTID to itself), on a timer of its own apart from reading, so that a node whose budget is
/// full of slow jobs (and so reads nothing) still keeps them; and it takes back its own entries
/// idle past `claim_idle` that it does not hold — delivered to it by a read whose reply was
/// lost (a Redis outage), or left by its previous run on a shard another node reads now: no
/// other node claims a live node's entries. Runs until aborted, through the shutdown grace.
pub async fn keep_held(mut k: Keeper) {
    let key = Keys::ready(k.shard);
    let every = k.queue.claim_idle.0 / 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first sweep waits a round: at start the readers replay this node's own pending
    // entries (idle since its last run), and an entry replayed, finished and released between
    // a sweep's look and its claim would go out twice. By the second round the refresh just
    // above the sweep has touched every entry held.
    let mut first = true;
    loop {
        tick.tick().await;
        let ids: Vec<Arc<str>> = k.inflight.held(k.shard).iter().cloned().collect();
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(&key).arg(ENGINE_GROUP).arg(&k.node_id).arg(0);
            for id in chunk {
                cmd.arg(&**id);
            }
            cmd.arg("JUSTID");
            if let Err(e) = cmd.query_async::<redis::Value>(&mut k.con).await {
                tracing::warn!(shard = k.shard, error = %e, "refreshing held entries failed");
                break;
            }
        }
        if std::mem::take(&mut first) {
            continue;
        }
        if let Err(e) = take_back_orphans(&mut k, &key, every / 2).await {
            tracing::warn!(shard = k.shard, error = %e, "taking back own idle entries failed");
        }
    }
}

/// Takes back this node's own idle entries of the shard that it does not hold, waiting at
/// most `wait` for room in the budget each round (the keeper's refresh must go on).
async fn take_back_orphans(k: &mut Keeper, key: &str, wait: Duration) -> redis::RedisResult<()> {
    let idle_ms = k.queue.claim_idle.0.as_millis() as u64;
    let mut start = "-".to_owned();
    loop {
        let (ids, full) = idle_page(
            &mut k.con,
            key,
            &k.node_id,
            idle_ms,
            &mut start,
            k.queue.read_batch,
        )
        .await?;
        let orphans: Vec<String> = {
            let held = k.inflight.held(k.shard);
            ids.into_iter()
                .filter(|id| !held.contains(id.as_str()))
                .collect()
        };
        if !orphans.is_empty() {
            let Ok(got) = tokio::time::timeout(wait, k.inflight.reserve(orphans.len())).await
            else {
                return Ok(());
            };
            if got == 0 {
                // The budget is closed (shutdown).
                return Ok(());
            }
            let h = Handover {
                shard: k.shard,
                inflight: &k.inflight,
                dispatcher: &k.dispatcher,
                reporter: &k.reporter,
                metrics: &Metrics,
            };
            let n = claim(&mut k.con, &h, key, &k.node_id, idle_ms, &orphans, got).await?;
            if n > 0 {
                tracing::info!(
                    shard = k.shard,
                    count = n,
                    "took back own idle entries this node did not hold"
                );
            }
        }
        if !full {
            return Ok(());
        }
    }
}

/// One page of `consumer`'s entries of `key` idle for `idle_ms` or more, from `start` (moved
/// past the page); the ids, and whether the page was full (more may follow).
async fn idle_page(
    con: &mut Redis,
    key: &str,
    consumer: &str,
    idle_ms: u64,
    start: &mut String,
    count: usize,
) -> redis::RedisResult<(Vec<String>, bool)> {
    let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(key)
        .arg(ENGINE_GROUP)
        .arg("IDLE")
        .arg(idle_ms)
        .arg(&*start)
        .arg("+")
        .arg(count)
        .arg(consumer)
        .query_async(con)
        .await?;
    if let Some(last) = pending.ids.last() {
        *start = format!("({}", last.id);
    }
    let full = pending.ids.len() >= count;
    Ok((pending.ids.into_iter().map(|p| p.id).collect(), full))
}

/// Claims the first `reserved` of `ids` (still idle for `idle_ms`) for `node`, hands those this
/// node did not hold already on as redelivered, and gives back the budget slots of the rest.
/// Returns how many were handed on.
async fn claim(
    con: &mut Redis,
    h: &Handover<'_>,
    key: &str,
    node: &str,
    idle_ms: u64,
    ids: &[String],
    reserved: usize,
) -> redis::RedisResult<usize> {
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(key).arg(ENGINE_GROUP).arg(node).arg(idle_ms);
    for id in &ids[..reserved.min(ids.len())] {
        cmd.arg(id);
    }
    let v: redis::Value = cmd.query_async(con).await?;
    let fresh = h.hold(streams::parse_entries(v));
    let n = fresh.len();
    h.inflight.release(reserved.saturating_sub(n));
    h.metrics.reclaimed(n);
    h.dispatch(fresh, true);
    Ok(n)
}
