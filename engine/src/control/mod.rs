//! Run-time control and queue gauges: every second, read each site's `hk:site:<name>:ctl`
//! (pause flag, rate override, set by operators through the admin CLI), each shard's depths,
//! the run state of every campaign this node holds jobs of (and forget the ones it no longer
//! does), operators' drain orders and the suppression feed; move the parked jobs of campaigns
//! no longer paused back to the ready streams; and publish this node's view of every site
//! (`hk:node:<node>:sites`) for `hikyaku site list`.

pub mod campaigns;
pub mod held;
pub mod suppressed;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hikyaku_queue_schema::Keys;
use hikyaku_queue_schema::Redis;
use tokio::sync::watch;

use crate::control::campaigns::CampaignStates;
use crate::intake::inflight::InFlight;
use crate::metrics::redis_info::RedisInfo;
use crate::metrics::Metrics;
use crate::site::Site;
use crate::units::Rate;

/// What the control loop reads into and publishes from.
#[derive(Debug)]
pub struct Control {
    /// Every site of this node.
    pub sites: BTreeMap<String, Arc<Site>>,
    /// Campaign run states.
    pub campaigns: Arc<CampaignStates>,
    /// Rendered campaigns (forgotten with their states).
    pub renderer: Arc<crate::message::Renderer>,
    /// For the DNS cache gauge.
    pub dispatcher: Arc<crate::routing::dispatcher::Dispatcher>,
    /// The suppression feed.
    pub suppressed: Arc<crate::control::suppressed::Suppressed>,
    /// Operators' drain orders.
    pub drains: Arc<crate::routing::drains::Drains>,
    /// Shard count.
    pub shards: u16,
    /// The in-flight budget (for the depth gauges).
    pub inflight: Arc<InFlight>,
    /// This node's id (names its published site state).
    pub node_id: String,
    /// The fleet as the heartbeats see it: its leader scans the retry sets ([`crate::control::held`]).
    pub fleet: Arc<crate::intake::membership::FleetView>,
}

/// Runs until `stop` turns true.
pub async fn run(mut con: Redis, control: Control, stop: watch::Receiver<bool>) {
    let Control {
        sites,
        campaigns,
        renderer,
        dispatcher,
        suppressed,
        drains,
        shards,
        inflight,
        node_id,
        fleet,
    } = control;
    let metrics = Metrics;
    let mut drain_pacing = DrainPacing::default();
    let mut scan = crate::control::held::RetryScan::default();
    // The last complete pass's figures, published every tick (the ages grow between passes);
    // every site at zero until the first pass, so the series exist from the start.
    let mut held: Vec<(String, crate::control::held::SiteTally)> = sites
        .keys()
        .map(|name| (name.clone(), crate::control::held::SiteTally::default()))
        .collect();
    let mut ticks = crate::clock::Ticks::new(Duration::from_secs(1), stop);
    while ticks.next().await {
        if let Err(e) = poll(&mut con, &sites, shards, &inflight, &metrics).await {
            tracing::warn!(error = %e, "reading site control and queue depths failed");
        }
        let now = crate::clock::now_ms();
        for site in sites.values() {
            metrics.site_ready_age(&site.policy.name, site.oldest_queued_ms(), now);
        }
        if fleet.is_leader(&node_id) {
            let expires = |job: &hikyaku_queue_schema::Job, name: &str| {
                sites
                    .get(name)
                    .or_else(|| sites.get("default"))
                    .map(|s| crate::outcome::report::job_expires_ms(job, &s.policy))
            };
            match scan.step(&mut con, shards, now, expires).await {
                Ok(Some(mut tally)) => {
                    // Every site of this node, at zero when it has no job waiting.
                    for name in sites.keys() {
                        tally.entry(name.clone()).or_default();
                    }
                    held = scan.to_publish(&tally);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "scanning the retry sets failed"),
            }
        } else {
            let gone = scan.stand_down();
            if !gone.is_empty() {
                held = gone;
            }
        }
        for (site, tally) in &held {
            metrics.site_held(site, tally, now);
        }
        if let Err(e) = campaigns.refresh(&mut con).await {
            tracing::warn!(error = %e, "reading campaign states failed");
        }
        renderer.forget(&campaigns.forget_idle(crate::clock::now_ms()));
        let (cached, bytes) = renderer.cached();
        metrics.caches(campaigns.len(), cached, bytes, dispatcher.cached_domains());
        // Drain orders first: jobs moved back for a drain must meet it at the gate.
        if let Err(e) = drains.refresh(&mut con).await {
            tracing::warn!(error = %e, "reading drain orders failed");
        }
        if let Err(e) = unpark(&mut con, shards, &metrics, &mut drain_pacing).await {
            tracing::warn!(error = %e, "moving parked jobs back failed");
        }
        if let Err(e) = suppressed.refresh(&mut con).await {
            tracing::warn!(error = %e, "reading the suppression feed failed");
        }
        if let Err(e) = publish(&mut con, &sites, &node_id).await {
            tracing::warn!(error = %e, "publishing site state failed");
        }
        for site in sites.values() {
            if let Err(e) = site.renew_fleet_slots().await {
                tracing::warn!(site = %site.policy.name, error = %e, "renewing connection slots failed");
            }
        }
    }
}

