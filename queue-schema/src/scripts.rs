//! The Lua scripts that move jobs between places, and typed helpers that invoke them.
//!
//! Scripts are the only transitions of a job between the ready stream, the retry set and the
//! events stream (see the crate docs); each runs atomically on one hash slot. The helpers use
//! `EVALSHA` with a fallback to `EVAL` (the `redis` crate's [`redis::Script`]), so a Redis that
//! restarted and lost its script cache keeps working.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::Script;

use crate::keys::{Keys, ENGINE_GROUP};

/// Source of `lua/finish.lua`.
pub const FINISH_LUA: &str = include_str!("../lua/finish.lua");
/// Source of `lua/defer.lua`.
pub const DEFER_LUA: &str = include_str!("../lua/defer.lua");
/// Source of `lua/enqueue.lua`.
pub const ENQUEUE_LUA: &str = include_str!("../lua/enqueue.lua");
/// Source of `lua/move_due.lua`.
pub const MOVE_DUE_LUA: &str = include_str!("../lua/move_due.lua");
/// Source of `lua/park.lua`.
pub const PARK_LUA: &str = include_str!("../lua/park.lua");
/// Source of `lua/unpark.lua`.
pub const UNPARK_LUA: &str = include_str!("../lua/unpark.lua");
/// Source of `lua/test_done.lua`.
pub const TEST_DONE_LUA: &str = include_str!("../lua/test_done.lua");
/// Source of `lua/lease.lua`.
pub const LEASE_LUA: &str = include_str!("../lua/lease.lua");
/// Source of `lua/fleet_lib.lua`: helpers the fleet scripts (slot, renew_slots, heartbeat,
/// forget) are prefixed with.
pub const FLEET_LIB_LUA: &str = include_str!("../lua/fleet_lib.lua");
/// Source of `lua/slot.lua`.
pub const SLOT_LUA: &str = include_str!("../lua/slot.lua");
/// Source of `lua/renew_slots.lua`.
pub const RENEW_SLOTS_LUA: &str = include_str!("../lua/renew_slots.lua");
/// Source of `lua/forget.lua`.
pub const FORGET_LUA: &str = include_str!("../lua/forget.lua");
/// Source of `lua/heartbeat.lua`.
pub const HEARTBEAT_LUA: &str = include_str!("../lua/heartbeat.lua");

static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH_LUA));
static DEFER: LazyLock<Script> = LazyLock::new(|| Script::new(DEFER_LUA));
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE_LUA));
static MOVE_DUE: LazyLock<Script> = LazyLock::new(|| Script::new(MOVE_DUE_LUA));
static PARK: LazyLock<Script> = LazyLock::new(|| Script::new(PARK_LUA));
static UNPARK: LazyLock<Script> = LazyLock::new(|| Script::new(UNPARK_LUA));
static TEST_DONE: LazyLock<Script> = LazyLock::new(|| Script::new(TEST_DONE_LUA));
static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE_LUA));
static SLOT: LazyLock<Script> = LazyLock::new(|| fleet_script(SLOT_LUA));
static RENEW_SLOTS: LazyLock<Script> = LazyLock::new(|| fleet_script(RENEW_SLOTS_LUA));
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| fleet_script(HEARTBEAT_LUA));
static FORGET: LazyLock<Script> = LazyLock::new(|| fleet_script(FORGET_LUA));

/// A fleet script: its source prefixed with [`FLEET_LIB_LUA`].
fn fleet_script(body: &str) -> Script {
    Script::new(&[FLEET_LIB_LUA, body].concat())
}

/// A job that reached an end state: its ready-stream entry id and its encoded event.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Ready-stream entry id.
    pub entry: String,
    /// Encoded [`crate::Event`].
    pub event: Vec<u8>,
}

/// A job to try again: its entry id, due time and re-encoded job.
#[derive(Debug, Clone)]
pub struct Deferred {
    /// Ready-stream entry id.
    pub entry: String,
    /// Due time in ms since the epoch.
    pub due_ms: u64,
    /// Encoded [`crate::Job`] with its attempt counter advanced as the caller decided.
    pub job: Vec<u8>,
    /// Encoded [`crate::Event`] with status [`crate::EventStatus::Deferred`] for a deferred
    /// attempt (appended to the events stream for the record), `None` when the job was only
    /// held back.
    pub event: Option<Vec<u8>>,
}

/// Acknowledges and deletes finished entries of `shard` and appends their events, atomically.
/// Returns how many events were written (entries no longer pending are skipped).
pub async fn finish<C: ConnectionLike>(
    con: &mut C,
    shard: u16,
    batch: &[Finished],
) -> redis::RedisResult<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let mut inv = FINISH.prepare_invoke();
    inv.key(Keys::ready(shard))
        .key(Keys::events(shard))
        .arg(ENGINE_GROUP);
    for f in batch {
        inv.arg(&f.entry).arg(&f.event[..]);
    }
    inv.invoke_async(con).await
}

