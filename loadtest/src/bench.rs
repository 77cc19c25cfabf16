//! The benchmark (and the demo): a fresh Redis, the test DNS server, the sink and the engine as
//! separate processes, N jobs pre-enqueued, then delivery timed and each process's CPU and peak
//! memory read from `/proc`.
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
use tokio::process::Command;

use crate::dns::{DnsServer, Zone};
use crate::enqueue;
use crate::procs::{free_port, monotonic_now, start_redis, start_sink, Proc};
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
    /// Recipient domains and weights.
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
    /// Engine CPU (user + system) per delivered message, µs.
    pub engine_cpu_us_per_msg: f64,
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

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// The zone: each bench domain has one MX, `mx.<domain>`, at 127.0.0.1.
pub fn bench_zone(domains: &[(String, u32)]) -> String {
    domains
        .iter()
        .map(|(d, _)| format!("{d} MX 10 mx.{d}\nmx.{d} A 127.0.0.1\n"))
        .collect()
}

/// The engine config: one site per bench domain, rolled up by its MX host.
pub fn bench_engine_config(
    redis: &str,
    dns: SocketAddr,
    smtp_port: u16,
    shards: u16,
    domains: &[(String, u32)],
    connections: u32,
) -> String {
    let mut cfg = format!(
        "redis_url = \"{redis}\"\nshards = {shards}\nnode_id = \"bench\"\nehlo_name = \"bench.hikyaku.test\"\n\
         smtp_port = {smtp_port}\n\n[dns]\nnameserver = \"{dns}\"\n\n[queue]\nmax_in_flight = 20000\nread_batch = 1000\n\n"
    );
    for (i, (d, _)) in domains.iter().enumerate() {
        cfg.push_str(&format!(
            "[sites.bench{i}]\nmx_suffixes = [\"mx.{d}\"]\nmax_connections = {connections}\n\
             max_messages_per_connection = 1000\nqueue_capacity = 20000\n\n"
        ));
    }
    cfg
}

/// Runs the benchmark.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let dir = std::env::temp_dir().join(format!("hikyaku-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // Redis: fresh, nothing persisted.
    let (redis, redis_url) = start_redis(&opts.redis_bin, &dir).await?;

    // DNS, in this process (it answers a handful of queries).
    let zone = Zone::parse(&bench_zone(&opts.domains)).context("bench zone")?;
    let dns = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone).await?;

    // Sink, its own process so its CPU is measured apart.
    let smtp_port = free_port()?;
    let stats_port = free_port()?;
    let stats_addr = SocketAddr::from(([127, 0, 0, 1], stats_port));
    let sink = start_sink(&opts.loadtest_bin, smtp_port, stats_addr).await?;

    // Jobs, before the engine starts.
    let client = redis::Client::open(redis_url.as_str())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let shards = enqueue::shards(&mut con, opts.shards).await?;
    let campaign = 1;
    enqueue::write_snapshot(
        &mut con,
        &enqueue::bench_snapshot(campaign, opts.body_bytes),
    )
    .await?;
    let bar = opts.progress.then(|| {
        let b = ProgressBar::new(opts.count);
        b.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    if let Some(b) = &bar {
        b.set_prefix("enqueue");
    }
    let t_enqueue = monotonic_now();
    let jobs = enqueue::bench_jobs(campaign, opts.count, &opts.domains, 0);
    enqueue::write_jobs(&mut con, shards, jobs, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    })
    .await?;
    let enqueue_s = t_enqueue.elapsed().as_secs_f64();

    // Engine.
    let cfg_path = dir.join("engine.toml");
    std::fs::write(
        &cfg_path,
        bench_engine_config(
            &redis_url,
            dns.local_addr(),
            smtp_port,
            shards,
            &opts.domains,
            opts.connections,
        ),
    )?;
    let redis_cpu0 = procstat::cpu_seconds(redis.pid()).unwrap_or(0.0);
    let sink_cpu0 = procstat::cpu_seconds(sink.pid()).unwrap_or(0.0);
    let t0 = monotonic_now();
    let engine_start_ms = now_ms();
    let engine = Proc {
        name: "engine",
        child: Command::new(&opts.engine_bin)
            .arg("--config")
            .arg(&cfg_path)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", opts.engine_bin.display()))?,
    };
    if let Some(b) = &bar {
        b.set_prefix("deliver");
        b.set_position(0);
        b.reset_eta();
    }
    let mut stats = serde_json::Value::Null;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stats = sink_stats(stats_addr).await.unwrap_or(stats);
        let distinct = num(&stats, "distinct");
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
    let engine_cpu = procstat::cpu_seconds(engine.pid()).unwrap_or(0.0);
    let engine_rss = procstat::peak_rss_mb(engine.pid()).unwrap_or(0.0);
    let sink_cpu = procstat::cpu_seconds(sink.pid()).unwrap_or(0.0) - sink_cpu0;
    let sink_rss = procstat::peak_rss_mb(sink.pid()).unwrap_or(0.0);
    let redis_cpu = procstat::cpu_seconds(redis.pid()).unwrap_or(0.0) - redis_cpu0;
    let redis_rss = procstat::peak_rss_mb(redis.pid()).unwrap_or(0.0);
    if let Some(b) = &bar {
        b.finish();
    }
    engine.stop().await;
    sink.stop().await;
    redis.stop().await;
    dns.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

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
    let per_msg = |cpu: f64| {
        if delivered > 0 {
            cpu * 1e6 / delivered as f64
        } else {
            0.0
        }
    };
    Ok(BenchReport {
        count: opts.count,
        body_bytes: opts.body_bytes,
        delivered,
        lost: opts.count.saturating_sub(delivered),
        duplicates: num(&stats, "duplicates"),
        elapsed_s,
        first_delivery_s: first.saturating_sub(engine_start_ms) as f64 / 1000.0,
        delivered_per_sec: per_sec,
        delivered_per_min: per_sec * 60.0,
        steady_per_min: steady * 60.0,
        engine_cpu_us_per_msg: per_msg(engine_cpu),
        sink_cpu_us_per_msg: per_msg(sink_cpu),
        redis_cpu_us_per_msg: per_msg(redis_cpu),
        engine_peak_rss_mb: engine_rss,
        sink_peak_rss_mb: sink_rss,
        redis_peak_rss_mb: redis_rss,
        enqueue_s,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// Mean of the sink's per-second counts, leaving out the first and last (partial) seconds.
fn steady_per_sec(stats: &serde_json::Value) -> Option<f64> {
    let profiles = stats.get("profiles")?.as_object()?;
    let mut total: Vec<u64> = Vec::new();
    for p in profiles.values() {
        for (i, n) in p.get("per_second")?.as_array()?.iter().enumerate() {
            if total.len() <= i {
                total.resize(i + 1, 0);
            }
            total[i] += n.as_u64().unwrap_or(0);
        }
    }
    let first = total.iter().position(|&n| n > 0)?;
    let last = total.iter().rposition(|&n| n > 0)?;
    if last < first + 2 {
        return None;
    }
    let mid = &total[first + 1..last];
    Some(mid.iter().sum::<u64>() as f64 / mid.len() as f64)
}

#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl BenchReport {
    /// The human table.
    pub fn table(&self) -> String {
        format!(
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
        )
    }
}
