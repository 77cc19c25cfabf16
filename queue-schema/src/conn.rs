//! How every component reaches the queues: one Redis server or a Redis Cluster, behind one
//! connection type that reconnects by itself.
//!
//! A queue URL is either
//! - `redis://host:port[/db]` (or `rediss://`, `unix://`): one server, through redis-rs's
//!   `ConnectionManager`, which reconnects with exponential backoff after the server went away, or
//! - `redis+cluster://[user:password@]host:port[,host:port…]`: seed nodes of a Redis Cluster
//!   (the credentials apply to every node; no TLS), through redis-rs's `cluster_async`, which
//!   learns the slot map, follows `MOVED`/`ASK` and reconnects to nodes.
//!
//! A request in flight when the server goes away fails; every caller already treats a Redis
//! error as "try again after a backoff", and the next request waits for the reconnection.
//!
//! Every script and `MULTI` block uses keys of one hash tag (the key map in the crate docs), so it
//! runs on a cluster unchanged. Plain pipelines over many shards or sites (depth polls, queue
//! statistics, bulk enqueues) are split here on a cluster: one pipeline per hash tag, sent
//! concurrently, replies put back in order; a keyless command in such a pipeline goes to one
//! master ([`Redis::info_everywhere`] asks every master). On one server a pipeline goes as it is. redis-rs refuses cross-slot pipelines on a
//! cluster rather than splitting them, hence this layer.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Arg, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// The URL scheme that names a Redis Cluster by its seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// How long to wait for a TCP connection to a Redis node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a shared connection waits for a reply before the request fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A reply wait long enough for any blocking read the components issue (they block ≤ 5 s).
const BLOCKING_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the queues are: parsed once, connected as often as a component needs its own
/// connection (a blocking stream read wants one of its own). Its `Debug` shows no credentials.
#[derive(Clone)]
pub enum RedisClient {
    /// One server.
    Single(redis::Client),
    /// A cluster, by its seed nodes (`redis://host:port` each).
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(c) => {
                let info = c.get_connection_info();
                write!(f, "RedisClient::Single({})", info.addr())
            }
            Self::Cluster(seeds) => {
                let hosts: Vec<&str> = seeds
                    .iter()
                    .map(|s| s.rsplit_once('@').map_or(s.as_str(), |(_, h)| h))
                    .collect();
                write!(f, "RedisClient::Cluster({})", hosts.join(","))
            }
        }
    }
}

impl RedisClient {
    /// Parses a queue URL (see the module docs).
    pub fn open(url: &str) -> RedisResult<Self> {
        match url.strip_prefix(CLUSTER_SCHEME) {
            Some(rest) => {
                let (rest, db) = rest.split_once('/').unwrap_or((rest, ""));
                if !matches!(db, "" | "0") {
                    return Err(RedisError::from((
                        ErrorKind::InvalidClientConfig,
                        "a Redis Cluster has database 0 only",
                    )));
                }
                // `user:password@` once, for every seed.
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((auth, hosts)) => (format!("{auth}@"), hosts),
                    None => (String::new(), rest),
                };
                let seeds: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("redis://{auth}{s}"))
                    .collect();
                if seeds.is_empty() {
                    return Err(RedisError::from((
                        ErrorKind::InvalidClientConfig,
                        "a redis+cluster:// URL names no node",
                    )));
                }
                for s in &seeds {
                    redis::Client::open(s.as_str())?;
                }
                Ok(Self::Cluster(seeds))
            }
            None => Ok(Self::Single(redis::Client::open(url)?)),
        }
    }

    /// Whether the URL named a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A connection for ordinary requests (replies wait at most 30 s); cheap to clone, and
    /// clones share it.
    pub async fn connect(&self) -> RedisResult<Redis> {
        self.connect_with(RESPONSE_TIMEOUT).await
    }

    /// A connection for one blocking reader (`XREADGROUP … BLOCK`), which would stall every
    /// other request queued behind it on a shared one.
    pub async fn connect_blocking(&self) -> RedisResult<Redis> {
        self.connect_with(BLOCKING_RESPONSE_TIMEOUT).await
    }

    async fn connect_with(&self, response: Duration) -> RedisResult<Redis> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response))
                    .set_min_delay(Duration::from_millis(100))
                    .set_max_delay(Duration::from_secs(2))
                    .set_number_of_retries(8);
                let con = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(Redis::Single(con))
            }
            Self::Cluster(seeds) => {
                let con = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response)
                    .retries(8)
                    .min_retry_wait(100)
                    .max_retry_wait(2_000)
                    .build()?
                    .get_async_connection()
                    .await?;
                Ok(Redis::Cluster(con))
            }
        }
    }
}

