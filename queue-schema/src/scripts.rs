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

static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH_LUA));
static DEFER: LazyLock<Script> = LazyLock::new(|| Script::new(DEFER_LUA));
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE_LUA));
static MOVE_DUE: LazyLock<Script> = LazyLock::new(|| Script::new(MOVE_DUE_LUA));

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
