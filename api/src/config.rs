//! The API's settings (flags with environment fallbacks, parsed by the binary).

use std::net::SocketAddr;

/// API settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiConfig {
    /// PostgreSQL URL of the record. With a password, give it in the environment, not as a
    /// flag (refused: command lines are visible to every user).
    #[arg(
        long,
        env = "HIKYAKU_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/hikyaku"
    )]
    pub database_url: String,
    /// Redis URL of the queues: `redis://host:port` for one server, or
    /// `redis+cluster://host:port,host:port,…` (seed nodes) for a Redis Cluster.
    /// With a password, give it in the environment, not as a flag.
    #[arg(
        long,
        env = "HIKYAKU_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Address to serve HTTP on.
    #[arg(long, env = "HIKYAKU_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address to serve `GET /metrics` on, apart from the public API (which then answers it
    /// 404); none: `/metrics` is served on `--listen` with everything else.
    #[arg(long, env = "HIKYAKU_API_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Shard count if Redis has none recorded yet (else Redis's wins).
    #[arg(long, env = "HIKYAKU_SHARDS", default_value_t = 4)]
    pub shards: u16,
    /// Public base URL of the API, used in unsubscribe links.
    #[arg(
        long,
        env = "HIKYAKU_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,
    /// Key of unsubscribe and tracking tokens, from `HIKYAKU_TOKEN_SECRET` only: no flag, so
    /// it never shows on a command line (see [`crate::secrets`]).
    #[arg(skip = std::env::var("HIKYAKU_TOKEN_SECRET").ok())]
    pub token_secret: Option<String>,
    /// File holding the key of unsubscribe and tracking tokens (at least 32 bytes); else
    /// `HIKYAKU_TOKEN_SECRET` in the environment; else one generated and kept in the database.
    #[arg(long, env = "HIKYAKU_TOKEN_SECRET_FILE")]
    pub token_secret_file: Option<std::path::PathBuf>,
    /// Mailbox offered beside the one-click URL in `List-Unsubscribe`
    /// (`<mailto:MAILBOX?subject=unsubscribe%20TOKEN>`); none: the URL alone.
    #[arg(long, env = "HIKYAKU_UNSUBSCRIBE_MAILBOX")]
    pub unsubscribe_mailbox: Option<String>,
    /// Domain of the per-message VERP bounce addresses (`b-<campaign>-<seq>-<tag>@DOMAIN`, its MX
    /// pointing at the inbound listener); none: messages are sent from the campaign's From.
    #[arg(long, env = "HIKYAKU_BOUNCE_DOMAIN")]
    pub bounce_domain: Option<String>,
    /// Address to serve the inbound SMTP listener for bounces (DSN) and complaints (ARF) on;
    /// needs `--bounce-domain`.
    #[arg(long, env = "HIKYAKU_INBOUND_LISTEN")]
    pub inbound_listen: Option<SocketAddr>,
    /// Where providers send complaint reports (default `fbl@<bounce domain>`).
    #[arg(long, env = "HIKYAKU_FBL_ADDRESS")]
    pub fbl_address: Option<String>,
    /// Connections the inbound listener takes at once, from all clients.
    #[arg(long, env = "HIKYAKU_INBOUND_MAX_CONNECTIONS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub inbound_max_connections: u32,
    /// Connections the inbound listener takes at once from one client address (the next is
    /// told 421), so one client cannot hold them all.
    #[arg(long, env = "HIKYAKU_INBOUND_MAX_CONNECTIONS_PER_IP", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub inbound_max_connections_per_ip: u32,
    /// Seconds an inbound session may last, whatever it does.
    #[arg(long, env = "HIKYAKU_INBOUND_SESSION_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub inbound_session_secs: u32,
    /// Seconds an inbound client may go without moving a message on (greeting, accepted MAIL
    /// or RCPT, message data); NOOP, RSET and refused commands do not count.
    #[arg(long, env = "HIKYAKU_INBOUND_IDLE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub inbound_idle_secs: u32,
    /// Soft bounces (delays, transient failures; one per campaign) that suppress an address…
    #[arg(long, env = "HIKYAKU_SOFT_BOUNCE_LIMIT", default_value_t = 3)]
    pub soft_bounce_limit: u32,
    /// …within this many days.
    #[arg(long, env = "HIKYAKU_SOFT_BOUNCE_DAYS", default_value_t = 30)]
    pub soft_bounce_days: u32,
    /// PostgreSQL connections.
    #[arg(long, env = "HIKYAKU_DB_POOL", default_value_t = 16)]
    pub db_pool: u32,
    /// Days after a campaign started sending that its tracking links record opens and clicks;
    /// later the pixel and the redirects still work (old mail keeps its links) but record
    /// nothing. Unsubscribe links never expire.
    #[arg(long, env = "HIKYAKU_TRACKING_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub tracking_days: u32,
    /// Requests per second each API key may make, in bursts of up to one second's worth;
    /// beyond it, 429 with `Retry-After`. 0: unlimited.
    #[arg(long, env = "HIKYAKU_KEY_RATE", default_value_t = 50)]
    pub key_rate: u32,
    /// Test-send recipients each tenant may send per clock hour (UTC); beyond it, 429 with
    /// `Retry-After` until the next hour. 0: unlimited.
    #[arg(long, env = "HIKYAKU_TEST_SENDS_PER_HOUR", default_value_t = 100)]
    pub test_sends_per_hour: u32,
}
