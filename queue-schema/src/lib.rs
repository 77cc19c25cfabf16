//! The contract between `hikyaku-api` and `hikyaku-engine`.
//!
//! Redis is the only coupling between the API and the engine, and this crate is the only place
//! that knows what lives in Redis: the key map, the wire types and their encoding, and the Lua
//! scripts that move jobs between places atomically. Its only I/O is the connection type
//! ([`conn`]) and invoking scripts on a connection it is handed; it holds no delivery policy.
//!
//! # Key map
//!
//! Every key starts with `hk:`. Keys that a script touches together share a hash tag (`{sN}`), so
//! the layout works unchanged on Redis Cluster.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `hk:meta` | hash | `schema` (= [`SCHEMA_VERSION`]), `shards` (shard count all writers use) |
//! | `hk:camp:{<id>}` | hash | field `snap`: the frozen [`CampaignSnapshot`] the engine renders from; field `state`: `paused` / `cancelled` when set; for a test send (id ≥ [`keys::TEST_ID_BASE`]) field `left`: its jobs not yet ended (the hash expires minutes after the last) |
//! | `hk:camp:{<id>}:n` | hash | live per-campaign counters (written by the recorder) |
//! | `hk:{s<N>}:ready` | stream | jobs of shard N, field `j` = encoded [`Job`]; consumer group [`ENGINE_GROUP`] |
//! | `hk:{s<N>}:retry` | sorted set | deferred jobs (member = encoded [`Job`], with its [`LastTry`]: site and last error) scored by due time in ms |
//! | `hk:{s<N>}:expanded` | hash | per campaign id, the highest job `seq` expansion enqueued on the shard |
//! | `hk:{s<N>}:parked` | set | ids of campaigns with jobs parked on shard N (paused campaigns) |
//! | `hk:{s<N>}:parked:<id>` | list | a paused campaign's jobs of shard N (encoded [`Job`]s), out of every reader's and mover's way until it is resumed or cancelled |
//! | `hk:{s<N>}:events` | stream | end-state [`Event`]s of shard N's jobs, and one `deferred` event per deferred attempt (for the record, not an end state), field `e`, for the recorder |
//! | `hk:site:<site>:ctl` | hash | `paused` (`1`/`0`), `rate` (msg/s override, `0` = none) |
//! | `hk:suppressed` | stream | addresses suppressed or released after expansion: `t` tenant, `a` address, `op` `add`/`del`; kept 8 days ([`suppressed`]) |
//! | `hk:drain` | hash | operators' drain rules: `site:<name>` / `campaign:<id>` → `<bounced\|cancelled>\|<before_ms>\|<reason>` ([`drain`]) |
//! | `hk:node:<node>:sites` | hash | per engine node, site → encoded [`node::SiteState`] (rate, adaptive state, connections, queue), expires after 10 s ([`node`]) |
//! | `hk:site:<site>:tat` | string | the site's fleet-wide rate limiter: GCRA theoretical arrival time (µs, Redis server time); nodes lease tokens in batches ([`scripts::lease`]) |
//! | `hk:site:{<site>}:conns` | sorted set | the site's fleet-wide connection slots: member `<node>/<n>`, score = lease expiry (ms); a dead node's slots lapse ([`scripts::take_slot`]) |
//! | `hk:site:{<site>}:want` | sorted set | nodes refused a slot of the site in the last 2 s: a node holding its fair share gets no more while others wait |
//! | `hk:nodes` | sorted set | engine nodes by heartbeat expiry (ms); shards are shared among the live ones ([`scripts::heartbeat`]) |
//! | `hk:testsends:<tenant>:<hour>` | string | test-send recipients of a tenant this clock hour (the API's hourly limit), expires after two hours |
//! | `hk:site:events` | stream | adaptive-shaping changes: `site`, `action` (`cut`/`suspend`/`block`/`recover`/`learn`: the sustainable rate a suspension taught), `rate`, `until_ms`, `reply`; capped at ~10,000 |
//!
//! A job's shard is [`shard_for_domain`] of its recipient domain, so all jobs for one domain (and
//! in practice one destination site) share a shard. The events stream is per shard, not global,
//! so that finishing a job (ack + delete + event) is one atomic script on one hash slot.
//!
//! # Places a job can be (the "nothing is lost" invariant)
//!
//! A job is in exactly one of: the shard's ready stream (delivered to a consumer or not), the
//! shard's retry set, a paused campaign's parking list on the shard, or finished with exactly
//! one end-state event on the shard's events stream. The scripts in [`scripts`] are the only
//! transitions, each atomic: [`scripts::finish`] (ready → event), [`scripts::defer`] (ready →
//! retry), [`scripts::move_due`] (retry → ready), [`scripts::park`] (ready → parked) and
//! [`scripts::unpark`] (parked → ready); jobs enter through [`scripts::enqueue`], which skips
//! any job a replayed expansion page already added.
//!
//! # Layout
//!
//! - [`keys`]: the key map above as functions, and the shard function; [`meta`]: `hk:meta`.
//! - [`conn`]: the connection every component reaches the queues with (one server or a
//!   Redis Cluster, reconnecting by itself; cross-slot pipelines split per hash tag).
//! - [`codec`]: the compact, versioned binary encoding every wire type uses.
//! - [`job`], [`snapshot`], [`event`]: the wire types.
//! - [`scripts`]: the Lua scripts (source in `lua/*.lua`) and typed helpers to invoke them.
//! - [`verp`]: the per-job bounce address (envelope sender) both sides agree on; [`ids`]: the
//!   MAC every identifier that reaches a recipient carries (VERP address, Message-ID).
//! - [`suppressed`]: the suppression feed engines check just before sending.
//! - [`carriers`]: the Japanese mobile carrier domains both sides treat specially.
//! - [`drain`]: operators' drain rules; [`node`]: the site state engine nodes publish.
//! - [`shutdown`]: the SIGTERM / SIGINT every binary stops on (process plumbing, here because
//!   every binary depends on this crate).

pub mod carriers;
pub mod codec;
pub mod conn;
pub mod drain;
pub mod event;
pub mod ids;
pub mod job;
pub mod keys;
pub mod meta;
pub mod node;
pub mod scripts;
pub mod shutdown;
pub mod snapshot;
pub mod suppressed;
pub mod verp;

pub use codec::DecodeError;
pub use conn::{Redis, RedisClient};
pub use event::{Event, EventStatus};
pub use job::{Job, JobId, LastTry};
pub use keys::{shard_for_domain, Keys, ENGINE_GROUP, SCHEMA_VERSION};
pub use snapshot::CampaignSnapshot;
