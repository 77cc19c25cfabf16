//! [`app`] (the router, for tests with `oneshot`) and [`run`] (the daemon).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

use crate::config::ApiConfig;
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
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::lists::router())
        .merge(routes::subscribers::router())
        .merge(routes::import::router().layer(DefaultBodyLimit::disable()))
        .merge(routes::campaigns::router())
        .merge(openapi::router())
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(state)
}

/// Connects, migrates, and builds the shared state.
pub async fn connect(config: &ApiConfig) -> Result<(AppState, redis::Client), StartError> {
    let db = PgPoolOptions::new()
        .max_connections(config.db_pool)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&config.database_url)
        .await?;
    sqlx::migrate!("./migrations").run(&db).await?;
    let client = redis::Client::open(config.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let layout = hikyaku_queue_schema::meta::record_or_read(&mut redis, config.shards).await?;
    Ok((
        AppState {
            db,
            redis,
            shards: layout.shards,
            expander: Arc::new(tokio::sync::Notify::new()),
        },
        client,
    ))
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
    tracing::info!(addr = %listener.local_addr()?, shards = state.shards, "api listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    let _ = stop_tx.send(true);
    let _ = expander.await;
    for r in recorders {
        let _ = r.await;
    }
    Ok(())
}
