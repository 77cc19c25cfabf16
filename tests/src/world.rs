//! One scenario's world: a private Redis, the DNS server with the standard test zone, sinks on
//! several 127.0.0.x addresses (one per emulated provider, all on one port), and the engine.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hikyaku_engine::{EngineConfig, EngineError, Listeners};
use hikyaku_loadtest::dns::{DnsServer, Zone};
use hikyaku_loadtest::sink::{ListenerSpec, Profile, Sink, SinkConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::redis::TestRedis;

/// MX hosts of the test providers and the addresses their sinks listen on.
pub const STANDARD_ZONE: &str = "
gmail.test          MX 10 mx1.google.test
gmail.test          MX 20 mx2.google.test
corp.test           MX 10 aspmx.google.test
mx1.google.test     A 127.0.0.2
mx2.google.test     A 127.0.0.2
aspmx.google.test   A 127.0.0.2
yahoo.test          MX 10 mta5.yahoo.test
aol.test            MX 10 mta6.yahoo.test
mta5.yahoo.test     A 127.0.0.3
mta6.yahoo.test     A 127.0.0.3
docomo.test         MX 10 mfsmax.docomo.test
mfsmax.docomo.test  A 127.0.0.4
other.test          MX 10 mx.other.test
mx.other.test       A 127.0.0.5
implicit.test       A 127.0.0.5
nullmx.test         MX 0 .
servfail.test       SERVFAIL
silent.test         MX 10 mx.silent.test
mx.silent.test      A 127.0.0.6
";

/// Site tables matching [`STANDARD_ZONE`]: rollup by MX suffix, quick retries.
pub const STANDARD_SITES: &str = r#"
[sites.google]
mx_suffixes = ["google.test"]
max_connections = 4
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.yahoo]
mx_suffixes = ["yahoo.test"]
max_connections = 4
max_messages_per_connection = 20
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.docomo]
mx_suffixes = ["docomo.test"]
rate = "unlimited"
max_connections = 4
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.default]
max_connections = 4
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
"#;

/// The standard sinks: google at .2, yahoo at .3, docomo at .4, a plain MTA at .5.
pub fn standard_sinks() -> Vec<(Ipv4Addr, Profile)> {
    use hikyaku_loadtest::sink::ProviderKind;
    vec![
        (
            Ipv4Addr::new(127, 0, 0, 2),
            Profile::provider(ProviderKind::Google),
        ),
        (
            Ipv4Addr::new(127, 0, 0, 3),
            Profile::provider(ProviderKind::Yahoo),
        ),
        (
            Ipv4Addr::new(127, 0, 0, 4),
            Profile::provider(ProviderKind::Docomo),
        ),
        (Ipv4Addr::new(127, 0, 0, 5), Profile::plain("other")),
    ]
}

/// Shards used by the scenarios.
pub const SHARDS: u16 = 2;

/// Messages the world's sink keeps whole for inspection (the first ones accepted).
pub const CAPTURED: usize = 32;

/// Redis, DNS and sinks.
#[derive(Debug)]
pub struct World {
    /// The private Redis.
    pub redis: TestRedis,
    /// The queue URL engine configs name: the private Redis's unless a test points the world
    /// elsewhere (a cluster).
    pub queue_url: String,
    /// The DNS server.
    pub dns: DnsServer,
    /// All sinks (one listener per address).
    pub sink: Sink,
    /// The SMTP port every sink listens on.
    pub smtp_port: u16,
}

impl World {
    /// Starts Redis, DNS with `zone`, and sinks on `hosts`.
    pub async fn start(zone: &str, hosts: Vec<(Ipv4Addr, Profile)>) -> World {
        Self::start_on(TestRedis::start(), zone, hosts).await
    }

