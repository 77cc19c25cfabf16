//! `hikyaku-loadtest`: sink, dns, enqueue, bench and demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hikyaku_loadtest::backlog;
use hikyaku_loadtest::bench::{self, BenchOptions};
use hikyaku_loadtest::dns::{DnsServer, Zone};
use hikyaku_loadtest::e2e::{self, E2eOptions};
use hikyaku_loadtest::enqueue;
use hikyaku_loadtest::sink::{ListenerSpec, Profile, ProviderKind, Sink, SinkConfig};

/// mimalloc, as in the engine: the sink allocates per message too, and the benchmark should
/// measure protocol work, not glibc's allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// hikyaku's load-test kit.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A fast SMTP sink that counts accepted messages per recipient.
    Sink {
        /// `ADDR[=KIND[,rate=N][,conns=N][,per-conn=N][,latency-ms=N][,silent][,cut=N]
        /// [,garbage=N]]`, repeatable. KIND: plain, google, yahoo, yahoo-jp, docomo, au,
        /// softbank. `cut`: connections per mille cut mid-content; `garbage`: messages per
        /// mille answered with a line that is not SMTP.
        #[arg(long, required = true)]
        listen: Vec<String>,
        /// Serve `GET /stats` (JSON) here.
        #[arg(long)]
        stats: Option<SocketAddr>,
        /// Offer STARTTLS (self-signed certificate).
        #[arg(long)]
        starttls: bool,
        /// Name in the greeting.
        #[arg(long, default_value = "sink.hikyaku.test")]
        hostname: String,
        /// Do not offer CHUNKING (BDAT): behave like a DATA-only server.
        #[arg(long)]
        no_chunking: bool,
    },
    /// A TCP proxy on loopback that delays every byte (a long network path, without the
    /// privileges `tc netem` needs).
    Proxy {
        /// Address to listen on (loopback).
        #[arg(long)]
        listen: SocketAddr,
        /// Where to forward each connection (loopback).
        #[arg(long)]
        upstream: SocketAddr,
        /// Delay in each direction, ms.
        #[arg(long, default_value_t = 100)]
        delay_ms: u64,
    },
    /// A small authoritative DNS server for test zones.
    Dns {
        /// UDP address to answer on.
        #[arg(long)]
        listen: SocketAddr,
        /// Zone file.
        #[arg(long)]
        zone: PathBuf,
    },
    /// Writes a campaign snapshot and N jobs into Redis.
    Enqueue {
        /// Redis URL.
        #[arg(
            long,
            env = "HIKYAKU_REDIS_URL",
            default_value = "redis://127.0.0.1:6379"
        )]
        redis: String,
        /// Number of jobs.
        #[arg(long)]
        count: u64,
        /// Recipient domains with weights: `gmail.test:40,yahoo.test:20`.
        #[arg(long)]
        domains: String,
        /// Campaign id.
        #[arg(long, default_value_t = 1)]
        campaign: u64,
        /// Approximate message size.
        #[arg(long, default_value_t = 2048)]
        body_bytes: usize,
        /// Shard count if Redis has none recorded yet.
        #[arg(long, default_value_t = 4)]
        shards: u16,
    },
    /// Sink + engine against a fresh Redis: delivered msg/min, CPU µs per message and peak
    /// memory of every process, enqueue → delivery latency.
    ///
    /// Engine mode (default): N jobs pre-enqueued, then the engine delivers them to the sink;
    /// per-process figures for engine, redis and sink. `--mode e2e`: a campaign through the
    /// API; figures for engine, api, redis, postgres and sink. `--mix realistic`: the
    /// provider mix with throttled sites, reported per site. `--compare`: then the same load
    /// through Postfix's smtp-source → smtp-sink. `--backlog N`: the memory run.
    ///
    /// `--json` prints one JSON object; keys include delivered, lost, duplicates,
    /// delivered_per_min, steady_per_min, <process>_cpu_us_per_msg and <process>_peak_rss_mb,
    /// latency_p50_ms and latency_p99_ms (null, with latency_note, when the engine does not
    /// export hikyaku_delivery_latency_seconds). Latency runs from each job's enqueue to the
    /// accepting reply: in engine mode every job is enqueued before the engine starts, so it is
    /// mostly the wait in that backlog; in e2e mode it starts at the API's expansion.
    Bench(BenchArgs),
    /// The local demo: a campaign through the API (tenant, list import, send) delivered by the
    /// engine to the sink, with a progress bar and a summary.
    Demo(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Messages [default: 1000000; 400000 with --mix realistic; 100000 for the demo].
    #[arg(long)]
    count: Option<u64>,
    /// Approximate message size (2048 or 20480 for the 20 KB variant).
    #[arg(long, default_value_t = 2048)]
    body_bytes: usize,
    /// Shards.
    #[arg(long, default_value_t = 4)]
    shards: u16,
    /// Recipient domains with weights, one unlimited site each (ignored with --mix).
    #[arg(
        long,
        default_value = "gmail.test:50,yahoo.test:20,docomo.test:15,other.test:15"
    )]
    domains: String,
    /// Connection cap per site.
    #[arg(long, default_value_t = 8)]
    connections: u32,
    /// Print one JSON object only.
    #[arg(long)]
    json: bool,
    /// `engine` (jobs pre-enqueued, engine → sink) or `e2e` (API campaign → delivered and
    /// recorded). The demo is always `e2e`.
    #[arg(long, default_value = "engine", value_parser = ["engine", "e2e"])]
    mode: String,
    /// PostgreSQL URL the e2e mode may create a scratch database from.
    #[arg(
        long,
        env = "HIKYAKU_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The engine binary (default: beside this one).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// After the hikyaku run, send the same count (at most 300000) of the same body size
    /// with Postfix's smtp-source (one session per hikyaku connection: sites × --connections,
    /// connections reused, no pipelining) into smtp-sink, and report smtp_source_per_min,
    /// smtp_source_cpu_us_per_msg, smtp_sink_cpu_us_per_msg and ratio_vs_smtp_source
    /// (hikyaku steady msg/min ÷ smtp-source msg/min). Needs `apt-get install postfix`.
    /// Engine mode, without --mix. `--compare smtp-sink`: the engine itself delivers to
    /// smtp-sink (a DATA-only server: PIPELINING, no CHUNKING) instead of the project's sink,
    /// so both runs meet the same server (`target` in the report; deliveries are the engine's
    /// own count, duplicates not measured).
    #[arg(
        long,
        value_name = "TARGET",
        num_args = 0..=1,
        default_missing_value = "sink",
        value_parser = ["sink", "smtp-sink"]
    )]
    compare: Option<String>,
    /// Sign every message with a fresh RSA-2048 DKIM key (generated with `openssl genpkey`),
    /// then measure OpenSSL's raw RSA-2048 sign rate on all cores (`openssl speed`) and report
    /// openssl_rsa2048_sign_per_sec and dkim_ratio_vs_openssl (steady msg/s ÷ that rate).
    /// Engine mode; use a smaller --count (signing bounds the rate to a few thousand msg/s).
    #[arg(long)]
    dkim: bool,
    /// Japanese newsletter text and reader names (engine mode): bodies go base64.
    #[arg(long)]
    japanese: bool,
    /// A provider mix instead of --domains. `realistic`: google 50%, yahoo 20%, docomo, au
    /// and softbank 5% each, other 15%; engine limits yahoo 2000/s and the carriers 300/s
    /// each (google and other unlimited); the sink emulates each provider (reply texts,
    /// messages per session, throttling 20% above the engine's limit). Reports `sites`:
    /// delivered, msg/s over each site's own active window, and its limit. Engine mode only.
    #[arg(long, value_parser = ["realistic"])]
    mix: Option<String>,
    /// Memory run: enqueue N jobs [default N: 10000000], start the engine, sample its RSS
    /// every second for --duration-s while it delivers, then stop. Reports engine_peak_rss_mb,
    /// engine_rss_first_mb, engine_rss_last_mb, engine_rss_samples_mb, delivered in the
    /// window and Redis memory. Engine mode only.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10000000")]
    backlog: Option<u64>,
    /// Seconds the memory run (--backlog) samples the engine.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Engine nodes (processes) sharing the queues as one fleet (membership, shard handover,
    /// fleet-wide limits through Redis). With more than one, the report adds `nodes` (each
    /// node's deliveries and CPU per message). Engine mode, 1 to 16.
    #[arg(long, default_value_t = 1)]
    engines: u32,
    /// Worker threads of each engine node's runtime [default: half the cores, at least one:
    /// the bench box runs the engine beside Redis and the sink (and the API and PostgreSQL in
    /// e2e), and on shared cores fewer workers cost less CPU per message].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    engine_threads: Option<u16>,
    /// A fleet-wide rate in msg/s for every --domains site, so the Redis limiter is in play:
    /// the report's limiter_leases, limiter_tokens and limiter_calls_per_msg count its Redis
    /// calls. Engine mode, without --mix (the mix has its own rates).
    #[arg(long)]
    site_rate: Option<u32>,
    /// Faults the sink injects: `cut=N,garbage=N`, per mille — connections cut in the middle
    /// of a message's content without a reply, messages answered with a line that is not
    /// SMTP. Sites retry after 1 s; the report adds faults_injected and duplicates_per_fault,
    /// and only a loss fails the run. Engine mode, without --mix.
    #[arg(long, value_parser = parse_faults)]
    faults: Option<bench::Faults>,
    /// The sink offers STARTTLS (a self-signed certificate) and the engine takes it, as with
    /// every real provider: engine CPU is measured with TLS. Engine and e2e modes.
    #[arg(long)]
    starttls: bool,
}