/// A connection to the queues (see the module docs); clones share the underlying connection.
#[derive(Clone)]
pub enum Redis {
    /// One server.
    Single(ConnectionManager),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl Redis {
    /// `INFO <section>` of the server, or of every master of a cluster: one text each.
    pub async fn info_everywhere(&mut self, section: &str) -> RedisResult<Vec<String>> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg(section);
        match self {
            Self::Single(c) => Ok(vec![cmd.query_async(c).await?]),
            Self::Cluster(c) => {
                let masters = MultipleNodeRoutingInfo::AllMasters;
                match c
                    .route_command(cmd, RoutingInfo::MultiNode((masters, None)))
                    .await?
                {
                    Value::Map(per_node) => per_node
                        .into_iter()
                        .map(|(_, text)| redis::from_redis_value(text))
                        .collect::<Result<_, _>>()
                        .map_err(RedisError::from),
                    one => Ok(vec![redis::from_redis_value(one)?]),
                }
            }
        }
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Redis::Single",
            Self::Cluster(_) => "Redis::Cluster",
        })
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => {
                if pipeline.is_transaction() || offset != 0 || count != pipeline.len() {
                    return c.req_packed_commands(pipeline, offset, count);
                }
                let groups = by_hash_tag(pipeline);
                if groups.len() <= 1 && groups.iter().all(|g| g.0.is_some()) {
                    return c.req_packed_commands(pipeline, offset, count);
                }
                let con = c.clone();
                Box::pin(split_pipeline(con, pipeline, groups))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A pipeline's commands grouped by the hash tag of their first key, in order of first
/// appearance; a keyless command is a group of its own (tag `None`).
fn by_hash_tag(pipeline: &Pipeline) -> Vec<(Option<&[u8]>, Vec<usize>)> {
    let mut groups: Vec<(Option<&[u8]>, Vec<usize>)> = Vec::new();
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        match first_key(cmd).map(hash_tag) {
            Some(tag) => {
                let g = *index.entry(tag).or_insert_with(|| {
                    groups.push((Some(tag), Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(i);
            }
            None => groups.push((None, vec![i])),
        }
    }
    groups
}

/// Sends each group as its own pipeline (a keyless one to one master), all at once, and puts
/// the replies back in the pipeline's order.
async fn split_pipeline(
    con: ClusterConnection,
    pipeline: &Pipeline,
    groups: Vec<(Option<&[u8]>, Vec<usize>)>,
) -> RedisResult<Vec<Value>> {
    let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let parts = groups.into_iter().map(|(tag, idx)| {
        let mut con = con.clone();
        let mut part = redis::pipe();
        for &i in &idx {
            part.add_command(cmds[i].clone());
        }
        let first = cmds[idx[0]].clone();
        async move {
            let replies = match tag {
                Some(_) => con.req_packed_commands(&part, 0, idx.len()).await?,
                None => {
                    let cmd = first;
                    let one = SingleNodeRoutingInfo::RandomPrimary;
                    vec![con.route_command(cmd, RoutingInfo::SingleNode(one)).await?]
                }
            };
            Ok::<_, RedisError>((idx, replies))
        }
    });
    let mut out = vec![Value::Nil; cmds.len()];
    for (idx, replies) in try_join_all(parts).await? {
        for (i, v) in idx.into_iter().zip(replies) {
            out[i] = v;
        }
    }
    Ok(out)
}

/// The first key a command names, where the commands the components pipeline put it; `None` for
/// keyless commands.
fn first_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            args.next()?;
            let n: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            if n == 0 {
                None
            } else {
                args.next()
            }
        }
        // Container commands: a subcommand, then the key.
        b"XINFO" | b"XGROUP" | b"OBJECT" | b"MEMORY" => {
            args.next()?;
            args.next()
        }
        b"XREAD" | b"XREADGROUP" => {
            let mut rest = args.skip_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"));
            rest.next()?;
            rest.next()
        }
        b"INFO" | b"PING" | b"TIME" | b"ECHO" | b"SCRIPT" | b"CLUSTER" | b"CONFIG" | b"DBSIZE"
        | b"FLUSHALL" | b"FLUSHDB" | b"KEYS" | b"SCAN" | b"WAIT" | b"MULTI" | b"EXEC" => None,
        _ => args.next(),
    }
}

/// The part of a key Redis Cluster hashes: the text between the first `{` and the next `}` when
/// that is not empty, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(len) = rest.iter().position(|&b| b == b'}') {
            if len > 0 {
                return &rest[..len];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Keys;

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag(b"hk:{s3}:ready"), b"s3");
        assert_eq!(hash_tag(b"hk:camp:{42}:n"), b"42");
        assert_eq!(hash_tag(b"hk:meta"), b"hk:meta");
        assert_eq!(hash_tag(b"a{}b{c}"), b"a{}b{c}");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
    }

    #[test]
    fn pipelines_split_by_hash_tag_in_order() {
        let mut p = redis::pipe();
        p.xlen(Keys::ready(0))
            .zcard(Keys::retry(1))
            .zcard(Keys::retry(0))
            .cmd("INFO")
            .arg("memory")
            .hgetall(Keys::site_ctl("google"));
        p.cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg(Keys::ready(1))
            .arg("x");
        p.cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("STREAMS")
            .arg(Keys::events(0))
            .arg(">");
        let groups = by_hash_tag(&p);
        let shape: Vec<(Option<&[u8]>, Vec<usize>)> = groups;
        assert_eq!(
            shape,
            vec![
                (Some(&b"s0"[..]), vec![0, 2, 6]),
                (Some(&b"s1"[..]), vec![1, 5]),
                (None, vec![3]),
                (Some(&b"hk:site:google:ctl"[..]), vec![4]),
            ]
        );
    }

    #[test]
    fn urls_pick_server_or_cluster() {
        assert!(!RedisClient::open("redis://127.0.0.1:6379/")
            .unwrap()
            .is_cluster());
        match RedisClient::open("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001/").unwrap() {
            RedisClient::Cluster(seeds) => {
                assert_eq!(seeds, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
            }
            other => panic!("{other:?}"),
        }
        match RedisClient::open("redis+cluster://hk:s3cret@10.0.0.1:7000,10.0.0.2:7000/0").unwrap()
        {
            RedisClient::Cluster(seeds) => assert_eq!(
                seeds,
                [
                    "redis://hk:s3cret@10.0.0.1:7000",
                    "redis://hk:s3cret@10.0.0.2:7000"
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(RedisClient::open("redis+cluster://10.0.0.1:7000/3").is_err());
        assert!(RedisClient::open("redis+cluster://").is_err());
        assert!(RedisClient::open("redis+cluster://[bad").is_err());
        assert!(RedisClient::open("nope://x").is_err());
    }
}
