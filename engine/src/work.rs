//! A job in the engine's hands, and the record of where it came from.

use std::sync::Arc;

use hikyaku_queue_schema::Job;

/// A job read from a shard's ready stream and not yet finished or deferred.
#[derive(Debug)]
pub struct Work {
    /// Shard the entry was read from.
    pub shard: u16,
    /// Ready-stream entry id; acked when the job leaves the engine.
    pub entry: Arc<str>,
    /// The decoded job.
    pub job: Job,
    /// Delivered to this node by XAUTOCLAIM or own-pending replay: another attempt may already
    /// have reached the destination (the crash duplicate window).
    pub redelivered: bool,
    /// Keeps the job's campaign tracked on this node while the job is here.
    pub hold: crate::control::campaigns::Hold,
}