/// Parses `cut=N,garbage=N` (either may be left out).
fn parse_faults(spec: &str) -> Result<bench::Faults, String> {
    let mut f = bench::Faults::default();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: give cut=N or garbage=N"))?;
        let n: u32 = v
            .parse()
            .ok()
            .filter(|n| *n <= 1000)
            .ok_or_else(|| format!("{k}={v:?}: a per mille value, 0 to 1000"))?;
        match k {
            "cut" => f.cut_per_mille = n,
            "garbage" => f.garbage_per_mille = n,
            _ => return Err(format!("unknown fault {k:?}: cut or garbage")),
        }
    }
    Ok(f)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        match args.cmd {
            Cmd::Sink {
                listen,
                stats,
                starttls,
                hostname,
                no_chunking,
            } => sink(listen, stats, starttls, hostname, !no_chunking).await,
            Cmd::Proxy {
                listen,
                upstream,
                delay_ms,
            } => {
                if !listen.ip().is_loopback() || !upstream.ip().is_loopback() {
                    bail!("the proxy works between loopback addresses only");
                }
                let proxy = hikyaku_loadtest::proxy::Proxy::start(
                    listen,
                    upstream,
                    Duration::from_millis(delay_ms),
                )
                .await
                .with_context(|| format!("listening on {listen}"))?;
                eprintln!(
                    "proxy {} → {upstream}, {delay_ms} ms each way",
                    proxy.local_addr()
                );
                hikyaku_queue_schema::shutdown::signal().await;
                Ok(())
            }
            Cmd::Dns { listen, zone } => {
                let text = std::fs::read_to_string(&zone)
                    .with_context(|| format!("reading {}", zone.display()))?;
                let zone =
                    Zone::parse(&text).with_context(|| format!("zone {}", zone.display()))?;
                let server = DnsServer::start(listen, zone).await?;
                eprintln!("dns listening on {}", server.local_addr());
                hikyaku_queue_schema::shutdown::signal().await;
                server.stop().await;
                Ok(())
            }
            Cmd::Enqueue {
                redis,
                count,
                domains,
                campaign,
                body_bytes,
                shards,
            } => {
                let domains = enqueue::parse_domains(&domains)?;
                let client =
                    hikyaku_queue_schema::RedisClient::open(redis.as_str()).context("redis URL")?;
                let mut con = client
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {redis}"))?;
                let shards = enqueue::shards(&mut con, shards).await?;
                enqueue::write_snapshot(
                    &mut con,
                    &enqueue::bench_snapshot(campaign, body_bytes, false),
                )
                .await?;
                let jobs = enqueue::bench_jobs(campaign, count, &domains, now_ms(), false);
                let n = enqueue::write_jobs(&mut con, shards, jobs, |_| {}).await?;
                println!("{{\"enqueued\":{n},\"campaign\":{campaign},\"shards\":{shards}}}");
                Ok(())
            }
            Cmd::Bench(b) => bench_cmd(b, false).await,
            Cmd::Demo(b) => bench_cmd(b, true).await,
        }
    })
}

