//! The end-to-end run (the demo, and `bench --mode e2e`): a customer's campaign through the
//! whole system — a fresh Redis and PostgreSQL database, `hikyaku-api` (list import, campaign,
//! send, expansion, recording), `hikyaku-engine`, the test DNS server and the sink — with the
//! campaign's live stats as the progress bar.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::process::Command;

use crate::bench::{bench_engine_config, bench_zone, per_msg, sink_stats, with_metrics_listen};
use crate::dns::{DnsServer, Zone};
use crate::httpc::request;
use crate::latency::Latency;
use crate::procs::{
    free_port, monotonic_now, start_engine, start_redis, start_sink, wait_for_port, Proc,
};
use crate::procstat;

/// What to run.
#[derive(Debug, Clone)]
pub struct E2eOptions {
    /// Recipients.
    pub count: u64,
    /// Approximate message size (2048, or 20480 for the 20 KB variant).
    pub body_bytes: usize,
    /// Recipient domains and weights.
    pub domains: Vec<(String, u32)>,
    /// Shards.
    pub shards: u16,
    /// Connection cap per site.
    pub connections: u32,
    /// Directory of the `hikyaku-api`, `hikyaku` and `hikyaku-engine` binaries.
    pub bin_dir: PathBuf,
    /// The `hikyaku-loadtest` binary (for the sink).
    pub loadtest_bin: PathBuf,
    /// `redis-server`.
    pub redis_bin: String,
    /// PostgreSQL URL of a database the demo may create databases from.
    pub postgres_admin_url: String,
    /// Show a progress bar.
    pub progress: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// The sink offers STARTTLS: every session is TLS.
    pub starttls: bool,
    /// Worker threads of the engine's runtime (`worker_threads`).
    pub engine_threads: usize,
}

/// The figures of an end-to-end run.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// Recipients imported.
    pub count: u64,
    /// Approximate message size asked for.
    pub body_bytes: usize,
    /// Accepted at the sink (distinct recipients).
    pub delivered: u64,
    /// Imported but never delivered.
    pub lost: u64,
    /// Delivered more than once.
    pub duplicates: u64,
    /// Sink sessions that went over TLS (`--starttls`; 0 otherwise).
    pub tls_sessions: u64,
    /// Delivery events in PostgreSQL.
    pub recorded: u64,
    /// Seconds the import took.
    pub import_s: f64,
    /// Seconds from `send` to the campaign's `completed`.
    pub send_to_completed_s: f64,
    /// Delivered per minute over that span.
    pub delivered_per_min: f64,
    /// Engine CPU per delivered message, µs.
    pub engine_cpu_us_per_msg: f64,
    /// API CPU per delivered message (expansion + recording), µs.
    pub api_cpu_us_per_msg: f64,
    /// Redis CPU per delivered message, µs.
    pub redis_cpu_us_per_msg: f64,
    /// Sink CPU per delivered message, µs.
    pub sink_cpu_us_per_msg: f64,
    /// PostgreSQL CPU (all its processes) per delivered message, µs.
    pub postgres_cpu_us_per_msg: f64,
    /// Peak RSS, MiB.
    pub engine_peak_rss_mb: f64,
    /// Peak RSS, MiB.
    pub api_peak_rss_mb: f64,
    /// Peak RSS, MiB.
    pub redis_peak_rss_mb: f64,
    /// PostgreSQL's memory: the largest sum over its processes of their proportional set size
    /// (shared buffers counted once), sampled once a second during delivery, MiB. Like its
    /// CPU, every `postgres` process of the machine counts.
    pub postgres_peak_rss_mb: f64,
    /// Peak RSS, MiB.
    pub sink_peak_rss_mb: f64,
    /// Enqueue (expansion) → accepted latency from the engine's histogram.
    #[serde(flatten)]
    pub latency: Latency,
}

/// CPU seconds of every process whose command is `postgres` (the server and its backends).
fn postgres_cpu() -> f64 {
    procstat::pids_named("postgres")
        .into_iter()
        .filter_map(procstat::cpu_seconds)
        .sum()
}

