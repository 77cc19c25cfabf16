//! [`app`] (the router, for tests with `oneshot`) and [`run`] (the daemon).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use hikyaku_queue_schema::RedisClient;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{expansion, openapi, recorder, routes};

/// Largest JSON body (imports stream and have their own limit).
pub const MAX_JSON_BODY: usize = 2 * 1024 * 1024;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Redis.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Serving.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// A setting is unusable.
    #[error("config: {0}")]
    Config(String),
}

/// The whole HTTP surface, `/metrics` included.
pub fn app(state: AppState) -> Router {
    app_serving(state, true)
}

/// The HTTP surface, with `/metrics` or without it (`--metrics-listen` serves it apart,
/// [`metrics_app`]). A path no route serves answers 404 and a method its route does not take
/// 405 (with `Allow`), both problem+json like every other error.
pub fn app_serving(state: AppState, metrics: bool) -> Router {
    let mut router = Router::new()
        .merge(routes::health::router())
        .merge(routes::lists::router())
        .merge(routes::subscribers::router())
        .merge(routes::import::router().layer(DefaultBodyLimit::disable()))
        .merge(routes::campaigns::router())
        .merge(routes::suppressions::router().layer(DefaultBodyLimit::disable()))
        .merge(routes::unsubscribe::router())
        .merge(routes::tracking::router())
        .merge(openapi::router());
    if metrics {
        router = router.merge(crate::metrics::router());
    }
    with_problems(router)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
        .with_state(state)
}

/// `/metrics` alone, for its own listener (`--metrics-listen`).
pub fn metrics_app(state: AppState) -> Router {
    with_problems(crate::metrics::router()).with_state(state)
}

/// Unknown paths and wrong methods answered as problem+json. Applies to the routes `router`
/// already has: call it after the last merge.
fn with_problems(router: Router<AppState>) -> Router<AppState> {
    router
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::MethodNotAllowed(method.to_string())
        })
        .fallback(|| async { ApiError::NotFound("route") })
}

/// Connects, migrates, and builds the shared state.
pub async fn connect(config: &ApiConfig) -> Result<(AppState, RedisClient), StartError> {
    let db = PgPoolOptions::new()
        .max_connections(config.db_pool)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&config.database_url)
        .await?;
    crate::migrate::run(&db).await?;
    crate::address::backfill_ascii_domains(&db).await?;
    let today = chrono::Utc::now().date_naive();
    crate::partitions::ensure(
        &db,
        today.pred_opt().unwrap_or(today),
        crate::partitions::AHEAD_DAYS + 2,
    )
    .await?;
    let client = RedisClient::open(config.redis_url.as_str())?;
    let mut redis = client.connect().await?;
    let layout = hikyaku_queue_schema::meta::record_or_read(&mut redis, config.shards).await?;
    let token_secret = token_secret(config, &db).await?;
    if let Some(m) = &config.unsubscribe_mailbox {
        let ok = m.parse::<lettre::Address>().is_ok()
            && m.bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>?&%,".contains(&b));
        if !ok {
            return Err(StartError::Config(format!(
                "unsubscribe mailbox {m:?} is not a plain ASCII address"
            )));
        }
    }
    if let Some(d) = &config.bounce_domain {
        let ok = !d.is_empty()
            && d.split('.').count() >= 2
            && d.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(StartError::Config(format!(
                "bounce domain {d:?} is not a domain name"
            )));
        }
    }
    if config.inbound_listen.is_some() && config.bounce_domain.is_none() {
        return Err(StartError::Config(
            "--inbound-listen needs --bounce-domain (the addresses it takes mail for)".into(),
        ));
    }
    if !config.public_url.is_ascii() || config.public_url.contains(['<', '>', ' ', ',']) {
        return Err(StartError::Config(format!(
            "public URL {:?} cannot go into a List-Unsubscribe header",
            config.public_url
        )));
    }
    Ok((
        AppState {
            db,
            redis,
            shards: layout.shards,
            token_secret,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            unsubscribe_mailbox: config.unsubscribe_mailbox.clone(),
            bounce_domain: config.bounce_domain.as_deref().map(str::to_ascii_lowercase),
            expander: Arc::new(tokio::sync::Notify::new()),
            tracking_days: config.tracking_days,
            key_limiter: crate::state::key_limiter(config.key_rate),
            test_sends_per_hour: config.test_sends_per_hour,
        },
        client,
    ))
}

