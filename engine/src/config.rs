//! The engine's configuration file (TOML), with environment overrides for URLs and secrets.
//!
//! ```toml
//! redis_url = "redis://127.0.0.1:6379"   # env HIKYAKU_REDIS_URL
//! shards = 4
//! node_id = "engine-a"                   # env HIKYAKU_NODE_ID
//! ehlo_name = "mta1.example.com"
//! smtp_port = 25
//! # smarthost = "127.0.0.1:2525"         # route everything through one relay
//! metrics_listen = "127.0.0.1:9101"      # env HIKYAKU_METRICS_LISTEN
//! # worker_threads = 2                   # default: one per core
//!
//! [dns]
//! nameserver = "127.0.0.1:5353"          # env HIKYAKU_NAMESERVER; default: system resolver
//!
//! [queue]
//! max_in_flight = 20000
//!
//! [fleet]
//! node_ttl = "5s"                        # heartbeat lapse after which a node's shards move
//!
//! [sites.google]
//! rate = "200/s"
//! max_connections = 5
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::site::policy::{SitePolicy, SitePolicyConfig};
use crate::units::Span;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped field.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the field.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole engine configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Redis URL of the queues: `redis://host:port` for one server, or
    /// `redis+cluster://host:port,host:port,…` (seed nodes) for a Redis Cluster. Overridden by
    /// `HIKYAKU_REDIS_URL`.
    #[serde(default = "default_redis_url")]
    pub redis_url: String,
    /// Number of shards (ready stream + retry set each). Must match every writer; recorded in
    /// `hk:meta` and checked at start.
    #[serde(default = "default_shards")]
    pub shards: u16,
    /// This node's consumer name in the group. Keep it stable across restarts: a restarted node
    /// takes its own pending jobs back at once instead of waiting for the claim timeout.
    /// Overridden by `HIKYAKU_NODE_ID`.
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// Name sent in EHLO; should resolve to the sending address (forward-confirmed rDNS).
    #[serde(default = "default_ehlo")]
    pub ehlo_name: String,
    /// Port to connect to on MX hosts: 25 in production, a sink's port in tests.
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// `host:port` of a relay that takes all mail instead of the MX hosts. Sites are then
    /// found from recipient domains only.
    #[serde(default)]
    pub smarthost: Option<String>,
    /// Address of the Prometheus `/metrics` listener. Overridden by `HIKYAKU_METRICS_LISTEN`.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Threads of the engine's async runtime, 1 to 256; default one per core the process may
    /// use. On a box whose cores the engine shares with busy neighbours (Redis, a local relay,
    /// other engine nodes), give it fewer: two workers on two shared cores spend their time
    /// waking each other for the same few ready sessions (measured: a quarter more CPU per
    /// message against a DATA-only server than one worker, see `loadtest/RESULTS.md`). For
    /// many cores, one engine node per few cores scales as well as one wide node.
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// DNS settings.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Queue reading and reclaim settings.
    #[serde(default)]
    pub queue: QueueConfig,
    /// TLS settings.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Running as one of many nodes: membership, shard sharing, fleet-wide site limits.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Per-site overrides of the shipped policies, and extra sites.
    #[serde(default)]
    pub sites: BTreeMap<String, SitePolicyConfig>,
    /// DKIM keys (`[[dkim]]` entries), read once at start; messages whose From domain (or a
    /// parent of it) has keys are signed with each of them.
    #[serde(default)]
    pub dkim: Vec<crate::message::dkim::DkimKeyConfig>,
}

/// DNS settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// A nameserver to ask instead of the system's (`/etc/resolv.conf`), e.g. a test server.
    /// Overridden by `HIKYAKU_NAMESERVER`.
    #[serde(default)]
    pub nameserver: Option<SocketAddr>,
    /// Per-query timeout; default 5s.
    #[serde(default)]
    pub timeout: Option<Span>,
    /// Longest time a domain → site answer is cached regardless of its TTL; default 1h.
    #[serde(default)]
    pub max_cache_ttl: Option<Span>,
    /// How long a temporary DNS failure is remembered before asking again; default 5s.
    #[serde(default)]
    pub failure_ttl: Option<Span>,
    /// Most domains whose answers (domain → site and MX hosts) are kept, least recently used
    /// evicted first; default 100,000.
    #[serde(default)]
    pub cache_domains: Option<usize>,
}

