//! What an admin command works with: the record, and the queues when it needs them.

use sqlx::PgPool;
use tokio::sync::OnceCell;

use super::AdminError;
use crate::state::AppState;

/// Connections of one CLI run (or of a test).
#[derive(Debug)]
pub struct Ctx {
    /// PostgreSQL.
    pub db: PgPool,
    redis_url: String,
    state: OnceCell<AppState>,
}

impl Ctx {
    /// A context over `db`; Redis (`redis_url`) is connected on first use.
    pub fn new(db: PgPool, redis_url: &str) -> Self {
        Ctx {
            db,
            redis_url: redis_url.to_owned(),
            state: OnceCell::new(),
        }
    }

    /// A context over an API's state (tests).
    pub fn from_state(state: AppState) -> Self {
        Ctx {
            db: state.db.clone(),
            redis_url: String::new(),
            state: OnceCell::new_with(Some(state)),
        }
    }

    /// The queues, connected on first use, with the shard count the queues were laid out
    /// with. Fails when Redis holds no layout yet (no API or engine ever ran against it).
    pub async fn state(&self) -> Result<&AppState, AdminError> {
        self.state
            .get_or_try_init(|| async {
                let client = hikyaku_queue_schema::RedisClient::open(self.redis_url.as_str())?;
                let mut redis = client.connect().await?;
                let shards: Option<u16> = redis::cmd("HGET")
                    .arg(hikyaku_queue_schema::Keys::meta())
                    .arg("shards")
                    .query_async(&mut redis)
                    .await?;
                let shards = shards.ok_or_else(|| {
                    AdminError::Other(format!(
                        "{}: no queue layout in hk:meta (has an API or engine run against this Redis?)",
                        self.redis_url
                    ))
                })?;
                Ok(AppState {
                    db: self.db.clone(),
                    redis,
                    shards,
                    // The admin batch signs no tokens and builds no links.
                    token_secret: std::sync::Arc::from(Vec::new()),
                    public_url: String::new(),
                    unsubscribe_mailbox: None,
                    bounce_domain: None,
                    expander: std::sync::Arc::new(tokio::sync::Notify::new()),
                    tracking_days: 90,
                    key_limiter: None,
                    test_sends_per_hour: 0,
                })
            })
            .await
    }

    /// A Redis connection to the queues.
    pub async fn redis(&self) -> Result<hikyaku_queue_schema::Redis, AdminError> {
        Ok(self.state().await?.redis.clone())
    }

    /// The shard count.
    pub async fn shards(&self) -> Result<u16, AdminError> {
        Ok(self.state().await?.shards)
    }
}