/// Acknowledges and deletes entries of `shard` and adds their jobs to the retry set, atomically.
/// Returns how many were moved (entries no longer pending are skipped).
pub async fn defer<C: ConnectionLike>(
    con: &mut C,
    shard: u16,
    batch: &[Deferred],
) -> redis::RedisResult<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let mut inv = DEFER.prepare_invoke();
    inv.key(Keys::ready(shard))
        .key(Keys::retry(shard))
        .key(Keys::events(shard))
        .arg(ENGINE_GROUP);
    for d in batch {
        inv.arg(&d.entry)
            .arg(d.due_ms)
            .arg(&d.job[..])
            .arg(d.event.as_deref().unwrap_or_default());
    }
    inv.invoke_async(con).await
}

/// A job held back because its campaign is paused: its entry id, campaign and encoded job.
#[derive(Debug, Clone)]
pub struct Parked {
    /// Ready-stream entry id.
    pub entry: String,
    /// The job's campaign.
    pub campaign: u64,
    /// Encoded [`crate::Job`].
    pub job: Vec<u8>,
}

/// Acknowledges and deletes entries of `shard` whose campaigns are paused and parks their jobs
/// in the campaigns' parking lists, atomically: they stay out of the ready stream and the
/// retry set (no reader or mover touches them) until [`unpark`] moves them back. Returns how
/// many were parked (entries no longer pending are skipped).
pub async fn park<C: ConnectionLike>(
    con: &mut C,
    shard: u16,
    batch: &[Parked],
) -> redis::RedisResult<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let mut campaigns: Vec<u64> = batch.iter().map(|p| p.campaign).collect();
    campaigns.sort_unstable();
    campaigns.dedup();
    let mut inv = PARK.prepare_invoke();
    inv.key(Keys::ready(shard)).key(Keys::parked(shard));
    for c in &campaigns {
        inv.key(Keys::parked_jobs(shard, *c));
    }
    inv.arg(ENGINE_GROUP);
    for p in batch {
        let index = campaigns.binary_search(&p.campaign).unwrap_or(0) + 3;
        inv.arg(&p.entry).arg(index).arg(&p.job[..]);
    }
    inv.invoke_async(con).await
}

/// The campaigns with jobs parked on `shard`.
pub async fn parked_campaigns<C: ConnectionLike>(
    con: &mut C,
    shard: u16,
) -> redis::RedisResult<Vec<u64>> {
    redis::cmd("SMEMBERS")
        .arg(Keys::parked(shard))
        .query_async(con)
        .await
}

/// Moves up to `limit` of `campaign`'s parked jobs on `shard` back to the ready stream,
/// atomically. Returns how many moved (fewer than `limit`: the list is empty now).
pub async fn unpark<C: ConnectionLike>(
    con: &mut C,
    shard: u16,
    campaign: u64,
    limit: usize,
) -> redis::RedisResult<usize> {
    UNPARK
        .key(Keys::parked_jobs(shard, campaign))
        .key(Keys::ready(shard))
        .key(Keys::parked(shard))
        .arg(campaign)
        .arg(limit.max(1))
        .invoke_async(con)
        .await
}

/// Counts `ended` jobs of test send `test_id` as ended; when none is left, its snapshot
/// expires `linger_s` later (field `left` of the snapshot hash holds the count, set by the test
/// send). Returns the jobs still to end.
pub async fn test_jobs_done<C: ConnectionLike>(
    con: &mut C,
    test_id: u64,
    ended: u64,
    linger_s: u64,
) -> redis::RedisResult<u64> {
    TEST_DONE
        .key(Keys::campaign(test_id))
        .arg(ended)
        .arg(linger_s)
        .invoke_async(con)
        .await
}

/// Moves up to `limit` jobs of `shard` whose due time is at or before `now_ms` back to the ready
/// stream, atomically. Returns how many moved.
pub async fn move_due<C: ConnectionLike>(
    con: &mut C,
    shard: u16,
    now_ms: u64,
    limit: usize,
) -> redis::RedisResult<usize> {
    MOVE_DUE
        .key(Keys::retry(shard))
        .key(Keys::ready(shard))
        .arg(now_ms)
        .arg(limit)
        .invoke_async(con)
        .await
}

/// Appends a campaign's jobs for `shard` (in ascending `seq` order) to its ready stream, skipping
/// any `seq` at or below the campaign's high mark on this shard: replaying a page after a crash
/// enqueues nothing twice. Returns how many were added.
pub async fn enqueue<C: ConnectionLike>(
    con: &mut C,
    shard: u16,
    campaign: u64,
    jobs: &[(u64, Vec<u8>)],
) -> redis::RedisResult<usize> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let mut inv = ENQUEUE.prepare_invoke();
    inv.key(Keys::ready(shard))
        .key(Keys::expanded(shard))
        .arg(campaign);
    for (seq, job) in jobs {
        inv.arg(*seq).arg(&job[..]);
    }
    inv.invoke_async(con).await
}

/// Tokens granted by [`lease`], or when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Messages the caller may send now (0 when the fleet is at the rate).
    pub granted: u32,
    /// When nothing was granted: µs until the next token is free.
    pub wait_us: u64,
}

