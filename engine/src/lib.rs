//! hikyaku's delivery engine: reads jobs from the Redis shard streams, resolves each domain to
//! a destination site, and delivers over pipelined SMTP within each site's limits, writing every
//! outcome back to Redis through `hikyaku-queue-schema`.
//!
//! The binary (`hikyaku-engine --config FILE`) is a thin wrapper around [`run`], which tests call
//! directly with their own listeners and shutdown future.
//!
//! # Layout
//!
//! - [`config`], [`policy`], [`units`]: the TOML config, site policies with shipped defaults,
//!   readable durations and rates.
//! - [`shard`]: a shard consumer (XREADGROUP sized to the free [`inflight`] budget, own-pending
//!   replay, idle refresh, reclaim of idle entries of nodes that are not live); [`streams`]
//!   parses the replies.
//! - [`dispatcher`]: domain → MX ([`mx`], hickory-resolver) → site, in a bounded LRU cache;
//!   routes jobs.
//! - [`site`]: per-site scheduler — bounded queue, governor rate limiter, connection pool;
//!   [`connect`] opens sessions (MX fallback, STARTTLS); [`render`] builds each message,
//!   [`dkim`] signs it, [`qp`] writes quoted-printable bodies (base64 ones in [`render`]); [`jis`] builds ISO-2022-JP
//!   messages for carriers that want them; [`suppressed`]: the last suppression check.
//! - [`smtp`]: the pipelined SMTP client, reply parser, dot-stuffing, TLS; [`in_doubt`]: how
//!   many messages a site's sessions may have written and unanswered (shrinks after broken
//!   sessions, so faults cost few duplicates).
//! - [`adaptive`]: reply rules that cut, suspend or block a site and recover its rate;
//!   [`site_events`]: those changes as events in Redis.
//! - [`classify`]: the one outcome classifier; [`report`] applies its verdict; [`flusher`]
//!   writes results to Redis in atomic batches; [`mover`] returns due retries.
//! - [`membership`]: heartbeats in `hk:nodes` and which shards this node reads (rendezvous
//!   hashing over the live nodes); [`fleet`]: a site's rate and connection cap for the whole
//!   fleet (GCRA tokens leased from Redis in batches, connection slots).
//! - [`control`]: operator pause / rate override, queue gauges, the site state each node
//!   publishes, and moving a paused campaign's parked jobs back once it goes on;
//!   [`drains`]: operators' drain orders; [`campaigns`]: campaign pause / cancel from the API,
//!   tracked only while the node holds jobs of the campaign; [`held`]: the leader's scan of
//!   the retry sets for held mail per site; [`redis_info`]: Redis's own figures from `INFO`;
//!   [`metrics`]: `/metrics`.
//! - [`clock`]: the one clock; [`meter`]: smoothed per-second rates; [`retry`]: the backoff schedule; [`work`]: a job in hand.
//! - [`engine`]: [`run`], wiring it all and the graceful shutdown; [`cli`]: the binary.

pub mod adaptive;
pub mod campaigns;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connect;
pub mod control;
pub mod dispatcher;
pub mod dkim;
pub mod drains;
pub mod engine;
pub mod fleet;
pub mod flusher;
pub mod held;
pub mod in_doubt;
pub mod inflight;
pub mod jis;
pub mod membership;
pub mod meter;
pub mod metrics;
pub mod mover;
pub mod mx;
pub mod policy;
pub mod qp;
pub mod redis_info;
pub mod render;
pub mod report;
pub mod retry;
pub mod shard;
pub mod site;
pub mod site_events;
pub mod smtp;
pub mod streams;
pub mod suppressed;
pub mod units;
pub mod work;

pub use config::EngineConfig;
pub use engine::{run, EngineError, Listeners};
