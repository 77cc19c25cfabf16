//! `bench --backlog N --duration-s S`, the memory run: N jobs waiting in Redis, then the engine
//! started and its RSS sampled every second for S seconds while it delivers, to show that its
//! memory is bounded by its in-flight budget, not by the backlog (target: ≤ 256 MB with
//! 10,000,000 jobs waiting, flat over the run).

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::bench::{num, per_msg, sink_stats, BenchOptions, Rig};
use crate::procs::{free_port, monotonic_now};
use crate::procstat;

/// The backlog.
pub const DEFAULT_BACKLOG: u64 = 10_000_000;
/// The engine RSS the issue allows with that backlog, MB.
pub const RSS_TARGET_MB: f64 = 256.0;

/// The figures of a memory run. Field names are read by scripts; keep them stable.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogReport {
    /// Always `backlog`.
    pub mode: &'static str,
    /// Jobs waiting in Redis when the engine started.
    pub backlog: u64,
    /// Approximate message size.
    pub body_bytes: usize,
    /// Seconds the engine ran while sampled.
    pub duration_s: f64,
    /// Seconds enqueuing took.
    pub enqueue_s: f64,
    /// Distinct recipients the sink accepted during the window.
    pub delivered: u64,
    /// Accepted more than once (must be 0).
    pub duplicates: u64,
    /// Delivered per minute over the window.
    pub delivered_per_min: f64,
    /// Engine CPU per delivered message, µs.
    pub engine_cpu_us_per_msg: f64,
    /// Sink CPU per delivered message, µs.
    pub sink_cpu_us_per_msg: f64,
    /// Redis CPU per delivered message, µs.
    pub redis_cpu_us_per_msg: f64,
    /// Engine peak RSS (VmHWM) at the end of the window, MiB.
    pub engine_peak_rss_mb: f64,
    /// Engine RSS at the first sample (1 s), MiB.
    pub engine_rss_first_mb: f64,
    /// Engine RSS at the last sample, MiB.
    pub engine_rss_last_mb: f64,
    /// Last minus first sample, MiB (flat ≈ 0).
    pub engine_rss_growth_mb: f64,
    /// Engine RSS once a second, MiB.
    pub engine_rss_samples_mb: Vec<f64>,
    /// Sink peak RSS, MiB.
    pub sink_peak_rss_mb: f64,
    /// Redis peak RSS, MiB.
    pub redis_peak_rss_mb: f64,
    /// Redis `used_memory` with the whole backlog enqueued, MiB.
    pub redis_used_memory_mb: f64,
    /// Redis `used_memory` at the end of the window, MiB.
    pub redis_used_memory_end_mb: f64,
    /// CPU cores of this machine.
    pub cores: usize,
}

/// A numeric field (`used_memory:123`) of a Redis `INFO` reply.
pub fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .find(|(k, _)| *k == field)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Redis `used_memory`, MiB (0 if unreadable).
async fn redis_used_mb(con: &mut hikyaku_queue_schema::Redis) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .unwrap_or_default();
    info_field(&info, "used_memory").map_or(0.0, |b| b as f64 / (1024.0 * 1024.0))
}

