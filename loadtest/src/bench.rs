//! The benchmark (and the demo): a fresh Redis, the test DNS server, the sink and the engine as
//! separate processes, N jobs pre-enqueued, then delivery timed and each process's CPU and peak
//! memory read from `/proc`. With `engines` above one, that many engine nodes share the queues
//! as a fleet, and each node's `/metrics` gives its deliveries and the fleet limiter's Redis
//! calls (with `site_rate`, every site has a fleet-wide rate).
//!
//! Exactly-once is checked at the sink: every bench recipient is distinct and deliverable, so
//! `lost = N − distinct recipients accepted` and `duplicates` is the sink's count of repeats.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::compare::{self, CompareOptions, CompareReport};
use crate::dns::{DnsServer, Zone};
use crate::enqueue;
use crate::latency::Latency;
use crate::mix::{self, SiteRate, SiteSpec};
use crate::procs::{
    free_port, free_port_on, monotonic_now, start_engine, start_redis, start_sink,
    start_sink_listening, Proc,
};
use crate::procstat;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Messages.
    pub count: u64,
    /// Approximate body size in bytes.
    pub body_bytes: usize,
    /// Shards.
    pub shards: u16,
    /// Recipient domains and weights (one plain site each; ignored with `mix`).
    pub domains: Vec<(String, u32)>,
    /// Connection cap per site.
    pub connections: u32,
    /// The `hikyaku-engine` binary.
    pub engine_bin: PathBuf,
    /// The `hikyaku-loadtest` binary (for the sink process).
    pub loadtest_bin: PathBuf,
    /// The `redis-server` binary.
    pub redis_bin: String,
    /// Show a progress bar.
    pub progress: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// A provider mix ([`mix::realistic`]): sites with their own MX address, engine limits
    /// and sink profiles, reported per site. `None`: `domains`, unlimited, one plain sink.
    pub mix: Option<Vec<SiteSpec>>,
    /// After the run, the same count and size through Postfix's smtp-source → smtp-sink.
    pub compare: bool,
    /// The engine delivers to Postfix's `smtp-sink` (a DATA-only server: PIPELINING, no
    /// CHUNKING) instead of the project's sink, so hikyaku and `smtp-source` meet the same
    /// server. Deliveries are then the engines' own count of accepted messages (`smtp-sink`
    /// keeps none): duplicates are not measured.
    pub to_smtp_sink: bool,
    /// Sign every message with a fresh RSA-2048 DKIM key; measure OpenSSL's raw sign rate.
    pub dkim: bool,
    /// Japanese text and reader names: bodies go base64 (mostly non-ASCII).
    pub japanese: bool,
    /// Engine nodes (processes) sharing the queues as one fleet.
    pub engines: u32,
    /// Worker threads of each engine node's runtime (`worker_threads`).
    pub engine_threads: usize,
    /// A fleet-wide rate (msg/s) for every plain bench site, so the Redis limiter is in play.
    pub site_rate: Option<u32>,
    /// Faults the sink injects (plain sites only); sites then retry after 1 s.
    pub faults: Option<Faults>,
    /// The sink offers STARTTLS, so every session is TLS (the engine's default opportunistic
    /// STARTTLS takes it).
    pub starttls: bool,
}

/// Faults the bench's sink injects, per mille.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Connections cut in the middle of a message's content, without a reply.
    pub cut_per_mille: u32,
    /// Messages answered with a line that is not SMTP.
    pub garbage_per_mille: u32,
}

impl BenchOptions {
    /// The engine sites: the mix's, or one per domain.
    pub fn site_count(&self) -> usize {
        self.mix.as_ref().map_or(self.domains.len(), Vec::len)
    }

    /// The recipient domains and weights jobs are spread over.
    pub fn job_domains(&self) -> Vec<(String, u32)> {
        self.mix
            .as_deref()
            .map_or_else(|| self.domains.clone(), mix::domains)
    }
}