    /// [`World::start`] around a Redis the test started its own way.
    pub async fn start_on(redis: TestRedis, zone: &str, hosts: Vec<(Ipv4Addr, Profile)>) -> World {
        let zone = Zone::parse(zone).expect("test zone parses");
        let dns = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone)
            .await
            .expect("dns starts");
        for _ in 0..20 {
            let port = crate::redis::free_port();
            let listeners = hosts
                .iter()
                .map(|(ip, profile)| ListenerSpec {
                    addr: SocketAddr::from((*ip, port)),
                    profile: profile.clone(),
                })
                .collect();
            let config = SinkConfig {
                listeners,
                starttls: false,
                hostname: "sink.test".into(),
                capture: CAPTURED,
            };
            if let Ok(sink) = Sink::start(config).await {
                return World {
                    queue_url: redis.url.clone(),
                    redis,
                    dns,
                    sink,
                    smtp_port: port,
                };
            }
        }
        panic!("could not bind the sinks");
    }

    /// The standard world.
    /// Pauses (`true`) or resumes a site the way operators do: its `hk:site:<site>:ctl` flag.
    pub async fn set_site_paused(&self, site: &str, paused: bool) {
        let mut con = hikyaku_queue_schema::RedisClient::open(&self.queue_url)
            .expect("queue url")
            .connect()
            .await
            .expect("connect to the queues");
        let _: () = ::redis::cmd("HSET")
            .arg(hikyaku_queue_schema::Keys::site_ctl(site))
            .arg("paused")
            .arg(if paused { "1" } else { "0" })
            .query_async(&mut con)
            .await
            .expect("site control written");
    }

    /// Waits (up to 30 s) until the sink has kept at least `n` whole messages; returns them.
    pub async fn captured_at_least(
        &self,
        n: usize,
    ) -> Vec<hikyaku_loadtest::sink::stats::Captured> {
        let stats = self.sink.stats();
        crate::wait_for(
            Duration::from_secs(30),
            &format!("{n} messages at the sink"),
            || {
                let stats = stats.clone();
                async move {
                    let c = stats.captured();
                    (c.len() >= n).then_some(c)
                }
            },
        )
        .await
    }

    pub async fn standard() -> World {
        Self::start(STANDARD_ZONE, standard_sinks()).await
    }

    /// Engine config text: base settings, `queue` lines under `[queue]`, then `tables`.
    pub fn config_toml(&self, queue: &str, tables: &str) -> String {
        self.node_config_toml("test-node", SHARDS, queue, tables)
    }

    /// Engine config text of node `node` of a fleet over `shards` shards (see
    /// [`World::config_toml`]).
    pub fn node_config_toml(&self, node: &str, shards: u16, queue: &str, tables: &str) -> String {
        format!(
            "redis_url = \"{redis}\"\nshards = {shards}\nnode_id = \"{node}\"\nehlo_name = \"engine.test\"\n\
             smtp_port = {port}\n\n[dns]\nnameserver = \"{dns}\"\nfailure_ttl = \"500ms\"\n\n\
             [queue]\nblock = \"100ms\"\nmover_interval = \"50ms\"\nrequeue_delay = \"200ms\"\n\
             claim_idle = \"2s\"\nshutdown_grace = \"10s\"\n{queue}\n\n{tables}\n",
            redis = self.queue_url,
            port = self.smtp_port,
            dns = self.dns.local_addr(),
        )
    }

    /// Parsed engine config.
    pub fn config(&self, queue: &str, tables: &str) -> EngineConfig {
        EngineConfig::from_toml(&self.config_toml(queue, tables), "test")
            .expect("test config valid")
    }

    /// Runs the engine in this process.
    pub fn engine(&self, config: EngineConfig) -> RunningEngine {
        self.engine_with(config, Listeners::default())
    }

    /// Runs the engine in this process, serving on `listeners` (its `/metrics`, say).
    pub fn engine_with(&self, config: EngineConfig, listeners: Listeners) -> RunningEngine {
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(hikyaku_engine::run(config, listeners, async move {
            let _ = rx.await;
        }));
        RunningEngine {
            stop: Some(tx),
            task,
        }
    }

    /// Runs the engine binary `bin` (a test's `env!("CARGO_BIN_EXE_engine-under-test")`) as a
    /// child process with `config_toml`.
    pub fn engine_process(&self, bin: &str, config_toml: &str) -> EngineProcess {
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "hikyaku-test-engine-{}-{}-{}.toml",
            std::process::id(),
            self.redis.port,
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, config_toml).expect("write config");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("engine binary starts");
        EngineProcess {
            child,
            config: path,
        }
    }
}

/// An in-process engine.
#[derive(Debug)]
pub struct RunningEngine {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), EngineError>>,
}

impl RunningEngine {
    /// Graceful stop (as on SIGTERM); returns the engine's result.
    pub async fn stop(mut self) -> Result<(), EngineError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("engine stops within 60 s")
            .expect("engine task did not panic")
    }

    /// Whether the engine task is still running (it has not crashed).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// The engine as a child process.
#[derive(Debug)]
pub struct EngineProcess {
    child: Child,
    config: PathBuf,
}

impl EngineProcess {
    /// Whether the process is still running (it has not exited or died).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        for _ in 0..1200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("engine did not exit within 60 s of SIGTERM");
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