async fn bench_cmd(b: BenchArgs, demo: bool) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("locating this binary")?;
    let engine = b
        .engine
        .clone()
        .unwrap_or_else(|| me.with_file_name("hikyaku-engine"));
    let bin_dir = engine
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let e2e = demo || b.mode == "e2e";
    let needed: &[&str] = if e2e {
        &["hikyaku-engine", "hikyaku-api", "hikyaku"]
    } else {
        &["hikyaku-engine"]
    };
    for bin in needed {
        if !bin_dir.join(bin).exists() {
            bail!(
                "{} not found; build it (cargo build --release -p hikyaku-engine -p hikyaku-api) or pass --engine",
                bin_dir.join(bin).display()
            );
        }
    }
    let extras = [
        (b.compare.is_some(), "--compare"),
        (b.mix.is_some(), "--mix"),
        (b.backlog.is_some(), "--backlog"),
        (b.dkim, "--dkim"),
        (b.engines != 1, "--engines"),
        (b.site_rate.is_some(), "--site-rate"),
        (b.faults.is_some(), "--faults"),
    ];
    if let Some((_, flag)) = extras.iter().find(|(on, _)| *on).filter(|_| e2e) {
        bail!("{flag} is an engine-mode option (not for --mode e2e or the demo)");
    }
    if b.backlog.is_some() && (b.compare.is_some() || b.mix.is_some() || b.dkim) {
        bail!("--backlog runs alone: leave out --compare, --mix and --dkim");
    }
    if !(1..=16).contains(&b.engines) {
        bail!("--engines takes 1 to 16 nodes, not {}", b.engines);
    }
    if b.backlog.is_some() && b.engines != 1 {
        bail!("--backlog measures one engine: leave out --engines");
    }
    if b.site_rate.is_some() && b.mix.is_some() {
        bail!("--site-rate sets the --domains sites' rate; the mix has its own rates");
    }
    if b.site_rate == Some(0) {
        bail!("--site-rate must be at least 1 msg/s");
    }
    if b.compare.as_deref() == Some("smtp-sink") && b.starttls {
        bail!("--compare smtp-sink delivers to Postfix's smtp-sink, which offers no STARTTLS: leave out --starttls");
    }
    if b.compare.is_some() && b.mix.is_some() {
        bail!("--compare measures a full-speed run against smtp-source: leave out --mix");
    }
    if b.faults.is_some() && (b.mix.is_some() || b.compare.is_some() || b.backlog.is_some()) {
        bail!("--faults runs the --domains sites against a faulty sink: leave out --mix, --compare and --backlog");
    }
    let engine_threads = b.engine_threads.map_or_else(
        || (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1),
        usize::from,
    );
    let mix = b.mix.as_deref().map(|_| hikyaku_loadtest::mix::realistic());
    let count = b.count.unwrap_or(if demo {
        100_000
    } else if mix.is_some() {
        400_000
    } else {
        1_000_000
    });
    let domains = enqueue::parse_domains(&b.domains)?;
    if e2e {
        let opts = E2eOptions {
            count,
            body_bytes: b.body_bytes,
            domains,
            shards: b.shards,
            connections: b.connections,
            bin_dir,
            loadtest_bin: me,
            redis_bin: b.redis_server,
            postgres_admin_url: b.postgres_url,
            progress: !b.json,
            timeout: Duration::from_secs(b.timeout_s),
            starttls: b.starttls,
            engine_threads,
        };
        let report = e2e::run(&opts).await?;
        if b.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "\nhikyaku demo — a campaign through the API to {} recipients (~{} B messages)\n",
                report.count, report.body_bytes
            );
            print!("{}", report.table());
        }
        if report.lost > 0 || report.duplicates > 0 || report.recorded != report.count {
            bail!(
                "{} lost, {} duplicated, {} recorded",
                report.lost,
                report.duplicates,
                report.recorded
            );
        }
        return Ok(());
    }
    let opts = BenchOptions {
        count,
        body_bytes: b.body_bytes,
        shards: b.shards,
        domains,
        connections: b.connections,
        engine_bin: engine,
        loadtest_bin: me,
        redis_bin: b.redis_server,
        progress: b.backlog.is_some() && !b.json,
        timeout: Duration::from_secs(b.timeout_s),
        mix,
        compare: b.compare.is_some(),
        to_smtp_sink: b.compare.as_deref() == Some("smtp-sink"),
        dkim: b.dkim,
        japanese: b.japanese,
        engines: b.engines,
        engine_threads,
        site_rate: b.site_rate,
        faults: b.faults,
        starttls: b.starttls,
    };
    if let Some(n) = b.backlog {
        let report = backlog::run(&opts, n, Duration::from_secs(b.duration_s)).await?;
        if b.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&report)?);
            print!("{}", report.table());
        }
        if report.duplicates > 0 {
            bail!("{} duplicated", report.duplicates);
        }
        return Ok(());
    }
    let report = bench::run(&opts).await?;
    if b.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
        print!("{}", report.table());
    }
    // With faults injected, duplicates are the figure measured; a loss still fails.
    if report.lost > 0 || (report.duplicates > 0 && opts.faults.is_none()) {
        bail!("{} lost, {} duplicated", report.lost, report.duplicates);
    }
    Ok(())
}

