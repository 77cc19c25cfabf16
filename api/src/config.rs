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
    /// Domain of the per-message VERP bounce addresses (`b-<campaign>-<seq>@DOMAIN`, its MX
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
}