/// Takes up to `want` send tokens of `site` from the fleet-wide GCRA limiter: one token per
/// `interval_us` (1e6 / rate), plus a burst of `burst` tokens for a site that was quiet.
/// Every node of the fleet leases from the same key, so the site's rate holds for the fleet.
pub async fn lease<C: ConnectionLike>(
    con: &mut C,
    site: &str,
    interval_us: u64,
    burst: u32,
    want: u32,
) -> redis::RedisResult<Lease> {
    let (granted, wait_us): (u32, i64) = LEASE
        .key(Keys::site_tat(site))
        .arg(interval_us.max(1))
        .arg(burst)
        .arg(want.max(1))
        .invoke_async(con)
        .await?;
    Ok(Lease {
        granted,
        wait_us: wait_us.max(0) as u64,
    })
}

/// Takes (or renews) the connection slot `member` (`<node>/<n>`) of `site` for `node` if
/// fewer than `cap` are held fleet-wide and `node` holds less than its fair share while other
/// nodes want slots too; the slot lapses `ttl_ms` after its last renewal. Returns whether it
/// is held.
pub async fn take_slot<C: ConnectionLike>(
    con: &mut C,
    site: &str,
    node: &str,
    member: &str,
    cap: u32,
    ttl_ms: u64,
) -> redis::RedisResult<bool> {
    let held: i64 = SLOT
        .key(Keys::site_conns(site))
        .key(Keys::site_conn_wanted(site))
        .arg(member)
        .arg(cap)
        .arg(ttl_ms)
        .arg(node)
        .invoke_async(con)
        .await?;
    Ok(held == 1)
}

/// Extends the slots `members` of `site` that `node` still holds by `ttl_ms`. Returns how
/// many were extended, how many other nodes are waiting for a slot of the site, and how many
/// nodes hold or want slots of it (`node` included).
pub async fn renew_slots<C: ConnectionLike>(
    con: &mut C,
    site: &str,
    node: &str,
    members: &[String],
    ttl_ms: u64,
) -> redis::RedisResult<(usize, usize, usize)> {
    let mut inv = RENEW_SLOTS.prepare_invoke();
    inv.key(Keys::site_conns(site))
        .key(Keys::site_conn_wanted(site))
        .arg(ttl_ms)
        .arg(node);
    for m in members {
        inv.arg(m);
    }
    inv.invoke_async(con).await
}

/// Gives the connection slot `member` of `site` back.
pub async fn release_slot<C: ConnectionLike>(
    con: &mut C,
    site: &str,
    member: &str,
) -> redis::RedisResult<()> {
    redis::cmd("ZREM")
        .arg(Keys::site_conns(site))
        .arg(member)
        .query_async(con)
        .await
}

/// The fleet as one heartbeat saw it: the server's time and every registered node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The Redis server's time, ms since the epoch.
    pub now_ms: u64,
    /// Every node with the time its heartbeat runs out (ms); those in the past are dead.
    pub nodes: Vec<(String, u64)>,
}

impl Members {
    /// (live, dead): nodes whose heartbeat has not run out, and those whose has.
    fn split(&self) -> (Vec<String>, Vec<String>) {
        let (live, dead): (Vec<_>, Vec<_>) = self
            .nodes
            .iter()
            .partition(|(_, until)| *until > self.now_ms);
        let names = |v: Vec<&(String, u64)>| v.into_iter().map(|(n, _)| n.clone()).collect();
        (names(live), names(dead))
    }

    /// Nodes whose heartbeat has not run out, sorted.
    pub fn live(&self) -> Vec<String> {
        let mut v = self.split().0;
        v.sort();
        v
    }

    /// Nodes whose heartbeat ran out.
    pub fn dead(&self) -> Vec<String> {
        self.split().1
    }
}

/// Registers `node` as alive for `ttl_ms` (0: removes it — a graceful leave) and returns the
/// membership as of that moment.
pub async fn heartbeat<C: ConnectionLike>(
    con: &mut C,
    node: &str,
    ttl_ms: u64,
) -> redis::RedisResult<Members> {
    let v: Vec<redis::Value> = HEARTBEAT
        .key(Keys::nodes())
        .arg(node)
        .arg(ttl_ms)
        .invoke_async(con)
        .await?;
    let mut it = v.into_iter();
    let now_ms: u64 = match it.next() {
        Some(v) => redis::from_redis_value(v)?,
        None => 0,
    };
    let mut nodes = Vec::new();
    while let (Some(n), Some(t)) = (it.next(), it.next()) {
        nodes.push((redis::from_redis_value(n)?, redis::from_redis_value(t)?));
    }
    Ok(Members { now_ms, nodes })
}

/// Removes a dead node from the membership (once its work has been taken over), unless its
/// heartbeat came back meanwhile. Returns whether it was removed.
pub async fn forget_node<C: ConnectionLike>(con: &mut C, node: &str) -> redis::RedisResult<bool> {
    let removed: i64 = FORGET
        .key(Keys::nodes())
        .arg(node)
        .invoke_async(con)
        .await?;
    Ok(removed == 1)
}
