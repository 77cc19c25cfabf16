//! The retry mover: returns due jobs from every shard's retry set to its ready stream.
//!
//! Each move is one atomic script call (`move_due.lua`), so several engines may run movers on
//! the same shards at once: a job moves exactly once.

use std::time::Duration;

use hikyaku_queue_schema::scripts;
use hikyaku_queue_schema::Redis;
use tokio::sync::watch;

use crate::clock;
use crate::metrics::Metrics;

/// Most jobs moved per script call (bounds the time Redis spends in one call).
const MOVE_BATCH: usize = 1000;

/// Runs until `stop` turns true.
pub async fn run(
    mut con: Redis,
    shards: u16,
    interval: Duration,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
) {
    let mut ticks = clock::Ticks::new(interval, stop);
    while ticks.next().await {
        for shard in 0..shards {
            loop {
                match scripts::move_due(&mut con, shard, clock::now_ms(), MOVE_BATCH).await {
                    Ok(n) => {
                        metrics.moved(n);
                        if n < MOVE_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "moving due jobs failed");
                        break;
                    }
                }
            }
        }
    }
}
