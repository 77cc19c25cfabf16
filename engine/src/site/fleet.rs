//! A site's limits for the whole fleet: messages per second through a GCRA limiter in Redis
//! that every engine node leases tokens from, and connection slots counted in Redis.
//!
//! Rate: a connection asks the site's local token pool first; when it holds too few, one caller
//! at a time (the others wait on the leasing lock) leases batches from `hk:site:<site>:tat`
//! ([`scripts::lease`]), sized to local demand and at most `lease` worth of the rate, so Redis
//! sees one call per batch, not per message. The pool itself sits behind a short lock, so a
//! pipelining session refilling its window takes leased tokens while another caller is still
//! gathering its batch. Leased tokens not used within [`LEASE_VALID`] are dropped: a token
//! stands for a time slot of the fleet's schedule, and spending it much later would let a
//! second carry more than the rate. The site's governor limiter still shapes the node's own
//! sends within what it leased.
//!
//! Connections: before a connection task opens a session it takes a slot of
//! `hk:site:{<site>}:conns` ([`scripts::take_slot`]); the slot is renewed every second by the
//! control loop and given back when the connection ends, and a dead node's slots lapse after
//! `slot_ttl`. A node refused a slot does not ask again for [`SLOT_RETRY`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hikyaku_queue_schema::scripts;
use hikyaku_queue_schema::Redis;

use crate::clock;
use crate::meter::Meter;

/// How long leased tokens stay usable.
pub const LEASE_VALID: Duration = Duration::from_millis(50);
/// How long a node refused a connection slot waits before asking again.
pub const SLOT_RETRY: Duration = Duration::from_millis(250);

/// What every site's fleet limits share.
#[derive(Debug, Clone)]
pub struct FleetDeps {
    /// Redis (multiplexed; lease calls are short).
    pub con: Redis,
    /// This node's id (names its connection slots).
    pub node: Arc<str>,
    /// Most of a site's rate one lease takes (e.g. 10 ms worth).
    pub lease: Duration,
    /// How long a connection slot lasts without renewal.
    pub slot_ttl: Duration,
    /// Live nodes of the fleet, as the last heartbeat saw them ([`crate::intake::membership`]).
    pub live_nodes: Arc<AtomicUsize>,
}

/// Tokens leased and not yet used.
#[derive(Debug)]
struct Pool {
    tokens: u32,
    valid_until: tokio::time::Instant,
}

impl Pool {
    /// The tokens still usable (none once the lease lapsed).
    fn live_tokens(&self) -> u32 {
        if tokio::time::Instant::now() < self.valid_until {
            self.tokens
        } else {
            0
        }
    }
}

/// One site's share of the fleet limits on this node.
#[derive(Debug)]
pub struct FleetLimits {
    site: String,
    deps: FleetDeps,
    /// Leased tokens; held only to count them.
    pool: Mutex<Pool>,
    /// One caller leases at a time.
    leasing: tokio::sync::Mutex<()>,
    /// Slot members this node holds for the site.
    slots: Mutex<Vec<String>>,
    next_slot: AtomicU64,
    /// No slot requests before this time (ms), after a refusal.
    refused_until_ms: AtomicU64,
    /// Other nodes were waiting for a slot at the last renewal.
    contended: AtomicBool,
    /// The last slot request was refused.
    refused: AtomicBool,
    /// Tokens this node leases per second, smoothed ([`FleetLimits::node_rate`]).
    leased: Meter,
}

/// The lease request for a site at `rate` msg/s: `(interval µs, burst tokens, tokens to ask)`
/// for a caller that needs `want` now and has `demand` jobs waiting. The burst a quiet site may
/// take at once is 1% of a second's worth, so no second carries much over the rate.
pub fn lease_request(rate: f64, lease: Duration, want: u32, demand: u32) -> (u64, u32, u32) {
    let rate = rate.max(1e-3);
    let interval_us = ((1e6 / rate).round() as u64).max(1);
    let burst = (rate / 100.0) as u32;
    let per_lease = ((rate * lease.as_secs_f64()) as u32).max(1);
    let ask = demand.clamp(want.max(1), per_lease.max(want.max(1)));
    (interval_us, burst, ask)
}