/// Parses `ADDR[=KIND[,opt…]]`.
fn parse_listen(spec: &str) -> anyhow::Result<ListenerSpec> {
    let (addr, rest) = spec.split_once('=').unwrap_or((spec, ""));
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--listen {spec:?}: {addr:?} is not ip:port"))?;
    if !addr.ip().is_loopback() {
        bail!("--listen {spec:?}: the sink listens on loopback addresses only");
    }
    let mut parts = rest.split(',').filter(|p| !p.is_empty());
    let mut profile = match parts.next() {
        None => Profile::plain("plain"),
        Some(kind) => Profile::provider(
            kind.parse::<ProviderKind>()
                .map_err(|e| anyhow::anyhow!("--listen {spec:?}: {e}"))?,
        ),
    };
    for opt in parts {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        let n = || -> anyhow::Result<u32> {
            v.parse()
                .with_context(|| format!("--listen {spec:?}: {k} needs a number"))
        };
        match k {
            "rate" => profile.max_rate = n()?,
            "conns" => profile.max_conns = n()?,
            "per-conn" => profile.max_msgs_per_conn = n()?,
            "latency-ms" => profile.latency = Duration::from_millis(u64::from(n()?)),
            "silent" => profile.silent = true,
            "cut" | "garbage" => {
                let per_mille = n()?;
                if per_mille > 1000 {
                    bail!("--listen {spec:?}: {k} is per mille (0 to 1000)");
                }
                if k == "cut" {
                    profile.cut_per_mille = per_mille;
                } else {
                    profile.garbage_per_mille = per_mille;
                }
            }
            "name" => profile.name = v.to_owned(),
            _ => bail!("--listen {spec:?}: unknown option {k:?}"),
        }
    }
    Ok(ListenerSpec { addr, profile })
}

async fn sink(
    listen: Vec<String>,
    stats: Option<SocketAddr>,
    starttls: bool,
    hostname: String,
    chunking: bool,
) -> anyhow::Result<()> {
    let mut listeners = listen
        .iter()
        .map(|s| parse_listen(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for l in &mut listeners {
        l.profile.chunking = chunking;
    }
    let sink = Sink::start(SinkConfig {
        listeners,
        starttls,
        hostname,
        capture: 0,
    })
    .await
    .context("starting the sink")?;
    for a in sink.local_addrs() {
        eprintln!("sink listening on {a}");
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stats_task = match stats {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding stats {addr}"))?;
            let s = sink.stats();
            Some(tokio::spawn(hikyaku_loadtest::sink::serve_stats(
                l,
                s,
                async move {
                    let _ = stop_rx.await;
                },
            )))
        }
        None => None,
    };
    hikyaku_queue_schema::shutdown::signal().await;
    let _ = stop_tx.send(());
    if let Some(t) = stats_task {
        let _ = t.await;
    }
    sink.stop().await;
    Ok(())
}

#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
