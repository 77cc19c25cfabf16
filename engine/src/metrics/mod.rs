//! Prometheus metrics: names, meanings, and the `/metrics` endpoint.
//!
//! Every metric's description says what a spike or a drop means to an operator watching a peak.
//! The recorder is process-global (the `metrics` facade); [`install`] sets it up once and
//! returns the handle the endpoint renders.

pub mod redis_info;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Messages that reached a result, by site, result (`delivered`, `deferred`, `bounced`,
/// `expired`) and reason class.
pub const MESSAGES: &str = "hikyaku_messages_total";
/// Jobs put back without an attempt, by reason: `paused`, `site-busy`, `newer-release` (a
/// newer release's job or campaign), `redis-unavailable` (its campaign unreadable while Redis
/// restarts or loads), and the reconnect and shutdown reasons.
pub const REQUEUED: &str = "hikyaku_requeued_total";
/// Entries read from ready streams.
pub const READ: &str = "hikyaku_jobs_read_total";
/// Entries taken back from dead nodes or replayed from this node's previous run.
pub const RECLAIMED: &str = "hikyaku_reclaimed_total";
/// Jobs read and not yet finished or deferred.
pub const IN_FLIGHT: &str = "hikyaku_in_flight_jobs";
/// Ready stream length per shard.
pub const READY_DEPTH: &str = "hikyaku_queue_ready_depth";
/// Retry set size per shard.
pub const RETRY_DEPTH: &str = "hikyaku_queue_retry_depth";
/// Age of the oldest unfinished job in a shard's ready stream, seconds (0 when empty).
pub const OLDEST_AGE: &str = "hikyaku_queue_oldest_age_seconds";
/// Redis `used_memory`, bytes.
pub const REDIS_USED: &str = "hikyaku_redis_used_memory_bytes";
/// Redis `maxmemory`, bytes (0: no limit set).
pub const REDIS_MAX: &str = "hikyaku_redis_max_memory_bytes";
/// Gauge: the engine process's resident memory.
pub const RSS: &str = "hikyaku_engine_resident_memory_bytes";
/// Open SMTP connections per site.
pub const CONNECTIONS: &str = "hikyaku_connections_open";
/// SMTP connection attempts per site and result.
pub const CONNECTS: &str = "hikyaku_connects_total";
/// Time from the final dot to the server's reply, per site.
pub const REPLY_SECONDS: &str = "hikyaku_smtp_reply_seconds";
/// Waits for a site's rate limiter.
pub const RATE_WAITS: &str = "hikyaku_rate_limit_waits_total";
/// DNS lookups by result.
pub const DNS_LOOKUPS: &str = "hikyaku_dns_lookups_total";
/// Jobs moved from retry sets back to ready streams.
pub const RETRY_MOVED: &str = "hikyaku_retry_moved_total";
/// Site paused (1) or not (0).
pub const SITE_PAUSED: &str = "hikyaku_site_paused";
/// Adaptive-shaping changes by site and action.
pub const SITE_ADAPTIVE: &str = "hikyaku_site_adaptive_total";
/// Rate cap set by adaptive shaping, msg/s (0: none).
pub const SITE_RATE_CAP: &str = "hikyaku_site_rate_cap";
/// Sustainable rate a suspension taught, msg/s (0: none learned).
pub const SITE_SUSTAINABLE: &str = "hikyaku_site_sustainable_rate";
/// Messages a pipelining session of the site may have written and unanswered at once.
pub const SITE_IN_DOUBT: &str = "hikyaku_site_in_doubt_limit";
/// 1 while the site is suspended by a provider reply.
pub const SITE_SUSPENDED: &str = "hikyaku_site_suspended";
/// 1 while the site is blocked (a provider said retrying will not succeed).
pub const SITE_BLOCKED: &str = "hikyaku_site_blocked";
/// Successful leases of send tokens from a site's fleet-wide limiter (one Redis call each).
pub const FLEET_LEASES: &str = "hikyaku_fleet_leases_total";
/// Send tokens leased from a site's fleet-wide limiter.
pub const FLEET_TOKENS: &str = "hikyaku_fleet_tokens_total";
/// Live engine nodes this node sees.
pub const FLEET_NODES: &str = "hikyaku_fleet_nodes";
/// Shards this node reads.
pub const SHARDS_OWNED: &str = "hikyaku_engine_shards_owned";
/// Campaigns this node tracks (jobs held now, or lately).
pub const CAMPAIGNS_TRACKED: &str = "hikyaku_engine_campaigns_tracked";
/// Campaigns whose rendered templates this node keeps.
pub const CAMPAIGNS_CACHED: &str = "hikyaku_engine_campaigns_cached";
/// Bytes of rendered templates this node keeps.
pub const CAMPAIGN_CACHE_BYTES: &str = "hikyaku_engine_campaign_cache_bytes";
/// Domain answers (domain → site, MX hosts) this node keeps.
pub const DNS_CACHED: &str = "hikyaku_engine_dns_cached_domains";
/// Age of the oldest job waiting for a site, by queue (`ready`: this node's queue for the
/// site; `retry`: the retry sets, from the leader's scan).
pub const SITE_OLDEST_AGE: &str = "hikyaku_site_oldest_age_seconds";
/// Jobs in the retry sets held back by a site (paused, suspended, full), not deferred by a reply.
pub const SITE_HELD: &str = "hikyaku_site_held_jobs";
/// Jobs in the retry sets last routed to a site.
pub const SITE_RETRY: &str = "hikyaku_site_retry_jobs";
/// Jobs in the retry sets of a site that expire within the hour.
pub const SITE_EXPIRING: &str = "hikyaku_site_expiring_jobs";
/// Redis `instantaneous_ops_per_sec` (summed over masters).
pub const REDIS_OPS: &str = "hikyaku_redis_ops_per_second";
/// Redis `total_commands_processed` (summed over masters).
pub const REDIS_COMMANDS: &str = "hikyaku_redis_commands_total";
/// Redis `commandstats` calls per command.
pub const REDIS_COMMAND_CALLS: &str = "hikyaku_redis_command_calls_total";
/// Redis `commandstats` microseconds per command.
pub const REDIS_COMMAND_USEC: &str = "hikyaku_redis_command_usec_total";
/// Redis `connected_clients` (summed over masters).
pub const REDIS_CLIENTS: &str = "hikyaku_redis_connected_clients";
/// Jobs of paused campaigns parked in Redis, and moved back when their campaign went on.
pub const PARKED: &str = "hikyaku_parked_jobs_total";
/// Time from enqueue (the job's `queued_ms`) to the accepting reply, per site.
pub const DELIVERY_LATENCY: &str = "hikyaku_delivery_latency_seconds";

/// Buckets of [`DELIVERY_LATENCY`]: from a message delivered the instant it was queued to one
/// that waited out a long backlog or retries.
pub const DELIVERY_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Outcome counter handles: by (result, reason), then by site.
type OutcomeHandles = HashMap<(&'static str, &'static str), HashMap<String, Counter>>;

thread_local! {
    /// Outcome counters by (result, reason) then site, per thread: the per-message path finds
    /// its handle without building label sets or taking the registry's locks.
    static OUTCOMES: RefCell<OutcomeHandles> = RefCell::new(HashMap::new());
    /// Delivery-latency histograms by site, per thread.
    static LATENCY: RefCell<HashMap<String, Histogram>> = RefCell::new(HashMap::new());
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REPLY_SECONDS.into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(DELIVERY_LATENCY.into()),
                        DELIVERY_LATENCY_BUCKETS,
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is already installed (an embedding program's);
            // then ours renders nothing, which is the embedder's choice.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

fn describe() {
    // Counters dashboards and alerts watch start at zero rather than appear on first use.
    counter!(RECLAIMED).absolute(0);
    counter!(RETRY_MOVED).absolute(0);
    describe_gauge!(CAMPAIGNS_TRACKED, "Campaigns this node holds jobs of (or did within queue.campaign_idle). Follows the campaigns in progress; growth without bound is a bug.");
    describe_gauge!(
        CAMPAIGNS_CACHED,
        "Campaigns whose rendered templates this node keeps (forgotten with their tracking)."
    );
    describe_gauge!(
        CAMPAIGN_CACHE_BYTES,
        Unit::Bytes,
        "Rendered templates this node keeps, bytes (bounded; least recently used leave first)."
    );
    describe_gauge!(DNS_CACHED, "Domain answers this node keeps (bounded by dns.cache_domains, least recently used evicted).");
    describe_counter!(PARKED, "Jobs of paused campaigns, by action: parked (out of the queues until resume or cancel) and unparked (back to the ready streams).");
    describe_counter!(MESSAGES, "Messages by site, result and reason. A rise of deferred{reason=\"rate-limited\"} for one site means that provider is throttling us; bounced{reason=\"bad-mailbox\"} spikes mean a dirty list.");
    describe_counter!(REQUEUED, "Jobs put back without counting an attempt. A steady flow for one site means it is paused or at its limit while jobs keep arriving (expected for throttled sites).");
    describe_counter!(READ, "Jobs read from ready streams. Flat while queues are non-empty means the engine is stuck or at its in-flight budget.");
    describe_counter!(RECLAIMED, "Jobs reclaimed from a dead engine or replayed after a restart. Non-zero outside restarts means nodes are dying or stalling.");
    describe_gauge!(IN_FLIGHT, "Jobs held in memory. Pinned at the budget means deliveries are slower than reads (a slow site, or the network).");
    describe_gauge!(READY_DEPTH, "Ready stream length per shard. Growing during a send is normal; growing after expansion ended means delivery is too slow.");
    describe_gauge!(
        RETRY_DEPTH,
        "Deferred jobs waiting per shard. A jump means a site started deferring."
    );
    describe_gauge!(CONNECTIONS, "Open SMTP connections per site. Pinned at the site cap is normal at peak; zero with a backlog means the site is unreachable or paused.");
    describe_counter!(CONNECTS, "SMTP connection attempts by site and result. Failures rising means an MX is down or refusing us.");
    describe_histogram!(DELIVERY_LATENCY, Unit::Seconds, "Time from a job's enqueue to the accepting reply, per site. The tail growing during a peak means the backlog (or a site's limit) is delaying mail; compare with the queue depth.");
    describe_histogram!(REPLY_SECONDS, Unit::Seconds, "Time from the final dot to the reply, per site. A rising tail means the receiver is slowing us (tarpitting) before it throttles.");
    describe_counter!(FLEET_LEASES, "Leases of send tokens from a site's fleet-wide limiter (one Redis call each). Divided by fleet_tokens it is the limiter's Redis cost per message.");
    describe_counter!(FLEET_TOKENS, "Send tokens leased from a site's fleet-wide limiter. Its rate summed over nodes is the site's fleet rate.");
    describe_gauge!(FLEET_NODES, "Live engine nodes as this node sees them (heartbeats in hk:nodes). A drop means a node died or left; its shards move to the others.");
    describe_gauge!(SHARDS_OWNED, "Shards this node reads. Summed over nodes it is at least the shard count; a node at 0 has nothing to do.");
    describe_counter!(RATE_WAITS, "Times a message waited for its site's rate limiter. Rising means the site limit, not the engine, sets the pace.");
    describe_counter!(
        DNS_LOOKUPS,
        "MX lookups by result. temporary failures rising means the resolver is unhealthy."
    );
    describe_counter!(
        RETRY_MOVED,
        "Deferred jobs moved back to ready streams when due."
    );
    describe_gauge!(SITE_PAUSED, "1 while an operator has paused the site.");
    describe_gauge!(OLDEST_AGE, Unit::Seconds, "Age of the oldest unfinished job per shard. Minutes during a peak are normal; growing for long means delivery is slower than enqueueing (a throttled site, or too few engines).");
    describe_gauge!(
        REDIS_USED,
        Unit::Bytes,
        "Redis used_memory. Near the maxmemory, writes start failing: the queue is full."
    );
    describe_gauge!(REDIS_MAX, Unit::Bytes, "Redis maxmemory (0: no limit).");
    describe_gauge!(RSS, Unit::Bytes, "Resident memory of the engine process. Bounded by design (the in-flight budget): growth with the backlog is a bug.");
    describe_counter!(SITE_ADAPTIVE, "Adaptive-shaping changes by site and action (cut, suspend, block, recover). Cuts during a peak mean the provider is throttling us; see hk:site:events for the replies.");
    describe_gauge!(
        SITE_RATE_CAP,
        "Rate cap (msg/s) adaptive shaping holds on the site after a throttle reply; 0 when none."
    );
    describe_gauge!(
        SITE_SUSTAINABLE,
        "Rate (msg/s) the site was accepting when the provider last suspended it: it comes back below it and holds at 90% of it for a day (0: none learned)."
    );
    describe_gauge!(
        SITE_IN_DOUBT,
        "Messages a pipelining session of the site may have written in full and not yet had answered (the only ones a broken session can deliver twice). The pipelining window on a healthy site; low after sessions broke (cut connections, lines that are not replies)."
    );
    describe_gauge!(
        SITE_SUSPENDED,
        "1 while the site is suspended after a provider reply (Yahoo TSS04, say)."
    );
    describe_gauge!(SITE_OLDEST_AGE, Unit::Seconds, "Age (since first enqueue) of the oldest job waiting for the site: queue=\"ready\" in this node's queue for it, queue=\"retry\" in the retry sets (the leader's scan; other nodes export 0). Hours on a paused or suspended site means mail heading for expiry.");
    describe_gauge!(SITE_HELD, "Jobs in the retry sets held back by the site (paused, suspended, or at its queue capacity) and never deferred by a reply there (the leader's scan; other nodes export 0). Growing while the site is paused is the mail the pause keeps.");
    describe_gauge!(
        SITE_RETRY,
        "Jobs in the retry sets last routed to the site, held or deferred (the leader's scan)."
    );
    describe_gauge!(SITE_EXPIRING, "Jobs in the retry sets of the site that expire (end unsent, as expired) within the hour (the leader's scan), by why they wait: held (the site paused, suspended or full: mail a stop is about to lose) or deferred (servers said try later; mostly soft bounces reaching their natural end).");
    describe_gauge!(
        REDIS_OPS,
        "Redis instantaneous_ops_per_sec, summed over masters (INFO stats)."
    );
    describe_counter!(
        REDIS_COMMANDS,
        "Redis total_commands_processed, summed over masters (INFO stats)."
    );
    describe_counter!(REDIS_COMMAND_CALLS, "Redis calls per command (INFO commandstats), summed over masters. With hikyaku_redis_command_usec_total: average microseconds per call.");
    describe_counter!(
        REDIS_COMMAND_USEC,
        "Microseconds Redis spent per command (INFO commandstats), summed over masters."
    );
    describe_gauge!(
        REDIS_CLIENTS,
        "Redis connected_clients, summed over masters (INFO clients)."
    );
    describe_gauge!(SITE_BLOCKED, "1 while the site is blocked after a provider said retrying will not succeed (Yahoo TS03): alert.");
}

/// Thin, cloneable access to the metrics the engine updates.
#[derive(Debug, Clone, Default)]
pub struct Metrics;

impl Metrics {
    /// A job reached a result.
    pub fn outcome(&self, site: &str, result: &'static str, reason: &'static str) {
        OUTCOMES.with_borrow_mut(|m| {
            let by_site = m.entry((result, reason)).or_default();
            match by_site.get(site) {
                Some(c) => c.increment(1),
                None => {
                    let c = counter!(MESSAGES, "site" => site.to_owned(), "result" => result, "reason" => reason);
                    c.increment(1);
                    by_site.insert(site.to_owned(), c);
                }
            }
        });
    }

    /// A job was delivered `seconds` after it was queued.
    pub fn delivery_latency(&self, site: &str, seconds: f64) {
        LATENCY.with_borrow_mut(|m| match m.get(site) {
            Some(h) => h.record(seconds),
            None => {
                let h = histogram!(DELIVERY_LATENCY, "site" => site.to_owned());
                h.record(seconds);
                m.insert(site.to_owned(), h);
            }
        });
    }

    /// A job was put back without an attempt.
    pub fn requeued(&self, site: &str, reason: &'static str) {
        counter!(REQUEUED, "site" => site.to_owned(), "reason" => reason).increment(1);
    }

    /// Entries read.
    pub fn read(&self, n: usize) {
        counter!(READ).increment(n as u64);
    }

    /// Entries reclaimed or replayed.
    pub fn reclaimed(&self, n: usize) {
        if n > 0 {
            counter!(RECLAIMED).increment(n as u64);
        }
    }

    /// A DNS lookup finished.
    pub fn dns(&self, result: &'static str) {
        counter!(DNS_LOOKUPS, "result" => result).increment(1);
    }

    /// Queue gauges.
    pub fn depths(&self, shard: u16, ready: u64, retry: u64, in_flight: usize) {
        let s = shard.to_string();
        gauge!(READY_DEPTH, "shard" => s.clone()).set(ready as f64);
        gauge!(RETRY_DEPTH, "shard" => s).set(retry as f64);
        gauge!(IN_FLIGHT).set(in_flight as f64);
    }

    /// The oldest unfinished job of a shard is `seconds` old.
    pub fn oldest_age(&self, shard: u16, seconds: f64) {
        gauge!(OLDEST_AGE, "shard" => shard.to_string()).set(seconds);
    }

    /// Redis's own figures ([`crate::metrics::redis_info`]).
    pub fn redis(&self, info: &crate::metrics::redis_info::RedisInfo) {
        gauge!(REDIS_USED).set(info.used_memory as f64);
        gauge!(REDIS_MAX).set(info.max_memory as f64);
        gauge!(REDIS_OPS).set(info.ops_per_sec as f64);
        counter!(REDIS_COMMANDS).absolute(info.commands);
        gauge!(REDIS_CLIENTS).set(info.clients as f64);
        for (name, (calls, usec)) in &info.per_command {
            counter!(REDIS_COMMAND_CALLS, "command" => name.clone()).absolute(*calls);
            counter!(REDIS_COMMAND_USEC, "command" => name.clone()).absolute(*usec);
        }
    }

    /// The oldest job in this node's queue for `site` was first enqueued at `queued_ms`
    /// (`None`: the queue is empty).
    pub fn site_ready_age(&self, site: &str, queued_ms: Option<u64>, now_ms: u64) {
        let age = queued_ms.map_or(0.0, |q| now_ms.saturating_sub(q) as f64 / 1000.0);
        gauge!(SITE_OLDEST_AGE, "site" => site.to_owned(), "queue" => "ready").set(age);
    }

    /// A site's jobs in the retry sets ([`crate::control::held`]).
    pub fn site_held(&self, site: &str, t: &crate::control::held::SiteTally, now_ms: u64) {
        let age = if t.oldest_queued_ms > 0 {
            now_ms.saturating_sub(t.oldest_queued_ms) as f64 / 1000.0
        } else {
            0.0
        };
        let s = site.to_owned();
        gauge!(SITE_OLDEST_AGE, "site" => s.clone(), "queue" => "retry").set(age);
        gauge!(SITE_HELD, "site" => s.clone()).set(t.held as f64);
        gauge!(SITE_RETRY, "site" => s.clone()).set(t.jobs as f64);
        gauge!(SITE_EXPIRING, "site" => s.clone(), "why" => "held").set(t.expiring_held as f64);
        gauge!(SITE_EXPIRING, "site" => s, "why" => "deferred")
            .set(t.expiring.saturating_sub(t.expiring_held) as f64);
    }

    /// The process's resident memory, from `/proc/self/statm` (Linux; nothing elsewhere).
    pub fn resident_memory(&self) {
        let pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
        if let Some(pages) = pages {
            // 4 KiB pages: the page size of every Linux the engine ships for.
            gauge!(RSS).set((pages * 4096) as f64);
        }
    }

    /// A lease of `tokens` send tokens from `site`'s fleet limiter.
    pub fn lease(&self, site: &str, tokens: u32) {
        counter!(FLEET_LEASES, "site" => site.to_owned()).increment(1);
        counter!(FLEET_TOKENS, "site" => site.to_owned()).increment(u64::from(tokens));
    }

    /// The fleet as this node last saw it: live nodes, and shards it reads.
    pub fn membership(&self, nodes: usize, shards: usize) {
        gauge!(FLEET_NODES).set(nodes as f64);
        gauge!(SHARDS_OWNED).set(shards as f64);
    }

    /// What this node keeps in memory: campaigns tracked and cached (and their bytes),
    /// domain answers.
    pub fn caches(&self, tracked: usize, cached: usize, bytes: usize, domains: usize) {
        gauge!(CAMPAIGNS_TRACKED).set(tracked as f64);
        gauge!(CAMPAIGNS_CACHED).set(cached as f64);
        gauge!(CAMPAIGN_CACHE_BYTES).set(bytes as f64);
        gauge!(DNS_CACHED).set(domains as f64);
    }

    /// `n` jobs parked or unparked (`action`).
    pub fn parked(&self, action: &'static str, n: usize) {
        if n > 0 {
            counter!(PARKED, "action" => action).increment(n as u64);
        }
    }

    /// Jobs moved back from retry sets.
    pub fn moved(&self, n: usize) {
        if n > 0 {
            counter!(RETRY_MOVED).increment(n as u64);
        }
    }
}

/// Per-site metric handles, registered once so the hot path does no label lookups.
#[derive(Debug, Clone)]
pub struct SiteMetrics {
    /// Open connections.
    pub connections: metrics::Gauge,
    /// Successful connects.
    pub connect_ok: metrics::Counter,
    /// Failed connects.
    pub connect_failed: metrics::Counter,
    /// Reply latency.
    pub reply_seconds: metrics::Histogram,
    /// Rate-limiter waits.
    pub rate_waits: metrics::Counter,
    /// Paused flag.
    pub paused: metrics::Gauge,
    /// Adaptive rate cap.
    pub rate_cap: metrics::Gauge,
    /// Suspended flag.
    pub suspended: metrics::Gauge,
    /// Blocked flag.
    pub blocked: metrics::Gauge,
    /// Sustainable rate learned from a suspension.
    pub sustainable: metrics::Gauge,
    /// Limit on messages in doubt per session ([`crate::site::in_doubt`]).
    pub in_doubt: metrics::Gauge,
    /// Site name, for the adaptive-change counter.
    site: String,
}

impl SiteMetrics {
    /// Handles for `site`.
    pub fn new(site: &str) -> Self {
        let s = site.to_owned();
        // Adaptive changes are counted from zero, so dashboards and alerts see the series
        // before the first change.
        for action in ["cut", "suspend", "block", "recover"] {
            counter!(SITE_ADAPTIVE, "site" => s.clone(), "action" => action).absolute(0);
        }
        for reason in ["paused", "site-busy"] {
            counter!(REQUEUED, "site" => s.clone(), "reason" => reason).absolute(0);
        }
        SiteMetrics {
            connections: gauge!(CONNECTIONS, "site" => s.clone()),
            connect_ok: counter!(CONNECTS, "site" => s.clone(), "result" => "ok"),
            connect_failed: counter!(CONNECTS, "site" => s.clone(), "result" => "failed"),
            reply_seconds: histogram!(REPLY_SECONDS, "site" => s.clone()),
            rate_waits: counter!(RATE_WAITS, "site" => s.clone()),
            paused: gauge!(SITE_PAUSED, "site" => s.clone()),
            rate_cap: gauge!(SITE_RATE_CAP, "site" => s.clone()),
            suspended: gauge!(SITE_SUSPENDED, "site" => s.clone()),
            blocked: gauge!(SITE_BLOCKED, "site" => s.clone()),
            in_doubt: gauge!(SITE_IN_DOUBT, "site" => s.clone()),
            sustainable: gauge!(SITE_SUSTAINABLE, "site" => s.clone()),
            site: s,
        }
    }

    /// Counts an adaptive-shaping change.
    pub fn adaptive(&self, action: &'static str) {
        counter!(SITE_ADAPTIVE, "site" => self.site.clone(), "action" => action).increment(1);
    }
}

/// Drains recorded histogram samples into their buckets every few seconds. The exporter keeps
/// each sample until then (a scrape does it too): without upkeep an unscraped engine would
/// grow by every message's samples (measured: ~190 MB over 5.5M messages).
pub fn spawn_upkeep(handle: PrometheusHandle) {
    let _ = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(2));
            handle.run_upkeep();
        });
}

/// Serves `GET /metrics` (and nothing else) until `shutdown` resolves. A minimal HTTP/1.1
/// responder: one request per connection, which is how Prometheus scrapes.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (mut sock, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = &mut shutdown => return,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut used = 0;
            let read = async {
                while used < buf.len() {
                    let n = sock.read(&mut buf[used..]).await?;
                    if n == 0 {
                        break;
                    }
                    used += n;
                    if buf[..used].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            if tokio::time::timeout(std::time::Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..used]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if head.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                ("200 OK", handle.render())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