/// The unsubscribe-token key: `HIKYAKU_TOKEN_SECRET` / `--token-secret-file` if set, else one
/// generated once and kept in the database (so tokens survive restarts).
async fn token_secret(
    config: &ApiConfig,
    db: &sqlx::PgPool,
) -> Result<std::sync::Arc<[u8]>, StartError> {
    let configured = match (&config.token_secret_file, config.token_secret.as_deref()) {
        (Some(path), _) => Some(std::fs::read(path)?.trim_ascii().to_vec()),
        (None, Some(s)) if !s.is_empty() => Some(s.as_bytes().to_vec()),
        _ => None,
    };
    if let Some(secret) = configured {
        // A short key would let anyone forge unsubscribe tokens.
        if secret.len() < 32 {
            return Err(StartError::Config(
                "the unsubscribe-token secret must be at least 32 bytes".into(),
            ));
        }
        return Ok(secret.into());
    }
    let fresh = crate::keys::generate()?.hash;
    let (v,): (Vec<u8>,) = sqlx::query_as(
        "INSERT INTO app_secrets (name, value) VALUES ('unsubscribe-token', $1)          ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING value",
    )
    .bind(&fresh)
    .fetch_one(db)
    .await?;
    Ok(v.into())
}

/// Serves until `shutdown`, with the expander and the recorder running beside.
pub async fn run(
    config: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (state, client) = connect(&config).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let expander = tokio::spawn(expansion::run(state.clone(), stop_rx.clone()));
    let recorders = recorder::spawn(state.clone(), client, stop_rx.clone());
    let partitions = tokio::spawn(crate::partitions::maintain(
        state.db.clone(),
        stop_rx.clone(),
    ));
    let inbound = match (config.inbound_listen, &state.bounce_domain) {
        (Some(addr), Some(domain)) => {
            let l = TcpListener::bind(addr).await?;
            tracing::info!(addr = %l.local_addr()?, %domain, "inbound listener for bounces and complaints");
            let mut settings = crate::inbound::InboundSettings::new(domain);
            if let Some(f) = &config.fbl_address {
                settings.fbl_address = f.to_ascii_lowercase();
            }
            settings.max_connections = config.inbound_max_connections.max(1) as usize;
            settings.max_connections_per_ip = config.inbound_max_connections_per_ip.max(1) as usize;
            settings.max_session =
                Duration::from_secs(u64::from(config.inbound_session_secs.max(1)));
            settings.idle_timeout = Duration::from_secs(u64::from(config.inbound_idle_secs.max(1)));
            settings.soft.limit = config.soft_bounce_limit.max(1);
            settings.soft.window =
                Duration::from_secs(u64::from(config.soft_bounce_days.max(1)) * 24 * 3600);
            Some(tokio::spawn(crate::inbound::serve(
                state.clone(),
                l,
                settings,
                stop_rx.clone(),
            )))
        }
        _ => None,
    };
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await?;
            tracing::info!(addr = %l.local_addr()?, "metrics listening (not on the public listener)");
            let mut stop = stop_rx.clone();
            let app = metrics_app(state.clone());
            Some(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stopped).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            }))
        }
        None => None,
    };
    tracing::info!(addr = %listener.local_addr()?, shards = state.shards, "api listening");
    axum::serve(listener, app_serving(state, metrics.is_none()))
        .with_graceful_shutdown(shutdown)
        .await?;
    let _ = stop_tx.send(true);
    if let Some(m) = metrics {
        let _ = m.await;
    }
    let _ = expander.await;
    if let Some(i) = inbound {
        let _ = i.await;
    }
    for r in recorders {
        let _ = r.await;
    }
    let _ = partitions.await;
    Ok(())
}