/// Runs it.
pub async fn run(
    opts: &BenchOptions,
    backlog: u64,
    duration: Duration,
) -> anyhow::Result<BacklogReport> {
    let mut rig = Rig::start(opts, "backlog").await?;
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new(backlog);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_prefix("enqueue");
        b
    });
    let enqueue_s = rig.enqueue(opts, backlog, bar.as_ref()).await?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let redis_used = redis_used_mb(&mut rig.con).await;

    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let redis_cpu0 = procstat::cpu_seconds(rig.redis.pid()).unwrap_or(0.0);
    let sink_cpu0 = procstat::cpu_seconds(rig.sink.pid()).unwrap_or(0.0);
    let t0 = monotonic_now();
    let engine = rig.start_engine(opts, metrics_addr, 0)?;
    let seconds = duration.as_secs().max(1);
    let mut samples = Vec::with_capacity(seconds as usize);
    for i in 1..=seconds {
        let at = t0 + Duration::from_secs(i);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        match procstat::rss_mb(engine.pid()) {
            Some(mb) => samples.push((mb * 10.0).round() / 10.0),
            None => {
                engine.stop().await;
                rig.stop().await;
                bail!("the engine exited after {} s", i - 1);
            }
        }
    }
    let stats = sink_stats(rig.stats_addr).await.unwrap_or_default();
    let window = t0.elapsed().as_secs_f64();
    let engine_cpu = procstat::cpu_seconds(engine.pid()).unwrap_or(0.0);
    let engine_peak = procstat::peak_rss_mb(engine.pid()).unwrap_or(0.0);
    let sink_cpu = procstat::cpu_seconds(rig.sink.pid()).unwrap_or(0.0) - sink_cpu0;
    let redis_cpu = procstat::cpu_seconds(rig.redis.pid()).unwrap_or(0.0) - redis_cpu0;
    let sink_rss = procstat::peak_rss_mb(rig.sink.pid()).unwrap_or(0.0);
    let redis_rss = procstat::peak_rss_mb(rig.redis.pid()).unwrap_or(0.0);
    let redis_used_end = redis_used_mb(&mut rig.con).await;
    engine.stop().await;
    let dir = rig.dir.clone();
    rig.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

    let delivered = num(&stats, "distinct");
    let first = samples.first().copied().unwrap_or(0.0);
    let last = samples.last().copied().unwrap_or(0.0);
    Ok(BacklogReport {
        mode: "backlog",
        backlog,
        body_bytes: opts.body_bytes,
        duration_s: window,
        enqueue_s,
        delivered,
        duplicates: num(&stats, "duplicates"),
        delivered_per_min: delivered as f64 / window.max(1e-3) * 60.0,
        engine_cpu_us_per_msg: per_msg(engine_cpu, delivered),
        sink_cpu_us_per_msg: per_msg(sink_cpu, delivered),
        redis_cpu_us_per_msg: per_msg(redis_cpu, delivered),
        engine_peak_rss_mb: engine_peak,
        engine_rss_first_mb: first,
        engine_rss_last_mb: last,
        engine_rss_growth_mb: ((last - first) * 10.0).round() / 10.0,
        engine_rss_samples_mb: samples,
        sink_peak_rss_mb: sink_rss,
        redis_peak_rss_mb: redis_rss,
        redis_used_memory_mb: redis_used,
        redis_used_memory_end_mb: redis_used_end,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

impl BacklogReport {
    /// The human table.
    pub fn table(&self) -> String {
        let verdict = if self.engine_peak_rss_mb <= RSS_TARGET_MB {
            "within"
        } else {
            "OVER"
        };
        let min = self
            .engine_rss_samples_mb
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let max = self
            .engine_rss_samples_mb
            .iter()
            .copied()
            .fold(0.0, f64::max);
        format!(
            "backlog            {b} jobs in Redis (enqueued in {eq:.1} s; redis used_memory {ru:.0} MiB → {rue:.0} MiB)\n\
             window             {d:.1} s: {del} delivered ({dup} duplicates), {pm:.0} msg/min\n\
             engine RSS         first {f:.1} MiB, last {l:.1} MiB (growth {g:+.1}), samples {min:.1}–{max:.1} MiB\n\
             engine peak RSS    {p:.1} MiB — {verdict} the {t:.0} MiB target\n\
             CPU per message    engine {ec:.1} µs, sink {sc:.1} µs, redis {rc:.1} µs\n\
             peak RSS           sink {sr:.0} MiB, redis {rr:.0} MiB\n",
            b = self.backlog,
            eq = self.enqueue_s,
            ru = self.redis_used_memory_mb,
            rue = self.redis_used_memory_end_mb,
            d = self.duration_s,
            del = self.delivered,
            dup = self.duplicates,
            pm = self.delivered_per_min,
            f = self.engine_rss_first_mb,
            l = self.engine_rss_last_mb,
            g = self.engine_rss_growth_mb,
            min = if min.is_finite() { min } else { 0.0 },
            p = self.engine_peak_rss_mb,
            t = RSS_TARGET_MB,
            ec = self.engine_cpu_us_per_msg,
            sc = self.sink_cpu_us_per_msg,
            rc = self.redis_cpu_us_per_msg,
            sr = self.sink_peak_rss_mb,
            rr = self.redis_peak_rss_mb,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:2097152\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1_048_576));
        assert_eq!(info_field(info, "used_memory_rss"), Some(2_097_152));
        assert_eq!(info_field(info, "used_memory_human"), None);
        assert_eq!(info_field(info, "nope"), None);
    }
}
