//! Node membership and shard ownership: every second a node renews its heartbeat in
//! `hk:nodes` ([`scripts::heartbeat`]) and, from the live nodes it sees, works out which shards
//! it reads — rendezvous hashing, so every node computes the same owners without talking to
//! the others, and a node joining or leaving moves only its own share of shards.
//!
//! Ownership decides who *reads* a shard, never who may finish a job: the consumer group still
//! hands each entry to one consumer, and a node that gave a shard up finishes the entries it
//! holds. So a moment where two nodes read one shard (views differ for up to a second) or none
//! does (a node died and its heartbeat has not lapsed) costs only latency. When a node's
//! heartbeat lapses, its shards' new owners replay nothing of it directly: its pending entries
//! go idle and the owners claim them after `claim_idle`. A dead node's work is thus reclaimed
//! within `node_ttl + 1 s + claim_idle + claim_idle / 3`.
//!
//! Only a node that is not live may lose its entries ([`FleetView`]): idle time alone is no
//! proof of death, since a Redis outage makes every node's entries look idle (and every
//! heartbeat look lapsed) for as long as it lasts. So a reader claims entries only of
//! consumers outside the live set, and only once this node's own heartbeat has gone through
//! for `node_ttl + 1 s` without a failure — by then every live node has renewed its
//! heartbeat and touched its entries again.
//!
//! The lowest-named live node also tidies up after dead ones: once a dead node holds no pending
//! entry on any shard it leaves `hk:nodes` (unless its heartbeat came back meanwhile). Its
//! consumer names stay in the groups: deleting a consumer drops its pending entries, and a node
//! that only looked dead (a stall, a restart under the same name) could have read new ones
//! between the check and the delete — those jobs would be lost. An idle consumer costs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hikyaku_queue_schema::{scripts, Keys, ENGINE_GROUP};
use hikyaku_queue_schema::{Redis, RedisClient};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::QueueConfig;
use crate::intake::inflight::InFlight;
use crate::intake::shard::ShardConsumer;
use crate::metrics::Metrics;
use crate::outcome::report::Reporter;
use crate::routing::dispatcher::Dispatcher;

/// The fleet as this node's heartbeats last saw it, for the shard readers' reclaim.
#[derive(Debug)]
pub struct FleetView {
    inner: std::sync::Mutex<View>,
    /// How long heartbeats must go through before another node's entries may be claimed.
    grace: Duration,
    /// Longest gap between two heartbeats that went through for the view to stay steady.
    max_gap: Duration,
}

#[derive(Debug, Default)]
struct View {
    live: Vec<String>,
    /// Since when heartbeats have gone through without a failure.
    steady_since: Option<tokio::time::Instant>,
    /// When the last heartbeat went through.
    last_ok: Option<tokio::time::Instant>,
}

/// Longest time between two heartbeats that went through (they run once a second) for the
/// fleet view to stay steady: a beat that hung for seconds, or a node that stalled, saw the
/// fleet through a gap like an outage, and other nodes' heartbeats may look lapsed after it.
const MAX_BEAT_GAP: Duration = Duration::from_millis(2500);

impl FleetView {
    /// A view for a fleet whose heartbeats live `node_ttl`.
    pub fn new(node_ttl: Duration) -> Arc<Self> {
        Self::with_grace(node_ttl + Duration::from_secs(1))
    }

    /// A view that allows claims after `grace` of steady heartbeats.
    pub fn with_grace(grace: Duration) -> Arc<Self> {
        Self::with_limits(grace, MAX_BEAT_GAP)
    }

