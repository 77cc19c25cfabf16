//! Intake: jobs from the shard streams into the node and their next places back to Redis.
//!
//! - [`membership`]: heartbeats in `hk:nodes` and which shards this node reads (rendezvous
//!   hashing over the live nodes).
//! - [`shard`]: a shard consumer (XREADGROUP sized to the free [`inflight`] budget, own-pending
//!   replay, idle refresh, reclaim of idle entries of nodes that are not live); [`streams`]
//!   parses its replies.
//! - [`inflight`]: the in-flight budget and the entries this node holds.
//! - [`flusher`]: finished and deferred jobs written to Redis in atomic batches.
//! - [`mover`]: due retries back to the ready streams.

pub mod flusher;
pub mod inflight;
pub mod membership;
pub mod mover;
pub mod shard;
pub mod streams;
