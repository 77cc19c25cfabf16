//! The in-flight budget and the set of entries this node holds.
//!
//! The budget bounds memory whatever the backlog (invariant 4): a shard consumer reads only as
//! many entries as there are free permits, and permits come back only when the flusher has
//! written the jobs' next place to Redis. The held set lets a node refresh the idle time of its
//! entries (so live work is never reclaimed by another node) and ignore reclaims of entries it
//! already holds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;

/// Budget and held entries, per node.
#[derive(Debug)]
pub struct InFlight {
    /// Free slots; a consumer takes permits before reading and forgets them, the flusher adds
    /// them back. A semaphore rather than a counter so readers can wait for room.
    permits: Semaphore,
    max: usize,
    /// Entry ids held per shard. A std mutex: held for a few hash operations, never across an
    /// await.
    held: Vec<Mutex<HashSet<Arc<str>>>>,
}

impl InFlight {
    /// A budget of `max` jobs over `shards` shards.
    pub fn new(max: usize, shards: u16) -> Arc<Self> {
        Arc::new(InFlight {
            permits: Semaphore::new(max),
            max,
            held: (0..shards).map(|_| Mutex::new(HashSet::new())).collect(),
        })
    }

    /// Waits until at least one slot is free, then takes up to `want` slots.
    pub async fn reserve(&self, want: usize) -> usize {
        // Wait for one permit, then take whatever else is free right now.
        match self.permits.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return 0,
        }
        1 + self.try_reserve(want.saturating_sub(1))
    }

    /// Takes up to `want` slots that are free now, without waiting (0 if none).
    pub fn try_reserve(&self, want: usize) -> usize {
        let mut got = 0;
        while got < want {
            match self.permits.try_acquire() {
                Ok(p) => {
                    p.forget();
                    got += 1;
                }
                Err(_) => break,
            }
        }
        got
    }

    /// Returns `n` slots.
    pub fn release(&self, n: usize) {
        if n > 0 {
            self.permits.add_permits(n);
        }
    }

    /// Jobs in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// The held set of a shard.
    pub fn held(&self, shard: u16) -> MutexGuard<'_, HashSet<Arc<str>>> {
        // A poisoned lock only means another thread panicked while holding it; the set itself
        // is still consistent (inserts and removes are single operations).
        self.held[usize::from(shard)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
