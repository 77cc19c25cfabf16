//! Writing jobs' next places back to Redis in batches, one flusher per shard.
//!
//! Finished jobs go through `finish.lua` (ack + delete + event) and deferred ones through
//! `defer.lua` (ack + delete + retry set), each atomic and idempotent, so a batch that failed
//! halfway is simply written again. Slots and held entries are released only after Redis
//! confirmed, which is what makes "nothing is lost" hold across Redis hiccups.

use std::sync::Arc;
use std::time::Duration;

use hikyaku_queue_schema::scripts::{self, Deferred, Finished, Parked};
use hikyaku_queue_schema::Redis;
use tokio::sync::{mpsc, watch};

use crate::intake::inflight::InFlight;
use crate::outcome::report::Done;

/// Largest batch written in one script call.
const MAX_BATCH: usize = 2048;

/// Runs until every sender of `rx` is dropped and the channel is drained, or `finish` turns
/// true (shutdown): then it writes what has been reported so far, without waiting for a batch
/// to fill, and returns.
pub async fn run(
    shard: u16,
    mut rx: mpsc::UnboundedReceiver<Done>,
    mut con: Redis,
    inflight: Arc<InFlight>,
    flush_interval: Duration,
    mut finish: watch::Receiver<bool>,
) {
    let mut finishing = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut finished: Vec<Finished> = Vec::with_capacity(MAX_BATCH);
    let mut deferred: Vec<Deferred> = Vec::with_capacity(MAX_BATCH);
    let mut parked: Vec<Parked> = Vec::new();
    loop {
        if finishing {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
        } else {
            tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return;
                    }
                }
                _ = finish.wait_for(|f| *f) => {
                    finishing = true;
                    continue;
                }
            }
            if batch.len() < MAX_BATCH / 8 && !flush_interval.is_zero() {
                // Let a few more arrive: fewer, larger script calls.
                tokio::select! {
                    () = tokio::time::sleep(flush_interval) => {}
                    _ = finish.wait_for(|f| *f) => finishing = true,
                }
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(d) => batch.push(d),
                        Err(_) => break,
                    }
                }
            }
        }
        for d in batch.drain(..) {
            match d {
                Done::Finished(f) => finished.push(f),
                Done::Deferred(d) => deferred.push(d),
                Done::Parked(p) => parked.push(p),
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = async {
                scripts::finish(&mut con, shard, &finished).await?;
                scripts::park(&mut con, shard, &parked).await?;
                scripts::defer(&mut con, shard, &deferred).await
            }
            .await;
            match result {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "writing results to Redis failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let n = finished.len() + deferred.len() + parked.len();
        {
            let mut held = inflight.held(shard);
            for e in finished
                .iter()
                .map(|f| &f.entry)
                .chain(deferred.iter().map(|d| &d.entry))
                .chain(parked.iter().map(|p| &p.entry))
            {
                held.remove(e.as_str());
            }
        }
        inflight.release(n);
        finished.clear();
        deferred.clear();
        parked.clear();
    }
}
