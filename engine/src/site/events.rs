//! Adaptive-shaping changes as events: every cut, suspension, block and recovery step is
//! appended to the `hk:site:events` stream (capped), beside its log line and metric, so the
//! admin CLI and dashboards can show what a provider said and what the engine did about it.

use hikyaku_queue_schema::Redis;
use tokio::sync::mpsc;

use hikyaku_queue_schema::Keys;

/// Entries kept in the stream (approximately).
const KEEP: usize = 10_000;

/// One change of one site.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteEvent {
    /// The site.
    pub site: String,
    /// `cut`, `suspend`, `block`, `recover`, or `learn` (the sustainable rate a suspension
    /// taught, in `rate`).
    pub action: &'static str,
    /// Rate cap after the change, msg/s (0: none).
    pub rate: f64,
    /// End of a suspension, ms since the epoch (0: none).
    pub until_ms: u64,
    /// The reply that caused it (empty for recovery).
    pub reply: String,
}

/// Where sites send their events; cheap to clone. The default sends nowhere.
#[derive(Debug, Clone, Default)]
pub struct SiteEvents(Option<mpsc::UnboundedSender<SiteEvent>>);

impl SiteEvents {
    /// Events go to a task appending them to Redis over `con`.
    pub fn to_redis(con: Redis) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (SiteEvents(Some(tx)), tokio::spawn(write(con, rx)))
    }

    /// Sends one event (never blocks).
    pub fn send(&self, e: SiteEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(e);
        }
    }
}

async fn write(mut con: Redis, mut rx: mpsc::UnboundedReceiver<SiteEvent>) {
    while let Some(e) = rx.recv().await {
        let r: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(Keys::site_events())
            .arg("MAXLEN")
            .arg("~")
            .arg(KEEP)
            .arg("*")
            .arg("site")
            .arg(&e.site)
            .arg("action")
            .arg(e.action)
            .arg("rate")
            .arg(e.rate)
            .arg("until_ms")
            .arg(e.until_ms)
            .arg("reply")
            .arg(&e.reply)
            .query_async(&mut con)
            .await;
        if let Err(err) = r {
            tracing::warn!(site = %e.site, error = %err, "site event not written to Redis");
        }
    }
}