/// Memory of every `postgres` process now: the sum of their PSS (their RSS where PSS is not
/// readable), MiB.
fn postgres_memory_mb() -> f64 {
    procstat::pids_named("postgres")
        .into_iter()
        .filter_map(|pid| procstat::pss_mb(pid).or_else(|| procstat::rss_mb(pid)))
        .sum()
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-qtAc", sql])
        .output()
        .context("running psql (install PostgreSQL's client)")?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The demo campaign: three merge fields and a per-recipient unsubscribe link, ~`body_bytes`.
fn campaign_body(list_id: i64, body_bytes: usize) -> serde_json::Value {
    let mut text = crate::enqueue::newsletter_text(body_bytes);
    text.push_str("\nUnsubscribe: {{unsubscribe_url}}\n");
    serde_json::json!({
        "name": "demo", "list_id": list_id, "from_name": "hikyaku demo", "from_addr": "news@hikyaku.test",
        "subject": "Weekly news for {{first_name}}", "text_body": text,
    })
}

/// Runs it.
pub async fn run(opts: &E2eOptions) -> anyhow::Result<E2eReport> {
    let dir = std::env::temp_dir().join(format!("hikyaku-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db_name = format!("hikyaku_e2e_{}", std::process::id());
    let admin = opts.postgres_admin_url.clone();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_owned();
    let db_url = format!("{base}/{db_name}");
    psql(&admin, &format!("DROP DATABASE IF EXISTS {db_name}"))?;
    psql(&admin, &format!("CREATE DATABASE {db_name}"))?;

    let (redis, redis_url) = start_redis(&opts.redis_bin, &dir).await?;
    let dns = DnsServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Zone::parse(&bench_zone(&opts.domains))?,
    )
    .await?;
    let smtp_port = free_port()?;
    let stats_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let sink = start_sink(&opts.loadtest_bin, smtp_port, stats_addr, opts.starttls).await?;

    let api_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let api = Proc {
        name: "hikyaku-api",
        // URLs through the environment: one with a password is refused as a flag.
        child: Command::new(opts.bin_dir.join("hikyaku-api"))
            .env("HIKYAKU_DATABASE_URL", &db_url)
            .env("HIKYAKU_REDIS_URL", &redis_url)
            .arg("--listen")
            .arg(api_addr.to_string())
            .arg("--shards")
            .arg(opts.shards.to_string())
            .arg("--public-url")
            .arg(format!("http://{api_addr}"))
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .context("starting hikyaku-api")?,
    };
    wait_for_port(api_addr, "hikyaku-api").await?;
    let out = Command::new(opts.bin_dir.join("hikyaku"))
        .args(["--json", "tenant", "create", "demo"])
        .env("HIKYAKU_DATABASE_URL", &db_url)
        .output()
        .await
        .context("running hikyaku tenant create")?;
    if !out.status.success() {
        bail!(
            "hikyaku tenant create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let key = tenant["api_key"].as_str().context("no api_key")?.to_owned();
    let call = |method: &'static str, path: String, body: Option<serde_json::Value>| {
        let key = key.clone();
        async move {
            let bytes = body.map(|b| b.to_string().into_bytes());
            request(
                api_addr,
                method,
                &path,
                Some(&key),
                bytes.as_deref().map(|b| ("application/json", b)),
            )
            .await?
            .json()
        }
    };
    let list = call(
        "POST",
        "/v1/lists".into(),
        Some(serde_json::json!({"name": "demo readers"})),
    )
    .await?;
    let list_id = list["id"].as_i64().context("list id")?;

    let mut csv = String::with_capacity(opts.count as usize * 48 + 32);
    csv.push_str("email,first_name,plan\n");
    for i in 0..opts.count {
        let domain = crate::enqueue::weighted_domain(&opts.domains, i);
        csv.push_str(&format!(
            "reader{i}@{domain},Reader{i},{}\n",
            ["bronze", "silver", "gold"][(i % 3) as usize]
        ));
    }
    let bar = opts.progress.then(|| {
        let b = ProgressBar::new(opts.count);
        b.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_prefix("import");
        b
    });
    let t_import = monotonic_now();
    let report = request(
        api_addr,
        "POST",
        &format!("/v1/lists/{list_id}/subscribers/import"),
        Some(&key),
        Some(("text/csv", csv.as_bytes())),
    )
    .await?
    .json()?;
    drop(csv);
    let import_s = t_import.elapsed().as_secs_f64();
    if report["accepted"].as_u64() != Some(opts.count) {
        bail!("import did not accept every row: {report}");
    }
    let campaign = call(
        "POST",
        "/v1/campaigns".into(),
        Some(campaign_body(list_id, opts.body_bytes)),
    )
    .await?;
    let cid = campaign["id"].as_i64().context("campaign id")?;

    let cfg_path = dir.join("engine.toml");
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    std::fs::write(
        &cfg_path,
        with_metrics_listen(
            &bench_engine_config(
                &redis_url,
                dns.local_addr(),
                smtp_port,
                opts.shards,
                &opts.domains,
                opts.connections,
                opts.engine_threads,
            ),
            metrics_addr,
        ),
    )?;
    let engine = start_engine(&opts.bin_dir.join("hikyaku-engine"), &cfg_path)?;
    let cpu0 = (
        procstat::cpu_seconds(api.pid()).unwrap_or(0.0),
        procstat::cpu_seconds(redis.pid()).unwrap_or(0.0),
        procstat::cpu_seconds(sink.pid()).unwrap_or(0.0),
        postgres_cpu(),
    );
    if let Some(b) = &bar {
        b.set_prefix("deliver");
        b.set_position(0);
        b.reset_eta();
    }
    let t_send = monotonic_now();
    call(
        "POST",
        format!("/v1/campaigns/{cid}/send"),
        Some(serde_json::json!({})),
    )
    .await?;
    let mut stats;
    let mut pg_mem: f64 = postgres_memory_mb();
    let mut polls = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        polls += 1;
        if polls % 4 == 0 {
            pg_mem = pg_mem.max(postgres_memory_mb());
        }
        stats = call("GET", format!("/v1/campaigns/{cid}/stats"), None).await?;
        let done: u64 = stats["by_status"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
        if let Some(b) = &bar {
            b.set_position(done);
        }
        if stats["status"] == "completed" {
            break;
        }
        if t_send.elapsed() > opts.timeout {
            tracing::warn!("timed out: {stats}");
            break;
        }
    }
    let elapsed = t_send.elapsed().as_secs_f64();
    let engine_cpu = procstat::cpu_seconds(engine.pid()).unwrap_or(0.0);
    let engine_rss = procstat::peak_rss_mb(engine.pid()).unwrap_or(0.0);
    let api_cpu = procstat::cpu_seconds(api.pid()).unwrap_or(0.0) - cpu0.0;
    let api_rss = procstat::peak_rss_mb(api.pid()).unwrap_or(0.0);
    let redis_cpu = procstat::cpu_seconds(redis.pid()).unwrap_or(0.0) - cpu0.1;
    let sink_cpu = procstat::cpu_seconds(sink.pid()).unwrap_or(0.0) - cpu0.2;
    let pg_cpu = postgres_cpu() - cpu0.3;
    let redis_rss = procstat::peak_rss_mb(redis.pid()).unwrap_or(0.0);
    let sink_rss = procstat::peak_rss_mb(sink.pid()).unwrap_or(0.0);
    pg_mem = pg_mem.max(postgres_memory_mb());
    if let Some(b) = &bar {
        b.finish();
    }
    let latency = Latency::scrape(metrics_addr).await;
    let sink_json = sink_stats(stats_addr).await.unwrap_or_default();
    let recorded: u64 = stats["by_status"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    engine.stop().await;
    api.stop().await;
    sink.stop().await;
    redis.stop().await;
    dns.stop().await;
    let _ = psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"),
    );
    let _ = std::fs::remove_dir_all(&dir);

    let delivered = sink_json["distinct"].as_u64().unwrap_or(0);
    let per_msg = |cpu: f64| per_msg(cpu, delivered);
    Ok(E2eReport {
        count: opts.count,
        body_bytes: opts.body_bytes,
        delivered,
        lost: opts.count.saturating_sub(delivered),
        duplicates: sink_json["duplicates"].as_u64().unwrap_or(0),
        tls_sessions: sink_json["profiles"].as_object().map_or(0, |p| {
            p.values().filter_map(|v| v["tls_sessions"].as_u64()).sum()
        }),
        recorded,
        import_s,
        send_to_completed_s: elapsed,
        delivered_per_min: delivered as f64 / elapsed.max(1e-3) * 60.0,
        engine_cpu_us_per_msg: per_msg(engine_cpu),
        api_cpu_us_per_msg: per_msg(api_cpu),
        redis_cpu_us_per_msg: per_msg(redis_cpu),
        sink_cpu_us_per_msg: per_msg(sink_cpu),
        postgres_cpu_us_per_msg: per_msg(pg_cpu),
        engine_peak_rss_mb: engine_rss,
        api_peak_rss_mb: api_rss,
        redis_peak_rss_mb: redis_rss,
        postgres_peak_rss_mb: pg_mem,
        sink_peak_rss_mb: sink_rss,
        latency,
    })
}

impl E2eReport {
    /// The human summary.
    pub fn table(&self) -> String {
        let mut out = format!(
            "delivered          {d} of {c} ({l} lost, {dup} duplicates); {r} events recorded in PostgreSQL\n\
             import             {imp:.2} s for {c} subscribers (CSV through the API)\n\
             send → completed   {el:.2} s: {pm:.0} msg/min (expansion, delivery and recording together)\n\
             CPU per message    engine {e:.1} µs, api {a:.1} µs, redis {rd:.1} µs, postgres {pg:.1} µs, sink {s:.1} µs\n\
             peak RSS           engine {er:.0} MiB, api {ar:.0} MiB, redis {rr:.0} MiB, postgres {pr:.0} MiB (PSS), sink {sr:.0} MiB\n",
            d = self.delivered,
            c = self.count,
            l = self.lost,
            dup = self.duplicates,
            r = self.recorded,
            imp = self.import_s,
            el = self.send_to_completed_s,
            pm = self.delivered_per_min,
            e = self.engine_cpu_us_per_msg,
            a = self.api_cpu_us_per_msg,
            rd = self.redis_cpu_us_per_msg,
            pg = self.postgres_cpu_us_per_msg,
            s = self.sink_cpu_us_per_msg,
            er = self.engine_peak_rss_mb,
            ar = self.api_peak_rss_mb,
            rr = self.redis_peak_rss_mb,
            pr = self.postgres_peak_rss_mb,
            sr = self.sink_peak_rss_mb,
        );
        out.push_str(&self.latency.line());
        out
    }
}