    /// A view that allows claims after `grace` of steady heartbeats, none of them more than
    /// `max_gap` after the one before.
    pub fn with_limits(grace: Duration, max_gap: Duration) -> Arc<Self> {
        Arc::new(FleetView {
            inner: std::sync::Mutex::new(View::default()),
            grace,
            max_gap,
        })
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A heartbeat went through; `live` are the nodes whose heartbeats have not run out.
    /// A gap of more than the view's limit ([`MAX_BEAT_GAP`]) since the last one counts as a
    /// failure.
    pub fn beat_ok(&self, live: Vec<String>) {
        let now = crate::clock::now();
        let mut v = self.view();
        v.live = live;
        if v.last_ok
            .is_some_and(|last| now.duration_since(last) > self.max_gap)
        {
            v.steady_since = None;
        }
        v.last_ok = Some(now);
        v.steady_since.get_or_insert(now);
    }

    /// A heartbeat failed (Redis unreachable): other nodes' heartbeats and entries may look
    /// stale for a while after it is back.
    pub fn beat_failed(&self) {
        self.view().steady_since = None;
    }

    /// Whether `node` is the lowest-named live node as last seen: the one that does the fleet's
    /// shared chores (tidying up after dead nodes, the retry-set scan of [`crate::control::held`]).
    pub fn is_leader(&self, node: &str) -> bool {
        self.view().live.iter().min().is_some_and(|l| l == node)
    }

    /// The live nodes, when claiming from the others is safe now: heartbeats have gone
    /// through for the grace period. `None`: claim nothing yet.
    pub fn live_if_steady(&self) -> Option<Vec<String>> {
        let v = self.view();
        let since = v.steady_since?;
        // A beat hanging right now is seen as a gap before it returns.
        let current = v.last_ok.is_some_and(|l| l.elapsed() <= self.max_gap);
        (current && since.elapsed() >= self.grace).then(|| v.live.clone())
    }
}

/// Rendezvous score of `node` for `shard`: FNV-1a of both, finished with a 64-bit mix so
/// neighbouring shards rank nodes independently.
fn score(node: &str, shard: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(shard.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The nodes that read `shard` among `live`, best score first.
pub fn owners(shard: u16, live: &[String]) -> Vec<&str> {
    let mut ranked: Vec<&str> = live.iter().map(String::as_str).collect();
    ranked.sort_by_key(|n| std::cmp::Reverse((score(n, shard), *n)));
    ranked
}

/// The shards `node` reads when `live` (sorted) are the live nodes, `node` among them: each
/// shard's best-scoring node reads it. With more nodes than shards (an unusual layout: shards
/// should outnumber nodes) every node reads the shard of its place in the sorted list instead,
/// so none idles.
pub fn owned(node: &str, live: &[String], shards: u16) -> BTreeSet<u16> {
    if live.len() > usize::from(shards) {
        return live
            .iter()
            .position(|n| n == node)
            .map(|i| (i % usize::from(shards.max(1))) as u16)
            .into_iter()
            .collect();
    }
    (0..shards)
        .filter(|&s| owners(s, live).first() == Some(&node))
        .collect()
}

/// What a shard reader needs; [`Readers`] starts and stops one per owned shard.
#[derive(Debug, Clone)]
pub struct ReaderParts {
    /// For each reader's own connection (XREADGROUP BLOCK).
    pub client: RedisClient,
    /// This node's consumer name.
    pub node_id: String,
    /// Budget and held entries.
    pub inflight: Arc<InFlight>,
    /// Where jobs go.
    pub dispatcher: Arc<Dispatcher>,
    /// For undecodable entries.
    pub reporter: Reporter,
    /// Reading settings.
    pub queue: QueueConfig,
    /// Who is alive, for reclaim.
    pub fleet: Arc<FleetView>,
}

/// The shard readers running on this node.
#[derive(Debug)]
pub struct Readers {
    parts: ReaderParts,
    running: BTreeMap<u16, (watch::Sender<bool>, JoinHandle<()>)>,
    /// Shards whose own pending entries were replayed already.
    replayed: BTreeSet<u16>,
}

impl Readers {
    /// No readers yet.
    pub fn new(parts: ReaderParts) -> Self {
        Readers {
            parts,
            running: BTreeMap::new(),
            replayed: BTreeSet::new(),
        }
    }

    /// Shards read now.
    pub fn shards(&self) -> BTreeSet<u16> {
        self.running.keys().copied().collect()
    }

    /// Stops readers of shards not in `wanted` and starts readers for new ones.
    pub async fn set(&mut self, wanted: &BTreeSet<u16>) -> redis::RedisResult<()> {
        let gone: Vec<u16> = self
            .running
            .keys()
            .filter(|s| !wanted.contains(s))
            .copied()
            .collect();
        // Every stop first, then the waits together: each reader may sit in a blocking read
        // for `queue.block`, and the next heartbeat waits for this.
        let mut stopping = Vec::new();
        for shard in gone {
            if let Some((stop, task)) = self.running.remove(&shard) {
                let _ = stop.send(true);
                stopping.push((shard, task));
            }
        }
        for (shard, task) in stopping {
            let _ = task.await;
            tracing::info!(shard, "shard handed over to another node");
        }
        for &shard in wanted {
            if self.running.contains_key(&shard) {
                continue;
            }
            let con = self.parts.client.connect_blocking().await?;
            let consumer = ShardConsumer {
                // Own pending entries are replayed once per process: a shard read again later
                // holds entries this node is still working on (and finishing).
                replay_own: self.replayed.insert(shard),
                shard,
                node_id: self.parts.node_id.clone(),
                con,
                inflight: self.parts.inflight.clone(),
                dispatcher: self.parts.dispatcher.clone(),
                reporter: self.parts.reporter.clone(),
                queue: self.parts.queue.clone(),
                metrics: Metrics,
                fleet: self.parts.fleet.clone(),
            };
            let (stop, rx) = watch::channel(false);
            self.running
                .insert(shard, (stop, tokio::spawn(consumer.run(rx))));
            tracing::debug!(shard, "reading shard");
        }
        Ok(())
    }

    /// Stops every reader and waits for them.
    pub async fn stop_all(&mut self) {
        for (_, (stop, _)) in self.running.iter() {
            let _ = stop.send(true);
        }
        for (_, (_, task)) in std::mem::take(&mut self.running) {
            let _ = task.await;
        }
    }
}

/// Heartbeat settings.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// This node.
    pub node_id: String,
    /// A heartbeat's time to live.
    pub ttl: Duration,
    /// Shard count.
    pub shards: u16,
    /// Where the live node count goes (fleet limits pace returns by it).
    pub live_nodes: Arc<std::sync::atomic::AtomicUsize>,
    /// Where the live set goes (the shard readers' reclaim).
    pub view: Arc<FleetView>,
}

/// One heartbeat: renew, read the fleet, take this node's shards; the lowest live node also
/// tidies up after dead ones.
async fn beat(con: &mut Redis, hb: &Heartbeat, readers: &mut Readers) -> redis::RedisResult<()> {
    let members = scripts::heartbeat(con, &hb.node_id, hb.ttl.as_millis() as u64).await?;
    let mut live = members.live();
    if !live.contains(&hb.node_id) {
        live.push(hb.node_id.clone());
        live.sort();
    }
    hb.view.beat_ok(live.clone());
    let owned = owned(&hb.node_id, &live, hb.shards);
    if owned != readers.shards() {
        tracing::info!(nodes = live.len(), shards = ?owned, "fleet changed: reading these shards");
    }
    readers.set(&owned).await?;
    Metrics.membership(live.len(), owned.len());
    hb.live_nodes
        .store(live.len(), std::sync::atomic::Ordering::Relaxed);
    if live.first() == Some(&hb.node_id) {
        for dead in members.dead() {
            forget_if_done(con, &dead, hb.shards).await?;
        }
    }
    Ok(())
}

/// Removes a dead node from the membership once it holds no pending entry.
async fn forget_if_done(con: &mut Redis, node: &str, shards: u16) -> redis::RedisResult<()> {
    for shard in 0..shards {
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(Keys::ready(shard))
            .arg(ENGINE_GROUP)
            .arg("-")
            .arg("+")
            .arg(1)
            .arg(node)
            .query_async(con)
            .await?;
        if !pending.is_empty() {
            // Still being reclaimed.
            return Ok(());
        }
    }
    if scripts::forget_node(con, node).await? {
        tracing::info!(node, "dead node's work all reclaimed; node forgotten");
    }
    Ok(())
}

/// Keeps the heartbeat and this node's shard readers until `stop` turns true; then stops the
/// readers and leaves the fleet (its shards go to the others at their next heartbeat).
pub async fn run(mut con: Redis, hb: Heartbeat, mut readers: Readers, stop: watch::Receiver<bool>) {
    let mut ticks = crate::clock::Ticks::new(Duration::from_secs(1), stop);
    while ticks.next().await {
        if let Err(e) = beat(&mut con, &hb, &mut readers).await {
            // Keep reading what we read: a Redis hiccup is not a membership change.
            tracing::warn!(error = %e, "heartbeat failed");
            hb.view.beat_failed();
        }
    }
    readers.stop_all().await;
    if let Err(e) = scripts::heartbeat(&mut con, &hb.node_id, 0).await {
        tracing::warn!(error = %e, "leaving the fleet failed; the heartbeat will lapse");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("engine-{i}")).collect()
    }

    #[tokio::test]
    async fn claims_wait_for_steady_heartbeats_after_an_outage() {
        let grace = Duration::from_millis(100);
        let view = FleetView::with_grace(grace);
        assert_eq!(view.live_if_steady(), None, "no heartbeat yet");
        view.beat_ok(vec!["a".into(), "b".into()]);
        assert_eq!(view.live_if_steady(), None, "not steady for the grace yet");
        tokio::time::sleep(grace * 2).await;
        view.beat_ok(vec!["a".into()]);
        assert_eq!(view.live_if_steady(), Some(vec!["a".to_owned()]));
        // An outage: every other node looks dead for a while after it.
        view.beat_failed();
        view.beat_ok(vec!["a".into()]);
        assert_eq!(view.live_if_steady(), None);
        tokio::time::sleep(grace * 2).await;
        assert_eq!(view.live_if_steady(), Some(vec!["a".to_owned()]));
    }

    #[tokio::test]
    async fn a_heartbeat_that_hung_counts_as_an_outage() {
        let step = Duration::from_millis(100);
        let view = FleetView::with_limits(step * 5, step * 6);
        for _ in 0..8 {
            view.beat_ok(vec!["a".into()]);
            tokio::time::sleep(step).await;
        }
        assert_eq!(view.live_if_steady(), Some(vec!["a".to_owned()]));
        // The next beat went through, but only after hanging: no failure was seen, yet the
        // fleet may look dead for a while after it.
        tokio::time::sleep(step * 15).await;
        view.beat_ok(vec!["a".into()]);
        assert_eq!(
            view.live_if_steady(),
            None,
            "steady again only after the grace"
        );
        for _ in 0..7 {
            tokio::time::sleep(step).await;
            view.beat_ok(vec!["a".into()]);
        }
        assert_eq!(view.live_if_steady(), Some(vec!["a".to_owned()]));
        // A beat that is hanging now: no claims while it hangs.
        tokio::time::sleep(step * 7).await;
        assert_eq!(view.live_if_steady(), None, "a beat overdue");
    }

    #[test]
    fn every_shard_has_an_owner_and_shares_are_even() {
        let live = nodes(3);
        let mut counts = vec![0; 3];
        for shard in 0..48u16 {
            let first = owners(shard, &live)[0];
            counts[live.iter().position(|n| n == first).expect("owner is live")] += 1;
        }
        assert!(counts.iter().all(|&c| c >= 8), "roughly even: {counts:?}");
        let union: BTreeSet<u16> = live.iter().flat_map(|n| owned(n, &live, 48)).collect();
        assert_eq!(union.len(), 48);
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_shards() {
        let before = nodes(4);
        let after: Vec<String> = before
            .iter()
            .filter(|n| *n != "engine-2")
            .cloned()
            .collect();
        for n in &after {
            let was = owned(n, &before, 64);
            let now = owned(n, &after, 64);
            assert!(was.is_subset(&now), "{n} keeps its shards");
        }
    }

    #[test]
    fn more_nodes_than_shards_still_gives_every_node_a_shard() {
        let live = nodes(5);
        for n in &live {
            assert_eq!(owned(n, &live, 2).len(), 1, "{n} reads one shard");
        }
        let union: BTreeSet<u16> = live.iter().flat_map(|n| owned(n, &live, 2)).collect();
        assert_eq!(union.len(), 2);
        assert_eq!(owned("engine-0", &nodes(1), 4).len(), 4);
    }
}