/// Queue reading, in-flight budget and reclaim.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most jobs this node holds at once (read but not finished). Bounds memory whatever the
    /// backlog: reads are sized to the free part of this budget.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most entries per XREADGROUP.
    #[serde(default = "default_read_batch")]
    pub read_batch: usize,
    /// XREADGROUP BLOCK time.
    #[serde(default = "default_block")]
    pub block: Span,
    /// A pending entry idle this long belongs to a dead node and is reclaimed (XAUTOCLAIM).
    /// Live nodes refresh their held entries at a third of this.
    #[serde(default = "default_claim_idle")]
    pub claim_idle: Span,
    /// How often the retry mover looks for due jobs.
    #[serde(default = "default_mover_interval")]
    pub mover_interval: Span,
    /// Longest wait before finished jobs are written back in a batch.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: Span,
    /// Delay before a job refused by a full or paused site is tried again (no attempt counted).
    #[serde(default = "default_requeue_delay")]
    pub requeue_delay: Span,
    /// On SIGTERM, how long in-flight messages may take to finish before the rest is handed
    /// back.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Span,
    /// How long a campaign no job of which this node holds stays in its memory (run state,
    /// rendered templates) before it is forgotten.
    #[serde(default = "default_campaign_idle")]
    pub campaign_idle: Span,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_in_flight: default_max_in_flight(),
            read_batch: default_read_batch(),
            block: default_block(),
            claim_idle: default_claim_idle(),
            mover_interval: default_mover_interval(),
            flush_interval: default_flush_interval(),
            requeue_delay: default_requeue_delay(),
            shutdown_grace: default_shutdown_grace(),
            campaign_idle: default_campaign_idle(),
        }
    }
}

/// Running as one node of a fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// A node whose heartbeat (every second, in `hk:nodes`) is older than this has left: the
    /// live nodes share its shards out among themselves, and its connection slots lapse after
    /// twice this. Default 5s.
    #[serde(default = "default_node_ttl")]
    pub node_ttl: Span,
    /// Site rates and connection caps are limits of the whole fleet, shared through Redis
    /// (`true`, the default), or of each node alone (`false`: one node, or a test of the
    /// node's own limiter).
    #[serde(default = "yes")]
    pub global_limits: bool,
    /// Most of a site's rate one lease from the fleet limiter takes (default 10ms worth): larger
    /// means fewer Redis calls and coarser sharing between nodes.
    #[serde(default = "default_lease")]
    pub lease: Span,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            node_ttl: default_node_ttl(),
            global_limits: true,
            lease: default_lease(),
        }
    }
}

fn default_node_ttl() -> Span {
    Span(Duration::from_secs(5))
}
fn default_lease() -> Span {
    Span(Duration::from_millis(10))
}

/// TLS settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Use STARTTLS whenever the server offers it (opportunistic, unauthenticated).
    #[serde(default = "yes")]
    pub starttls: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { starttls: true }
    }
}

fn yes() -> bool {
    true
}
fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_shards() -> u16 {
    4
}
fn default_node_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .map_or_else(|| "engine".into(), |h| format!("engine-{h}"))
}
fn default_ehlo() -> String {
    "localhost".into()
}
fn default_smtp_port() -> u16 {
    25
}
fn default_max_in_flight() -> usize {
    20_000
}
fn default_read_batch() -> usize {
    1_000
}
fn default_block() -> Span {
    Span(Duration::from_millis(500))
}
fn default_claim_idle() -> Span {
    Span(Duration::from_secs(60))
}
fn default_mover_interval() -> Span {
    Span(Duration::from_millis(250))
}
fn default_flush_interval() -> Span {
    Span(Duration::from_millis(5))
}
fn default_requeue_delay() -> Span {
    Span(Duration::from_secs(2))
}
fn default_shutdown_grace() -> Span {
    Span(Duration::from_secs(30))
}
fn default_campaign_idle() -> Span {
    Span(Duration::from_secs(60))
}

