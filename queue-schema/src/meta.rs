//! `hk:meta`: the layout every writer and reader of the queues must agree on.

use redis::aio::ConnectionLike;

use crate::keys::{Keys, SCHEMA_VERSION};

/// The layout recorded in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Schema version of whoever first wrote the queues.
    pub schema: u32,
    /// Shard count every writer must use.
    pub shards: u16,
}

/// Records this build's schema and `shards` if Redis has no layout yet, and returns the layout
/// in force (which may differ: the caller decides whether that is an error or a value to adopt).
pub async fn record_or_read<C: ConnectionLike>(
    con: &mut C,
    shards: u16,
) -> redis::RedisResult<Layout> {
    let (_, _, schema, recorded): ((), (), Option<u32>, Option<u16>) = redis::pipe()
        .cmd("HSETNX")
        .arg(Keys::meta())
        .arg("schema")
        .arg(SCHEMA_VERSION)
        .cmd("HSETNX")
        .arg(Keys::meta())
        .arg("shards")
        .arg(shards)
        .cmd("HGET")
        .arg(Keys::meta())
        .arg("schema")
        .cmd("HGET")
        .arg(Keys::meta())
        .arg("shards")
        .query_async(con)
        .await?;
    Ok(Layout {
        schema: schema.unwrap_or(SCHEMA_VERSION),
        shards: recorded.unwrap_or(shards),
    })
}