/// The figures. Field names are read by scripts; keep them stable.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Jobs enqueued.
    pub count: u64,
    /// Approximate message size.
    pub body_bytes: usize,
    /// Distinct recipients the sink accepted.
    pub delivered: u64,
    /// Enqueued but never accepted.
    pub lost: u64,
    /// Accepted more than once.
    pub duplicates: u64,
    /// Faults the sink injected (`--faults`): connections cut, lines that are not replies.
    pub faults_injected: u64,
    /// Duplicates per injected fault (0 when none was injected).
    pub duplicates_per_fault: f64,
    /// Sink sessions that went over TLS (`--starttls`; 0 otherwise).
    pub tls_sessions: u64,
    /// Seconds from engine start to the last acceptance.
    pub elapsed_s: f64,
    /// Seconds from engine start to the first acceptance.
    pub first_delivery_s: f64,
    /// Delivered per second over the whole run (engine start → last acceptance).
    pub delivered_per_sec: f64,
    /// Delivered per minute over the whole run.
    pub delivered_per_min: f64,
    /// Delivered per minute in steady state (whole seconds between the first and last).
    pub steady_per_min: f64,
    /// Engine nodes (processes) of the fleet.
    pub engines: u32,
    /// The server the engine delivered to: `sink` (the project's, CHUNKING offered) or
    /// `smtp-sink` (Postfix's, DATA only; `--compare smtp-sink`).
    pub target: &'static str,
    /// Engine CPU (user + system, all nodes) per delivered message, µs.
    pub engine_cpu_us_per_msg: f64,
    /// Per node with `--engines` above 1: its deliveries and its CPU per message it delivered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeFigures>,
    /// Fleet rate-limiter leases (Redis script calls) over the run, all nodes.
    pub limiter_leases: u64,
    /// Send tokens those leases granted.
    pub limiter_tokens: u64,
    /// Limiter Redis calls per delivered message (0 when no site has a rate).
    pub limiter_calls_per_msg: f64,
    /// Sink CPU per delivered message, µs.
    pub sink_cpu_us_per_msg: f64,
    /// Redis CPU per delivered message during delivery, µs.
    pub redis_cpu_us_per_msg: f64,
    /// Engine peak RSS, MiB.
    pub engine_peak_rss_mb: f64,
    /// Sink peak RSS, MiB.
    pub sink_peak_rss_mb: f64,
    /// Redis peak RSS, MiB.
    pub redis_peak_rss_mb: f64,
    /// Seconds enqueuing took.
    pub enqueue_s: f64,
    /// CPU cores of this machine.
    pub cores: usize,
    /// Worker threads of each engine node.
    pub engine_threads: usize,
    /// Enqueue → accepted latency from the engine's histogram (`latency_p50_ms`,
    /// `latency_p99_ms`, `latency_samples`; `latency_note` when missing).
    #[serde(flatten)]
    pub latency: Latency,
    /// `realistic` with `--mix realistic`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix: Option<String>,
    /// Per-site figures of a mix run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sites: Option<Vec<SiteRate>>,
    /// Every message RSA-2048 DKIM-signed (`--dkim`).
    pub dkim: bool,
    /// Japanese text and names, base64 bodies (`--japanese`).
    pub japanese: bool,
    /// OpenSSL's RSA-2048 signatures/s on all cores (`openssl speed`), with `--dkim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openssl_rsa2048_sign_per_sec: Option<f64>,
    /// Steady signed msg/s ÷ that rate, with `--dkim` (the sink and Redis share the cores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkim_ratio_vs_openssl: Option<f64>,
    /// Signed messages per engine CPU second ÷ OpenSSL's signatures per core second, with
    /// `--dkim`: how close the engine's own cost per message is to a bare signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkim_engine_ratio_vs_openssl: Option<f64>,
    /// The smtp-source yardstick (`smtp_source_*`, `smtp_sink_cpu_us_per_msg`,
    /// `ratio_vs_smtp_source`) with `--compare`.
    #[serde(flatten)]
    pub compare: Option<CompareReport>,
}

/// One engine node's share of a fleet run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFigures {
    /// Its node id.
    pub node: String,
    /// Messages it delivered (its `/metrics`).
    pub delivered: u64,
    /// Its CPU per message it delivered, µs.
    pub cpu_us_per_msg: f64,
    /// Its peak RSS, MiB.
    pub peak_rss_mb: f64,
}

/// What one node's `/metrics` says of a run: delivered messages, limiter leases and tokens.
async fn node_counters(addr: SocketAddr) -> (u64, u64, u64) {
    let Ok(resp) = crate::httpc::request(addr, "GET", "/metrics", None, None).await else {
        return (0, 0, 0);
    };
    let text = String::from_utf8_lossy(&resp.body);
    let (mut delivered, mut leases, mut tokens) = (0.0, 0.0, 0.0);
    for sample in text.lines().filter_map(crate::promtext::parse_line) {
        match sample.name {
            "hikyaku_messages_total"
                if sample
                    .labels
                    .iter()
                    .any(|(k, v)| *k == "result" && v == "delivered") =>
            {
                delivered += sample.value;
            }
            "hikyaku_fleet_leases_total" => leases += sample.value,
            "hikyaku_fleet_tokens_total" => tokens += sample.value,
            _ => {}
        }
    }
    (delivered as u64, leases as u64, tokens as u64)
}