impl EngineConfig {
    /// Parses TOML text (no environment overrides).
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        let cfg: EngineConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads the file, applies environment overrides, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text, &p)?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `HIKYAKU_*` overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(url) = get("HIKYAKU_REDIS_URL") {
            self.redis_url = url;
        }
        if let Some(id) = get("HIKYAKU_NODE_ID") {
            self.node_id = id;
        }
        if let Some(a) = get("HIKYAKU_METRICS_LISTEN") {
            self.metrics_listen = Some(a.parse().map_err(|_| {
                ConfigError::Invalid(format!("HIKYAKU_METRICS_LISTEN {a:?} is not host:port"))
            })?);
        }
        if let Some(a) = get("HIKYAKU_NAMESERVER") {
            self.dns.nameserver = Some(a.parse().map_err(|_| {
                ConfigError::Invalid(format!("HIKYAKU_NAMESERVER {a:?} is not ip:port"))
            })?);
        }
        Ok(())
    }

    /// Checks ranges and site policies.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.shards == 0 {
            return bad("shards must be at least 1");
        }
        if matches!(self.worker_threads, Some(n) if !(1..=256).contains(&n)) {
            return bad("worker_threads must be 1 to 256");
        }
        if self.node_id.is_empty() || self.node_id.contains(char::is_whitespace) {
            return bad("node_id must be a non-empty word");
        }
        if self.ehlo_name.is_empty() || self.ehlo_name.contains(char::is_whitespace) {
            return bad("ehlo_name must be a host name");
        }
        if self.queue.max_in_flight == 0 || self.queue.read_batch == 0 {
            return bad("queue.max_in_flight and queue.read_batch must be at least 1");
        }
        // Every duration within a range that works: a zero interval panics a timer, a zero
        // XREADGROUP BLOCK blocks forever, an hour-long flush holds every result.
        let ms = Duration::from_millis;
        let hour = Duration::from_secs(3600);
        let q = &self.queue;
        let spans = [
            ("queue.block", q.block.0, ms(1), Duration::from_secs(60)),
            ("queue.claim_idle", q.claim_idle.0, ms(300), hour),
            (
                "queue.mover_interval",
                q.mover_interval.0,
                ms(1),
                Duration::from_secs(60),
            ),
            (
                "queue.flush_interval",
                q.flush_interval.0,
                Duration::ZERO,
                Duration::from_secs(1),
            ),
            (
                "queue.requeue_delay",
                q.requeue_delay.0,
                Duration::ZERO,
                hour,
            ),
            (
                "queue.shutdown_grace",
                q.shutdown_grace.0,
                Duration::ZERO,
                hour,
            ),
            ("queue.campaign_idle", q.campaign_idle.0, ms(100), 24 * hour),
            (
                "fleet.node_ttl",
                self.fleet.node_ttl.0,
                Duration::from_secs(2),
                hour,
            ),
            (
                "fleet.lease",
                self.fleet.lease.0,
                ms(1),
                Duration::from_secs(1),
            ),
        ];
        let dns = [
            (
                "dns.timeout",
                self.dns.timeout,
                ms(1),
                Duration::from_secs(60),
            ),
            (
                "dns.max_cache_ttl",
                self.dns.max_cache_ttl,
                ms(1),
                7 * 24 * hour,
            ),
            (
                "dns.failure_ttl",
                self.dns.failure_ttl,
                Duration::ZERO,
                hour,
            ),
        ];
        let all = spans.into_iter().chain(
            dns.into_iter()
                .filter_map(|(n, v, lo, hi)| Some((n, v?.0, lo, hi))),
        );
        for (name, value, lo, hi) in all {
            if value < lo || value > hi {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between {lo:?} and {hi:?} (got {value:?})"
                )));
            }
        }
        if self.dns.cache_domains == Some(0) {
            return bad("dns.cache_domains must be at least 1");
        }

        if let Some(s) = &self.smarthost {
            if s.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return bad("smarthost must be host:port");
            }
        }
        SitePolicy::resolve(&self.sites).map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The async runtime the engine runs on: multi-threaded, `worker_threads` workers (one per
    /// core when unset), I/O and timers enabled.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = self.worker_threads {
            builder.worker_threads(n);
        }
        builder.enable_all().build()
    }

    /// The effective site policies.
    pub fn site_policies(&self) -> BTreeMap<String, SitePolicy> {
        SitePolicy::resolve(&self.sites).unwrap_or_else(|_| SitePolicy::shipped_defaults())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let mut cfg =
            EngineConfig::from_toml("shards = 8\n[dns]\nnameserver = \"127.0.0.1:5353\"\n", "t")
                .expect("valid");
        assert_eq!(cfg.shards, 8);
        assert_eq!(cfg.smtp_port, 25);
        assert_eq!(cfg.redis_url, "redis://127.0.0.1:6379");
        cfg.apply_env(|k| (k == "HIKYAKU_REDIS_URL").then(|| "redis://127.0.0.1:7000".into()))
            .expect("env ok");
        assert_eq!(cfg.redis_url, "redis://127.0.0.1:7000");
        let err = cfg
            .apply_env(|k| (k == "HIKYAKU_NAMESERVER").then(|| "nope".into()))
            .expect_err("bad env");
        assert!(err.to_string().contains("HIKYAKU_NAMESERVER"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = EngineConfig::from_toml("shardz = 3\n", "c.toml").expect_err("unknown");
        assert!(e.to_string().contains("shardz"), "{e}");
        let e = EngineConfig::from_toml("shards = 0\n", "c.toml").expect_err("zero");
        assert!(e.to_string().contains("shards"), "{e}");
        let e = EngineConfig::from_toml("worker_threads = 0\n", "c.toml").expect_err("zero");
        assert!(e.to_string().contains("worker_threads"), "{e}");
        let e = EngineConfig::from_toml("[queue]\nblock = \"5\"\n", "c.toml").expect_err("unit");
        assert!(e.to_string().contains("unit"), "{e}");
        let e = EngineConfig::from_toml("smarthost = \"relay\"\n", "c.toml").expect_err("port");
        assert!(e.to_string().contains("smarthost"), "{e}");
        let e = EngineConfig::from_toml("[sites.google]\nmax_connections = 0\n", "c.toml")
            .expect_err("site");
        assert!(e.to_string().contains("google"), "{e}");
    }

    #[test]
    fn the_runtime_has_the_configured_workers() {
        let cfg = EngineConfig::from_toml("worker_threads = 1\n", "t").expect("valid");
        assert_eq!(cfg.runtime().expect("runtime").metrics().num_workers(), 1);
        let cfg = EngineConfig::from_toml("worker_threads = 3\n", "t").expect("valid");
        assert_eq!(cfg.runtime().expect("runtime").metrics().num_workers(), 3);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cfg = EngineConfig::from_toml("", "t").expect("valid");
        assert_eq!(
            cfg.runtime().expect("runtime").metrics().num_workers(),
            cores
        );
    }

    #[test]
    fn every_duration_is_checked() {
        for (text, field) in [
            ("[queue]\nmover_interval = \"0s\"\n", "mover_interval"),
            ("[queue]\nblock = \"0s\"\n", "queue.block"),
            ("[queue]\nflush_interval = \"1h\"\n", "flush_interval"),
            ("[queue]\ncampaign_idle = \"0s\"\n", "campaign_idle"),
            ("[dns]\ntimeout = \"0s\"\n", "dns.timeout"),
            ("[fleet]\nnode_ttl = \"1s\"\n", "node_ttl"),
            (
                "[sites.google]\ncommand_timeout = \"0s\"\n",
                "command_timeout",
            ),
            ("[sites.default]\nretry_initial = \"0s\"\n", "retry_initial"),
            (
                "[sites.yahoo]\nrecover_interval = \"0s\"\n",
                "recover_interval",
            ),
        ] {
            let e = EngineConfig::from_toml(text, "c.toml").expect_err(text);
            assert!(e.to_string().contains(field), "{text}: {e}");
        }
        EngineConfig::from_toml("[queue]\nflush_interval = \"0s\"\n", "c.toml")
            .expect("no wait before a flush is fine");
    }
}