/// Parked jobs moved back per campaign and shard in one script call.
const UNPARK_BATCH: usize = 1000;
/// Most parked jobs one node moves back per second and shard (the rest next second).
const UNPARK_PER_TICK: usize = 50_000;

/// When this node moves a paused campaign's parked jobs back for a drain order. An order
/// covers the jobs queued before it: those leave for good, but the campaign's later jobs are
/// parked again at the gate. So the jobs are moved back once the order has been seen for
/// [`DRAIN_SETTLE`] (every node's drain view, read each second, has it by then), and again
/// only every [`DRAIN_REPEAT`] while it stands (a node whose view was late parked some again):
/// a paused campaign's later jobs rest instead of circulating every second.
#[derive(Debug, Default)]
pub struct DrainPacing(
    HashMap<(u16, u64, String), (tokio::time::Instant, Option<tokio::time::Instant>)>,
);

/// How long a drain order of a paused campaign is seen before its parked jobs move back.
const DRAIN_SETTLE: Duration = Duration::from_secs(2);
/// How often a standing drain order of a paused campaign moves its parked jobs back again.
const DRAIN_REPEAT: Duration = Duration::from_secs(60);

impl DrainPacing {
    /// Whether the parked jobs of `key` move back now.
    fn due(&mut self, key: (u16, u64, String), now: tokio::time::Instant) -> bool {
        let (seen, last) = self.0.entry(key).or_insert((now, None));
        now.duration_since(*seen) >= DRAIN_SETTLE
            && last.is_none_or(|l| now.duration_since(l) >= DRAIN_REPEAT)
    }

    /// Every parked job of `key` was moved back at `now` (a move cut short by the per-tick
    /// cap, or by an error, goes on next tick).
    fn moved_all(&mut self, key: &(u16, u64, String), now: tokio::time::Instant) {
        if let Some((_, last)) = self.0.get_mut(key) {
            *last = Some(now);
        }
    }
}

/// Moves the parked jobs of campaigns that are no longer paused (resumed: they go out;
/// cancelled: they end `cancelled` at the gate), or that an operator drained (they end as the
/// drain order says; paced, see [`DrainPacing`]), back to their shards' ready
/// streams. Every node does this; the script makes each move happen once.
pub async fn unpark(
    con: &mut Redis,
    shards: u16,
    metrics: &Metrics,
    pacing: &mut DrainPacing,
) -> redis::RedisResult<()> {
    use hikyaku_queue_schema::keys::STATE_FIELD;
    use hikyaku_queue_schema::scripts;
    let now = crate::clock::now();
    let mut seen = std::collections::HashSet::new();
    for shard in 0..shards {
        let parked = scripts::parked_campaigns(con, shard).await?;
        if parked.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for c in &parked {
            pipe.hget(Keys::campaign(*c), STATE_FIELD);
            pipe.hget(
                Keys::drains(),
                hikyaku_queue_schema::drain::Scope::Campaign(*c).field(),
            );
        }
        let replies: Vec<(Option<String>, Option<String>)> = {
            let flat: Vec<redis::Value> = pipe.query_async(con).await?;
            flat.chunks(2)
                .map(|p| {
                    let state = p
                        .first()
                        .and_then(|v| redis::from_redis_value(v.clone()).ok())
                        .flatten();
                    let drained = p
                        .get(1)
                        .and_then(|v| redis::from_redis_value(v.clone()).ok())
                        .flatten();
                    (state, drained)
                })
                .collect()
        };
        for (campaign, (state, drained)) in parked.into_iter().zip(replies) {
            let mut drain_key = None;
            if state.as_deref() == Some("paused") {
                // A drain order ends a paused campaign's jobs too: they go back to be
                // drained (paced).
                let Some(order) = drained else {
                    continue;
                };
                let key = (shard, campaign, order);
                seen.insert(key.clone());
                if !pacing.due(key.clone(), now) {
                    continue;
                }
                drain_key = Some(key);
            }
            let mut moved = 0;
            let mut all = false;
            while moved < UNPARK_PER_TICK {
                let n = scripts::unpark(con, shard, campaign, UNPARK_BATCH).await?;
                moved += n;
                if n < UNPARK_BATCH {
                    all = true;
                    break;
                }
            }
            if let (true, Some(key)) = (all, &drain_key) {
                pacing.moved_all(key, now);
            }
            if moved > 0 {
                tracing::info!(
                    shard,
                    campaign,
                    moved,
                    "parked jobs go back: the campaign is no longer paused"
                );
            }
            metrics.parked("unparked", moved);
        }
    }
    // Orders no longer met (lifted, or their campaign resumed or gone) are forgotten.
    pacing.0.retain(|k, _| seen.contains(k));
    Ok(())
}