impl FleetLimits {
    /// Limits of `site` shared through `deps`.
    pub fn new(site: &str, deps: FleetDeps) -> Self {
        FleetLimits {
            site: site.to_owned(),
            deps,
            pool: Mutex::new(Pool {
                tokens: 0,
                valid_until: tokio::time::Instant::now(),
            }),
            leasing: tokio::sync::Mutex::new(()),
            slots: Mutex::new(Vec::new()),
            next_slot: AtomicU64::new(0),
            refused_until_ms: AtomicU64::new(0),
            contended: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            leased: Meter::new(clock::now_ms(), 0.5),
        }
    }

    /// Takes between 1 and `want` send tokens at `rate` msg/s, waiting while the fleet is at
    /// the rate. `demand` (jobs waiting here) sizes the lease.
    ///
    /// It gathers `want` before returning (a lease that grants fewer waits for the rest to come
    /// free, one emission interval each), and returns fewer only rather than let what it holds
    /// lapse. A pipelining session sends its tokens in one write and then waits a round trip
    /// for the replies: handed one or two tokens per round trip under contention, a session on
    /// a long path carried a fraction of the rate however many connections it had.
    pub async fn take(&self, want: u32, rate: f64, demand: u32) -> u32 {
        let want = want.max(1);
        if self.take_from_pool(want, want) > 0 {
            return want;
        }
        let _leasing = self.leasing.lock().await;
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.take_from_pool(want, want) > 0 {
                return want;
            }
            let held = self.pool().live_tokens();
            let (interval, burst, ask) =
                lease_request(rate, self.deps.lease, want.saturating_sub(held), demand);
            let mut con = self.deps.con.clone();
            let wait = match scripts::lease(&mut con, &self.site, interval, burst, ask).await {
                Ok(l) if l.granted > 0 => {
                    {
                        // Tokens of a lapsed lease are gone; the new ones start a fresh one.
                        let mut pool = self.pool();
                        let live = pool.live_tokens();
                        if live == 0 {
                            pool.valid_until = tokio::time::Instant::now() + LEASE_VALID;
                        }
                        pool.tokens = live + l.granted;
                    }
                    crate::metrics::Metrics.lease(&self.site, l.granted);
                    self.leased.add(u64::from(l.granted));
                    // The rest comes free one emission interval per token; the limiter keeps
                    // no more than its burst of unclaimed time, so ask again before more
                    // than that accrues.
                    let held = self.pool().live_tokens();
                    let missing = want.saturating_sub(held).min(burst.max(1));
                    Duration::from_micros(u64::from(missing) * interval)
                }
                Ok(l) => {
                    // The fleet is at the rate: the next token is free in `wait_us`.
                    Duration::from_micros(l.wait_us).max(Duration::from_micros(100))
                }
                Err(e) => {
                    tracing::warn!(site = %self.site, error = %e, "leasing send tokens failed; retrying");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    wait
                }
            };
            // Send what is held rather than let it lapse waiting for more.
            let lapses = self.pool().valid_until <= tokio::time::Instant::now() + wait;
            if lapses {
                let n = self.take_from_pool(1, want);
                if n > 0 {
                    return n;
                }
            }
            if self.pool().live_tokens() < want {
                tokio::time::sleep(wait).await;
            }
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes at most `most` live tokens from the pool if it holds at least `least`; how many.
    fn take_from_pool(&self, least: u32, most: u32) -> u32 {
        let mut pool = self.pool();
        let live = pool.live_tokens();
        if live < least.max(1) {
            return 0;
        }
        let n = live.min(most);
        pool.tokens = live - n;
        n
    }

    /// The rate this node actually gets of a site whose fleet rate is `fleet_rate`: what it
    /// leased over the last second or so (smoothed), at least an even share (the fleet rate
    /// over the live nodes, also the answer until it has leased anything) and at most all of
    /// it. A node refusing jobs (its queue is full) paces their return at this rate: at the fleet rate, three busy nodes would each promise
    /// returns three times faster than they can send, and the refused jobs would drift ever
    /// further into the future while the queues ran dry.
    pub fn node_rate(&self, fleet_rate: f64) -> f64 {
        let share = self.leased.update(clock::now_ms());
        let even = fleet_rate / self.deps.live_nodes.load(Ordering::Relaxed).max(1) as f64;
        share.clamp(even, fleet_rate)
    }

    /// Takes one leased token if one is ready now (never calls Redis).
    pub fn try_take_one(&self) -> bool {
        self.take_from_pool(1, 1) == 1
    }

    /// Returns a token [`FleetLimits::try_take_one`] took and could not use.
    pub fn untake_one(&self) {
        let mut pool = self.pool();
        pool.tokens = pool.live_tokens().saturating_add(1);
    }

    /// Takes a connection slot if the fleet holds fewer than `cap`; `None` when the cap is
    /// reached (or Redis failed), and then for [`SLOT_RETRY`] without asking.
    pub async fn take_slot(&self, cap: u32) -> Option<String> {
        if self.refused_now() {
            return None;
        }
        let member = format!(
            "{}/{}",
            self.deps.node,
            self.next_slot.fetch_add(1, Ordering::Relaxed)
        );
        let mut con = self.deps.con.clone();
        let ttl = self.deps.slot_ttl.as_millis() as u64;
        match scripts::take_slot(&mut con, &self.site, &self.deps.node, &member, cap, ttl).await {
            Ok(true) => {
                self.refused.store(false, Ordering::Relaxed);
                self.held().push(member.clone());
                Some(member)
            }
            Ok(false) => {
                self.refuse_for_a_while();
                None
            }
            Err(e) => {
                tracing::warn!(site = %self.site, error = %e, "taking a connection slot failed");
                self.refuse_for_a_while();
                None
            }
        }
    }

    /// Whether a slot was refused so recently that asking again is pointless.
    pub fn refused_now(&self) -> bool {
        clock::now_ms() < self.refused_until_ms.load(Ordering::Relaxed)
    }

    fn refuse_for_a_while(&self) {
        self.refused.store(true, Ordering::Relaxed);
        self.refused_until_ms.store(
            clock::now_ms() + SLOT_RETRY.as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives a slot back, before the connection counts as closed (so the next connection of
    /// this node is not refused by the slot it is replacing).
    pub async fn release_slot(&self, member: String) {
        self.held().retain(|m| *m != member);
        let mut con = self.deps.con.clone();
        if let Err(e) = scripts::release_slot(&mut con, &self.site, &member).await {
            tracing::debug!(site = %self.site, error = %e, "giving a connection slot back failed; it lapses");
        }
    }

    /// Renews the slots this node holds (the control loop, every second) and learns whether
    /// other nodes are waiting for one ([`FleetLimits::contended`]).
    pub async fn renew(&self) -> redis::RedisResult<()> {
        let members = self.held().clone();
        let mut con = self.deps.con.clone();
        let ttl = self.deps.slot_ttl.as_millis() as u64;
        let (_, waiting, _) =
            scripts::renew_slots(&mut con, &self.site, &self.deps.node, &members, ttl).await?;
        self.contended.store(waiting > 0, Ordering::Relaxed);
        Ok(())
    }

    /// Whether other nodes were waiting for a slot at the last renewal: this node's idle
    /// connections should close rather than sit on slots.
    pub fn contended(&self) -> bool {
        self.contended.load(Ordering::Relaxed)
    }

    /// Whether this node should hold no more jobs for the site: the fleet refused its last
    /// slot request and it has no connection, so jobs would only sit here holding in-flight
    /// budget that other sites' jobs need.
    pub fn starved(&self, open: u32) -> bool {
        open == 0 && self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_sized_to_demand_within_the_lease_window() {
        let lease = Duration::from_millis(10);
        // 1,000/s: 1,000 µs apart, burst 10, at most 10 per lease.
        assert_eq!(lease_request(1000.0, lease, 1, 500), (1000, 10, 10));
        // Little demand: only what is needed.
        assert_eq!(lease_request(1000.0, lease, 1, 3), (1000, 10, 3));
        // A slow site still leases one at a time, never zero.
        assert_eq!(lease_request(2.0, lease, 1, 50), (500_000, 0, 1));
        // A pipelined session that needs more than a lease window gets what it needs.
        assert_eq!(lease_request(100.0, lease, 8, 50).2, 8);
    }
}
