//! hikyaku's delivery engine: reads jobs from the Redis shard streams, resolves each domain to
//! a destination site, and delivers over pipelined SMTP within each site's limits, writing every
//! outcome back to Redis through `hikyaku-queue-schema`.
//!
//! The binary (`hikyaku-engine --config FILE`) is a thin wrapper around [`run`], which tests call
//! directly with their own listeners and shutdown future.
//!
//! # Layout
//!
//! Folders follow a job's way through the node:
//!
//! - [`intake`]: jobs in and their next places out — [`intake::membership`] (heartbeats,
//!   which shards this node reads), [`intake::shard`] (the shard consumer, sized to the
//!   [`intake::inflight`] budget; [`intake::streams`] parses its replies), [`intake::flusher`]
//!   (results written back in atomic batches), [`intake::mover`] (due retries back).
//! - [`routing`]: [`routing::dispatcher`] (domain → MX through [`routing::mx`] → site, in a
//!   bounded LRU cache) and operators' [`routing::drains`].
//! - [`site`]: the per-site scheduler — its queue, rate shaping (governor; the fleet's share
//!   through [`site::fleet`]; reply rules in [`site::adaptive`] and their
//!   [`site::events`]), sessions ([`site::connect`]: MX fallback, STARTTLS) and pipelining
//!   (with the [`site::in_doubt`] bound); [`site::policy`]: site policies and their shipped
//!   defaults.
//! - [`message`]: each recipient's message from the campaign's template — built once per
//!   campaign, spliced per message, cached per node; [`message::qp`], [`message::jis`]
//!   (ISO-2022-JP for carriers that want it), [`message::dkim`] (signing).
//! - [`smtp`]: the pipelined SMTP client, reply parser, dot-stuffing, TLS.
//! - [`outcome`]: [`outcome::classify`] (the one outcome classifier), [`outcome::report`]
//!   (applies its verdict), [`outcome::retry`] (the backoff schedule).
//! - [`control`]: operator pause / rate override, queue gauges and the site state each node
//!   publishes; [`control::campaigns`] (campaign pause / cancel from the API),
//!   [`control::held`] (the leader's scan of held mail), [`control::suppressed`] (the last
//!   suppression check, from the API's feed).
//! - [`metrics`]: `/metrics`, with Redis's own figures ([`metrics::redis_info`]).
//! - [`config`], [`units`]: the TOML config, readable durations and rates; [`clock`]: the one
//!   clock; [`meter`]: smoothed per-second rates; [`work`]: a job in hand.
//! - [`engine`]: [`run`], wiring it all and the graceful shutdown; [`cli`]: the binary.

pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod engine;
pub mod intake;
pub mod message;
pub mod meter;
pub mod metrics;
pub mod outcome;
pub mod routing;
pub mod site;
pub mod smtp;
pub mod units;
pub mod work;

pub use config::EngineConfig;
pub use engine::{run, EngineError, Listeners};