/// Writes this node's view of every site to `hk:node:<node>:sites`, expiring shortly.
pub async fn publish(
    con: &mut Redis,
    sites: &BTreeMap<String, Arc<Site>>,
    node_id: &str,
) -> redis::RedisResult<()> {
    let key = Keys::node_sites(node_id);
    let now = crate::clock::now_ms();
    let fields: Vec<(&str, Vec<u8>)> = sites
        .iter()
        .map(|(name, site)| (name.as_str(), site.state(now).encode()))
        .collect();
    redis::pipe()
        .atomic()
        .del(&key)
        .hset_multiple(&key, &fields)
        .expire(&key, hikyaku_queue_schema::node::TTL_S as i64)
        .query_async(con)
        .await
}

/// The next reply of a pipeline, decoded; a missing reply reads as the type's default.
fn next_reply<T: redis::FromRedisValue + Default>(
    it: &mut impl Iterator<Item = redis::Value>,
) -> redis::RedisResult<T> {
    Ok(it
        .next()
        .map(redis::from_redis_value)
        .transpose()?
        .unwrap_or_default())
}

/// One reading of every site's control hash and every shard's depths.
pub async fn poll(
    con: &mut Redis,
    sites: &BTreeMap<String, Arc<Site>>,
    shards: u16,
    inflight: &InFlight,
    metrics: &Metrics,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for name in sites.keys() {
        pipe.hgetall(Keys::site_ctl(name));
    }
    for shard in 0..shards {
        pipe.xlen(Keys::ready(shard)).zcard(Keys::retry(shard));
        pipe.cmd("XRANGE")
            .arg(Keys::ready(shard))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
    }
    let replies: Vec<redis::Value> = pipe.query_async(con).await?;
    let mut it = replies.into_iter();
    for site in sites.values() {
        let ctl: HashMap<String, String> = next_reply(&mut it)?;
        site.set_paused(ctl.get("paused").is_some_and(|v| v == "1"));
        let rate = ctl
            .get("rate")
            .and_then(|r| r.parse::<f64>().ok())
            .filter(|r| r.is_finite() && *r >= 0.001)
            .map(Rate::per_second);
        site.set_rate_override(rate);
    }
    for shard in 0..shards {
        let ready: u64 = next_reply(&mut it)?;
        let retry: u64 = next_reply(&mut it)?;
        metrics.depths(shard, ready, retry, inflight.in_flight());
        // The head entry's id is its enqueue time (ms-seq): its age is the shard's queue age.
        let head: Vec<(String, redis::Value)> = next_reply(&mut it)?;
        let age = head
            .first()
            .and_then(|(id, _)| hikyaku_queue_schema::keys::stream_id_ms(id))
            .map_or(0.0, |ms| {
                crate::clock::now_ms().saturating_sub(ms) as f64 / 1000.0
            });
        metrics.oldest_age(shard, age);
    }
    // On a cluster, every master's (memory: the one nearest its limit).
    let masters: Vec<RedisInfo> = con
        .info_everywhere("all")
        .await?
        .iter()
        .map(|text| RedisInfo::parse(text))
        .collect();
    metrics.redis(&RedisInfo::combine(&masters));
    metrics.resident_memory();
    Ok(())
}