/// GET /stats from the sink.
pub async fn sink_stats(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /stats HTTP/1.0\r\nHost: sink\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .context("stats reply has no body")?;
    Ok(serde_json::from_str(body)?)
}

/// A `u64` field of a JSON object, 0 if absent.
pub fn num(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// The zone: each bench domain has one MX, `mx.<domain>`, at 127.0.0.1.
pub fn bench_zone(domains: &[(String, u32)]) -> String {
    domains
        .iter()
        .map(|(d, _)| format!("{d} MX 10 mx.{d}\nmx.{d} A 127.0.0.1\n"))
        .collect()
}

/// The top of the engine config (everything before the site tables).
pub fn engine_config_head(
    redis: &str,
    dns: SocketAddr,
    smtp_port: u16,
    shards: u16,
    metrics: Option<SocketAddr>,
    threads: usize,
) -> String {
    let metrics = metrics.map_or_else(String::new, |a| format!("metrics_listen = \"{a}\"\n"));
    format!(
        "redis_url = \"{redis}\"\nshards = {shards}\nnode_id = \"bench\"\nehlo_name = \"bench.hikyaku.test\"\n\
         smtp_port = {smtp_port}\nworker_threads = {threads}\n{metrics}\n[dns]\nnameserver = \"{dns}\"\n\n[queue]\nmax_in_flight = 20000\nread_batch = 1000\n\n"
    )
}

/// The plain benchmark's site tables: one site per domain, rolled up by its MX host, unlimited
/// or at `rate` msg/s (fleet-wide) each.
pub fn bench_sites(domains: &[(String, u32)], connections: u32, rate: Option<u32>) -> String {
    let rate = rate.map_or_else(|| "unlimited".to_owned(), |r| format!("{r}/s"));
    let mut cfg = String::new();
    for (i, (d, _)) in domains.iter().enumerate() {
        cfg.push_str(&format!(
            "[sites.bench{i}]\nmx_suffixes = [\"mx.{d}\"]\nrate = \"{rate}\"\n\
             max_connections = {connections}\nmax_messages_per_connection = 1000\n\
             queue_capacity = 20000\n\n"
        ));
    }
    cfg
}

/// The engine config: one site per bench domain, rolled up by its MX host.
pub fn bench_engine_config(
    redis: &str,
    dns: SocketAddr,
    smtp_port: u16,
    shards: u16,
    domains: &[(String, u32)],
    connections: u32,
    threads: usize,
) -> String {
    engine_config_head(redis, dns, smtp_port, shards, None, threads)
        + &bench_sites(domains, connections, None)
}

/// Puts `metrics_listen = "addr"` at the top of an engine config.
pub fn with_metrics_listen(cfg: &str, addr: SocketAddr) -> String {
    format!("metrics_listen = \"{addr}\"\n{cfg}")
}

/// Redis, DNS and the sink, started for a run, with a connection to Redis.
#[derive(Debug)]
pub(crate) struct Rig {
    /// Scratch directory (Redis's, the engine config, logs).
    pub dir: PathBuf,
    /// The fresh Redis.
    pub redis: Proc,
    /// Its URL.
    pub redis_url: String,
    /// A connection to it.
    pub con: hikyaku_queue_schema::Redis,
    /// Shards recorded in it.
    pub shards: u16,
    /// The test DNS server.
    pub dns: DnsServer,
    /// The sink process.
    pub sink: Proc,
    /// The sink's `/stats`.
    pub stats_addr: SocketAddr,
    /// The sink's SMTP port (every listener's).
    pub smtp_port: u16,
}

impl Rig {
    /// Starts Redis, DNS (the mix's zone or the plain one) and the sink.
    pub async fn start(opts: &BenchOptions, tag: &str) -> anyhow::Result<Rig> {
        let dir = std::env::temp_dir().join(format!("hikyaku-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // Redis: fresh, nothing persisted.
        let (redis, redis_url) = start_redis(&opts.redis_bin, &dir).await?;
        // DNS, in this process (it answers a handful of queries).
        let zone_text = match &opts.mix {
            Some(sites) => mix::zone(sites),
            None => bench_zone(&opts.domains),
        };
        let zone = Zone::parse(&zone_text).context("bench zone")?;
        let dns = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone).await?;
        // Sink, its own process so its CPU is measured apart.
        let stats_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let (sink, smtp_port) = match &opts.mix {
            _ if opts.to_smtp_sink => {
                let port = free_port()?;
                let sessions = u32::try_from(opts.site_count())
                    .unwrap_or(u32::MAX)
                    .saturating_mul(opts.connections);
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let sink =
                    compare::start_smtp_sink(addr, sessions, true, &dir, "smtp-sink-engine.log")
                        .await?;
                (sink, port)
            }
            Some(sites) => {
                let ips: Vec<_> = sites.iter().map(|s| s.mx_ip).collect();
                let port = free_port_on(&ips)?;
                let listens = mix::sink_listens(sites, port);
                (
                    start_sink_listening(&opts.loadtest_bin, &listens, stats_addr, opts.starttls)
                        .await?,
                    port,
                )
            }
            None => {
                let port = free_port()?;
                let sink = match opts.faults {
                    Some(f) => {
                        let listen = format!(
                            "127.0.0.1:{port}=plain,cut={},garbage={}",
                            f.cut_per_mille, f.garbage_per_mille
                        );
                        start_sink_listening(
                            &opts.loadtest_bin,
                            &[listen],
                            stats_addr,
                            opts.starttls,
                        )
                        .await?
                    }
                    None => start_sink(&opts.loadtest_bin, port, stats_addr, opts.starttls).await?,
                };
                (sink, port)
            }
        };
        let client = hikyaku_queue_schema::RedisClient::open(redis_url.as_str())?;
        let mut con = client.connect().await?;
        let shards = enqueue::shards(&mut con, opts.shards).await?;
        Ok(Rig {
            dir,
            redis,
            redis_url,
            con,
            shards,
            dns,
            sink,
            stats_addr,
            smtp_port,
        })
    }

    /// Writes the bench campaign and `count` jobs (stamped with the time they are written, so
    /// the engine's latency histogram measures enqueue → accepted); returns the seconds taken.
    pub async fn enqueue(
        &mut self,
        opts: &BenchOptions,
        count: u64,
        bar: Option<&ProgressBar>,
    ) -> anyhow::Result<f64> {
        let campaign = 1;
        enqueue::write_snapshot(
            &mut self.con,
            &enqueue::bench_snapshot(campaign, opts.body_bytes, opts.japanese),
        )
        .await?;
        let domains = opts.job_domains();
        let t = monotonic_now();
        let jobs = enqueue::bench_jobs(campaign, count, &domains, 0, opts.japanese).map(|mut j| {
            j.queued_ms = now_ms();
            j
        });
        enqueue::write_jobs(&mut self.con, self.shards, jobs, |n| {
            if let Some(b) = bar {
                b.set_position(n);
            }
        })
        .await?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Writes the config of engine node `node` (with `/metrics` at `metrics`) and starts it.
    pub fn start_engine(
        &self,
        opts: &BenchOptions,
        metrics: SocketAddr,
        node: u32,
    ) -> anyhow::Result<Proc> {
        let head = engine_config_head(
            &self.redis_url,
            self.dns.local_addr(),
            self.smtp_port,
            self.shards,
            Some(metrics),
            opts.engine_threads,
        );
        let sites = match &opts.mix {
            Some(sites) => mix::engine_sites(sites, opts.connections),
            None => {
                let sites = bench_sites(&opts.domains, opts.connections, opts.site_rate);
                if opts.faults.is_some() {
                    // Deferred by a fault, a message comes back after a second.
                    sites.replace(
                        "queue_capacity = 20000\n",
                        "queue_capacity = 20000\nretry_initial = \"1s\"\nretry_factor = 1.0\nretry_jitter = 0.0\n",
                    )
                } else {
                    sites
                }
            }
        };
        let mut dkim = String::new();
        if opts.dkim {
            let key = self.dir.join("dkim-rsa2048.pem");
            crate::dkim_cost::generate_key(&key)?;
            dkim = crate::dkim_cost::engine_table(enqueue::BENCH_FROM_DOMAIN, &key);
        }
        let head = head.replacen(
            "node_id = \"bench\"",
            &format!("node_id = \"bench-{node}\""),
            1,
        );
        let cfg_path = self.dir.join(format!("engine-{node}.toml"));
        std::fs::write(&cfg_path, head + &sites + &dkim)?;
        start_engine(&opts.engine_bin, &cfg_path)
    }

    /// Stops the sink, Redis and DNS (the caller stops the engine first).
    pub async fn stop(self) {
        self.sink.stop().await;
        self.redis.stop().await;
        self.dns.stop().await;
    }
}

/// A progress bar in the bench's style.
fn bar(len: u64) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b
}

/// CPU µs per message, 0 without messages.
pub fn per_msg(cpu_s: f64, messages: u64) -> f64 {
    if messages > 0 {
        cpu_s * 1e6 / messages as f64
    } else {
        0.0
    }
}

/// Runs the benchmark.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    if opts.compare {
        // Before the long part: fail now if the yardstick cannot run.
        compare::find_tools()?;
    }
    let mut rig = Rig::start(opts, "bench").await?;

    // Jobs, before the engine starts.
    let bar = opts.progress.then(|| bar(opts.count));
    if let Some(b) = &bar {
        b.set_prefix("enqueue");
    }
    let enqueue_s = rig.enqueue(opts, opts.count, bar.as_ref()).await?;

    // Engines.
    let mut metrics_addrs = Vec::new();
    for _ in 0..opts.engines.max(1) {
        metrics_addrs.push(SocketAddr::from(([127, 0, 0, 1], free_port()?)));
    }
    let metrics_addr = metrics_addrs[0];
    let redis_cpu0 = procstat::cpu_seconds(rig.redis.pid()).unwrap_or(0.0);
    let sink_cpu0 = procstat::cpu_seconds(rig.sink.pid()).unwrap_or(0.0);
    let t0 = monotonic_now();
    let engine_start_ms = now_ms();
    let mut engines = Vec::new();
    for (node, addr) in (0u32..).zip(&metrics_addrs) {
        engines.push(rig.start_engine(opts, *addr, node)?);
    }
    if let Some(b) = &bar {
        b.set_prefix("deliver");
        b.set_position(0);
        b.reset_eta();
    }
    let mut stats = serde_json::Value::Null;
    // Against smtp-sink, the engines' own count (the acceptance times are read here).
    let mut accepted_ms = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(if opts.to_smtp_sink {
            20
        } else {
            200
        }))
        .await;
        let distinct = if opts.to_smtp_sink {
            let mut n = 0;
            for addr in &metrics_addrs {
                n += node_counters(*addr).await.0;
            }
            if n > 0 && accepted_ms.0 == 0 {
                accepted_ms.0 = now_ms();
            }
            accepted_ms.1 = now_ms();
            stats = serde_json::json!({
                "distinct": n,
                "first_accept_ms": accepted_ms.0,
                "last_accept_ms": accepted_ms.1,
            });
            n
        } else {
            stats = sink_stats(rig.stats_addr).await.unwrap_or(stats);
            num(&stats, "distinct")
        };
        if let Some(b) = &bar {
            b.set_position(distinct);
        }
        if distinct >= opts.count {
            break;
        }
        if t0.elapsed() > opts.timeout {
            tracing::warn!(
                "bench timed out with {distinct} of {} delivered",
                opts.count
            );
            break;
        }
    }
    let mut engine_cpu = 0.0;
    let mut engine_rss: f64 = 0.0;
    let mut nodes = Vec::new();
    let (mut limiter_leases, mut limiter_tokens) = (0, 0);
    for ((node, engine), addr) in (0u32..).zip(&engines).zip(&metrics_addrs) {
        let cpu = procstat::cpu_seconds(engine.pid()).unwrap_or(0.0);
        let rss = procstat::peak_rss_mb(engine.pid()).unwrap_or(0.0);
        let (delivered, leases, tokens) = node_counters(*addr).await;
        engine_cpu += cpu;
        engine_rss = engine_rss.max(rss);
        limiter_leases += leases;
        limiter_tokens += tokens;
        nodes.push(NodeFigures {
            node: format!("bench-{node}"),
            delivered,
            cpu_us_per_msg: per_msg(cpu, delivered),
            peak_rss_mb: rss,
        });
    }
    if nodes.len() < 2 {
        nodes.clear();
    }
    let sink_cpu = procstat::cpu_seconds(rig.sink.pid()).unwrap_or(0.0) - sink_cpu0;
    let sink_rss = procstat::peak_rss_mb(rig.sink.pid()).unwrap_or(0.0);
    let redis_cpu = procstat::cpu_seconds(rig.redis.pid()).unwrap_or(0.0) - redis_cpu0;
    let redis_rss = procstat::peak_rss_mb(rig.redis.pid()).unwrap_or(0.0);
    if let Some(b) = &bar {
        b.finish();
    }
    // The histogram, once everything is delivered and before the engine goes.
    let latency = Latency::scrape(metrics_addr).await;
    for engine in engines {
        engine.stop().await;
    }
    let dir = rig.dir.clone();
    rig.stop().await;

    let delivered = num(&stats, "distinct");
    let first = stats
        .get("first_accept_ms")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(engine_start_ms);
    let last = stats
        .get("last_accept_ms")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(engine_start_ms);
    let elapsed_s = (last.saturating_sub(engine_start_ms) as f64 / 1000.0).max(1e-3);
    let per_sec = delivered as f64 / elapsed_s;
    let steady = steady_per_sec(&stats).unwrap_or(per_sec);
    let sites = opts.mix.as_deref().map(|s| mix::site_rates(&stats, s));
    let faults_injected: u64 = stats
        .get("profiles")
        .and_then(serde_json::Value::as_object)
        .map_or(0, |p| p.values().map(|v| num(v, "faults")).sum());
    let tls_sessions: u64 = stats
        .get("profiles")
        .and_then(serde_json::Value::as_object)
        .map_or(0, |p| p.values().map(|v| num(v, "tls_sessions")).sum());
    let mut report = BenchReport {
        count: opts.count,
        body_bytes: opts.body_bytes,
        delivered,
        lost: opts.count.saturating_sub(delivered),
        duplicates: num(&stats, "duplicates"),
        faults_injected,
        tls_sessions,
        duplicates_per_fault: if faults_injected > 0 {
            num(&stats, "duplicates") as f64 / faults_injected as f64
        } else {
            0.0
        },
        elapsed_s,
        first_delivery_s: first.saturating_sub(engine_start_ms) as f64 / 1000.0,
        delivered_per_sec: per_sec,
        delivered_per_min: per_sec * 60.0,
        steady_per_min: steady * 60.0,
        engines: opts.engines.max(1),
        target: if opts.to_smtp_sink {
            "smtp-sink"
        } else {
            "sink"
        },
        engine_cpu_us_per_msg: per_msg(engine_cpu, delivered),
        nodes,
        limiter_leases,
        limiter_tokens,
        limiter_calls_per_msg: if delivered > 0 {
            limiter_leases as f64 / delivered as f64
        } else {
            0.0
        },
        sink_cpu_us_per_msg: per_msg(sink_cpu, delivered),
        redis_cpu_us_per_msg: per_msg(redis_cpu, delivered),
        engine_peak_rss_mb: engine_rss,
        sink_peak_rss_mb: sink_rss,
        redis_peak_rss_mb: redis_rss,
        enqueue_s,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        engine_threads: opts.engine_threads,
        latency,
        mix: opts.mix.as_ref().map(|_| "realistic".to_owned()),
        sites,
        dkim: opts.dkim,
        japanese: opts.japanese,
        openssl_rsa2048_sign_per_sec: None,
        dkim_ratio_vs_openssl: None,
        dkim_engine_ratio_vs_openssl: None,
        compare: None,
    };
    if opts.dkim {
        // With every hikyaku process gone, so OpenSSL has the machine to itself.
        let rate = crate::dkim_cost::openssl_sign_rate(report.cores)?;
        report.openssl_rsa2048_sign_per_sec = Some(rate);
        report.dkim_ratio_vs_openssl = Some(steady / rate);
        let per_core = rate / report.cores.max(1) as f64;
        if report.engine_cpu_us_per_msg > 0.0 {
            report.dkim_engine_ratio_vs_openssl =
                Some(1e6 / report.engine_cpu_us_per_msg / per_core);
        }
    }

    // The yardstick, with every hikyaku process gone so it has the machine to itself.
    if opts.compare {
        let sessions = u32::try_from(opts.site_count())
            .unwrap_or(u32::MAX)
            .saturating_mul(opts.connections);
        let result = compare::run(
            &CompareOptions {
                count: opts.count,
                body_bytes: opts.body_bytes,
                sessions,
                timeout: opts.timeout,
            },
            &dir,
        )
        .await;
        match result {
            Ok(mut c) => {
                c.ratio_vs_smtp_source =
                    compare::ratio(report.steady_per_min, c.smtp_source_per_min);
                report.compare = Some(c);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.context("the smtp-source comparison failed"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

/// The sink's steady msg/s over all its profiles (see [`mix::steady_rate`]).
fn steady_per_sec(stats: &serde_json::Value) -> Option<f64> {
    let profiles = stats.get("profiles")?.as_object()?;
    let series: Vec<Vec<u64>> = profiles
        .keys()
        .map(|name| mix::profile_series(stats, name))
        .collect();
    mix::steady_rate(&mix::sum_series(series.iter().map(Vec::as_slice)))
}

/// Wall-clock ms since the epoch (job stamps and the sink's acceptance times are wall clock).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl BenchReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "delivered          {delivered} of {count} ({lost} lost, {dup} duplicates)\n\
             elapsed            {el:.2} s (first delivery after {fd:.2} s; enqueue took {eq:.2} s)\n\
             rate               {pm:.0} msg/min whole run, {sm:.0} msg/min steady ({ps:.0} msg/s)\n\
             CPU per message    engine {ec:.1} µs, sink {sc:.1} µs, redis {rc:.1} µs\n\
             peak RSS           engine {er:.0} MiB, sink {sr:.0} MiB, redis {rr:.0} MiB\n",
            delivered = self.delivered,
            count = self.count,
            lost = self.lost,
            dup = self.duplicates,
            el = self.elapsed_s,
            fd = self.first_delivery_s,
            eq = self.enqueue_s,
            pm = self.delivered_per_min,
            sm = self.steady_per_min,
            ps = self.delivered_per_sec,
            ec = self.engine_cpu_us_per_msg,
            sc = self.sink_cpu_us_per_msg,
            rc = self.redis_cpu_us_per_msg,
            er = self.engine_peak_rss_mb,
            sr = self.sink_peak_rss_mb,
            rr = self.redis_peak_rss_mb,
        );
        out.push_str(&self.latency.line());
        if self.target != "sink" {
            out.push_str(&format!(
                "server             Postfix {} (DATA only, PIPELINING): deliveries are the engine's count\n",
                self.target
            ));
        }
        if self.faults_injected > 0 {
            out.push_str(&format!(
                "faults             {} injected, {:.2} duplicates per fault\n",
                self.faults_injected, self.duplicates_per_fault
            ));
        }
        if !self.nodes.is_empty() {
            out.push_str(&format!(
                "fleet              {} engine nodes\n",
                self.engines
            ));
            for n in &self.nodes {
                out.push_str(&format!(
                    "  {:<16} {} delivered, {:.1} µs CPU per message, {:.0} MiB peak\n",
                    n.node, n.delivered, n.cpu_us_per_msg, n.peak_rss_mb
                ));
            }
        }
        if self.limiter_leases > 0 {
            out.push_str(&format!(
                "fleet limiter      {} Redis leases for {} tokens: {:.4} calls per message\n",
                self.limiter_leases, self.limiter_tokens, self.limiter_calls_per_msg
            ));
        }
        if let (Some(rate), Some(ratio)) = (
            self.openssl_rsa2048_sign_per_sec,
            self.dkim_ratio_vs_openssl,
        ) {
            out.push_str(&format!(
                "DKIM RSA-2048      every message signed: {:.0} msg/s steady; openssl speed rsa2048 \
                 on {} cores: {rate:.0} sign/s → {:.0}% of the raw sign rate ({:.0}% per engine CPU second)\n",
                self.steady_per_min / 60.0,
                self.cores,
                ratio * 100.0,
                self.dkim_engine_ratio_vs_openssl.unwrap_or(0.0) * 100.0
            ));
        }
        if let Some(sites) = &self.sites {
            out.push_str("\nper site (msg/s over each site's own first → last acceptance)\n");
            out.push_str(&mix::sites_table(sites));
        }
        if let Some(c) = &self.compare {
            out.push('\n');
            out.push_str(&c.table());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hikyaku_engine::units::Rate;
    use hikyaku_engine::EngineConfig;

    fn head() -> String {
        engine_config_head(
            "redis://127.0.0.1:7000",
            SocketAddr::from(([127, 0, 0, 1], 5353)),
            2525,
            4,
            Some(SocketAddr::from(([127, 0, 0, 1], 9101))),
            1,
        )
    }

    #[test]
    fn plain_config_parses_with_metrics() {
        let domains = enqueue::parse_domains("gmail.test:50,yahoo.test:20").unwrap();
        let cfg =
            EngineConfig::from_toml(&(head() + &bench_sites(&domains, 8, None)), "t").unwrap();
        assert_eq!(
            cfg.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9101)))
        );
        let sites = cfg.site_policies();
        assert_eq!(
            sites["bench1"].mx_suffixes,
            vec!["mx.yahoo.test".to_owned()]
        );
        assert_eq!(sites["bench1"].rate, Rate::UNLIMITED);
        // The e2e config: metrics put on top of the plain one.
        let e2e = with_metrics_listen(
            &bench_engine_config(
                "redis://x",
                SocketAddr::from(([127, 0, 0, 1], 53)),
                25,
                2,
                &domains,
                4,
                2,
            ),
            SocketAddr::from(([127, 0, 0, 1], 9102)),
        );
        let cfg = EngineConfig::from_toml(&e2e, "t").unwrap();
        assert_eq!(cfg.metrics_listen.map(|a| a.port()), Some(9102));
        assert_eq!(cfg.worker_threads, Some(2));
    }

    #[test]
    fn realistic_mix_config_sets_the_limits() {
        let sites = mix::realistic();
        let cfg = EngineConfig::from_toml(&(head() + &mix::engine_sites(&sites, 8)), "t").unwrap();
        let p = cfg.site_policies();
        assert_eq!(p["yahoo"].rate, Rate::per_second(2000.0));
        for carrier in ["docomo", "au", "softbank"] {
            assert_eq!(p[carrier].rate, Rate::per_second(300.0), "{carrier}");
            assert_eq!(p[carrier].max_messages_per_connection, 100);
            assert_eq!(p[carrier].max_connections, 8);
            assert_eq!(p[carrier].mx_suffixes, vec![format!("mx.{carrier}.test")]);
        }
        assert_eq!(p["google"].rate, Rate::UNLIMITED);
        assert_eq!(p["other"].rate, Rate::UNLIMITED);
        assert_eq!(p["google"].mx_suffixes, vec!["mx.gmail.test".to_owned()]);
        assert_eq!(p["yahoo"].queue_capacity, 4000);
    }

    #[test]
    fn steady_rate_sums_profiles() {
        let stats = serde_json::json!({"profiles": {
            "a": {"per_second": [0, 5, 10, 10, 3]},
            "b": {"per_second": [0, 0, 10, 10, 10, 1]},
        }});
        // Totals 0,5,20,20,13,1: the middle seconds are 20, 20, 13.
        assert_eq!(steady_per_sec(&stats), Some(53.0 / 3.0));
        assert_eq!(steady_per_sec(&serde_json::json!({})), None);
    }

    #[test]
    fn report_json_keeps_its_keys() {
        let r = BenchReport {
            count: 10,
            body_bytes: 2048,
            delivered: 10,
            lost: 0,
            duplicates: 0,
            faults_injected: 0,
            duplicates_per_fault: 0.0,
            tls_sessions: 0,
            elapsed_s: 1.0,
            first_delivery_s: 0.1,
            delivered_per_sec: 10.0,
            delivered_per_min: 600.0,
            steady_per_min: 600.0,
            engines: 1,
            target: "sink",
            engine_cpu_us_per_msg: 1.0,
            nodes: Vec::new(),
            limiter_leases: 0,
            limiter_tokens: 0,
            limiter_calls_per_msg: 0.0,
            sink_cpu_us_per_msg: 1.0,
            redis_cpu_us_per_msg: 1.0,
            engine_peak_rss_mb: 1.0,
            sink_peak_rss_mb: 1.0,
            redis_peak_rss_mb: 1.0,
            enqueue_s: 0.1,
            cores: 2,
            engine_threads: 1,
            latency: Latency::missing("absent"),
            mix: None,
            sites: None,
            dkim: false,
            japanese: false,
            openssl_rsa2048_sign_per_sec: None,
            dkim_ratio_vs_openssl: None,
            dkim_engine_ratio_vs_openssl: None,
            compare: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "delivered",
            "lost",
            "duplicates",
            "faults_injected",
            "duplicates_per_fault",
            "tls_sessions",
            "delivered_per_min",
            "steady_per_min",
            "engine_cpu_us_per_msg",
            "engine_peak_rss_mb",
            "redis_cpu_us_per_msg",
            "redis_peak_rss_mb",
            "sink_cpu_us_per_msg",
            "sink_peak_rss_mb",
            "engines",
            "limiter_calls_per_msg",
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_note",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(v["latency_p50_ms"].is_null());
        assert!(v.get("sites").is_none() && v.get("ratio_vs_smtp_source").is_none());
        assert!(v.get("nodes").is_none(), "no per-node list for one engine");
        let with = BenchReport {
            compare: Some(CompareReport {
                smtp_source_count: 10,
                smtp_source_sessions: 32,
                smtp_source_body_bytes: 2048,
                smtp_source_elapsed_s: 1.0,
                smtp_source_per_min: 600.0,
                smtp_source_cpu_us_per_msg: 2.0,
                smtp_sink_cpu_us_per_msg: 3.0,
                ratio_vs_smtp_source: 1.0,
                smtp_source_note: None,
            }),
            ..r
        };
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(v["ratio_vs_smtp_source"], 1.0);
        assert_eq!(v["smtp_sink_cpu_us_per_msg"], 3.0);
    }
}
