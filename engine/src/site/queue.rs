//! The site's queue: jobs offered by the dispatcher wait here for a connection (bounded, so a
//! full or paused site refuses and the job goes to the retry set with a return slot), and
//! connections take them, preferring jobs to the destination they are connected to. Also the
//! shutdown stages (drain, abort) and the gauges read from the queue.

use super::{same_target, Halt, Routed, Site, HOLD_HORIZON, WINDOW};
use crate::clock;
use crate::site::connect::Target;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

/// How far into the queue a connection looks for a job to its own destination.
const PREFER_SCAN: usize = 64;
/// Longest a refused job is told to wait for its return slot (it expires on its own schedule).
const MAX_RETURN_DELAY: Duration = Duration::from_secs(3600);

/// The return slot for the next refused job: the end of the virtual queue, or — when that is
/// past — the time the real queue will have drained (`drain_us` from `now_us`); never more than
/// `max_us` ahead (a virtual queue longer than that only makes every return wait the maximum,
/// and its end would run ahead of real time for as long as refusals go on).
fn return_slot(end_us: u64, now_us: u64, drain_us: u64, max_us: u64) -> u64 {
    end_us
        .max(now_us.saturating_add(drain_us))
        .min(now_us.saturating_add(max_us))
}

impl Site {
    pub(super) fn q(&self) -> MutexGuard<'_, VecDeque<Routed>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the queue's lock until the guard is dropped, doing nothing with it: a test's way
    /// to line up a job offer and a pause behind the lock, in the order a loaded node may run
    /// them.
    #[doc(hidden)]
    pub fn hold_queue_lock(&self) -> impl Drop + '_ {
        self.q()
    }

    /// Takes a job, or gives it back if the site is paused, draining or full.
    // The refused job comes back by value: boxing it would allocate per refusal.
    #[allow(clippy::result_large_err)]
    pub fn offer(self: &Arc<Self>, r: Routed) -> Result<(), Routed> {
        let capacity = self.capacity();
        let queued = {
            let mut q = self.q();
            // Under the queue lock, which `set_paused` and `drain` take after setting their
            // flags: a job either sees the flag here or is emptied out by them, never left
            // behind in a queue no connection serves.
            if self.is_paused() || self.draining.load(Ordering::SeqCst) || q.len() >= capacity {
                return Err(r);
            }
            // No connection here and none to be had from the fleet: keep a window's worth
            // for when a slot frees up, and let the rest wait in Redis, not in this node's
            // in-flight budget.
            if q.len() >= WINDOW
                && self
                    .fleet
                    .as_ref()
                    .is_some_and(|f| f.starved(self.open.load(Ordering::Relaxed)))
            {
                return Err(r);
            }
            q.push_back(r);
            q.len()
        };
        self.notify.notify_one();
        self.maybe_open(queued);
        Ok(())
    }

    /// Opens another connection task if there is a backlog, room under the cap, no open
    /// connection is waiting for the rate limiter, and no more are starting than carrying mail.
    /// So connections follow the path: a site whose rate is the bound keeps the few
    /// connections that carry it, while on a long path, where each connection is bound by its
    /// pipelining window over the round trip, more open (up to the cap) until the rate is what
    /// they wait for again. Fewer connections per provider is also what providers ask of bulk
    /// senders.
    pub(super) fn maybe_open(self: &Arc<Self>, queued: usize) {
        loop {
            let open = self.open.load(Ordering::Acquire) as usize;
            if open >= self.policy.max_connections as usize
                || (open > 0
                    && (queued <= 1
                        || self.rate_waiters.load(Ordering::Acquire) > 0
                        || self.starting.load(Ordering::Acquire) * 2 >= open))
            {
                return;
            }
            if self.fleet.as_ref().is_some_and(|f| f.refused_now()) {
                self.open_later();
                return;
            }
            if self
                .open
                .compare_exchange(
                    open as u32,
                    open as u32 + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                self.starting.fetch_add(1, Ordering::AcqRel);
                let site = self.clone();
                tokio::spawn(async move { site.connection().await });
                return;
            }
        }
    }

    /// After the fleet refused a connection slot: looks again once the refusal has passed, so
    /// jobs queued here are not left without a connection when no new job arrives to open one.
    pub(super) fn open_later(self: &Arc<Self>) {
        if self.reopen.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(
                crate::site::fleet::SLOT_RETRY + Duration::from_millis(fastrand::u64(0..50)),
            )
            .await;
            let Some(site) = weak.upgrade() else { return };
            site.reopen.store(false, Ordering::Release);
            let queued = site.queued();
            if queued > 0 && !site.draining.load(Ordering::SeqCst) && !site.is_paused() {
                site.maybe_open(queued.max(2));
            }
        });
    }

    /// Pauses or resumes the site (operator control). Pausing hands the jobs queued here back
    /// to the retry set; connections close after the message they are sending. Resuming opens
    /// a connection for whatever is queued.
    pub fn set_paused(self: &Arc<Self>, paused: bool) {
        let was = self.paused.swap(paused, Ordering::SeqCst);
        self.metrics.paused.set(if paused { 1.0 } else { 0.0 });
        if paused && !was {
            tracing::info!(site = %self.policy.name, "site paused");
            self.hand_back_queued();
        } else if !paused && was {
            tracing::info!(site = %self.policy.name, "site resumed");
            self.wake();
        }
    }

    /// Wakes the site's connections and opens one if jobs wait and none serves them.
    pub(super) fn wake(self: &Arc<Self>) {
        let queued = self.queued();
        if queued > 0 && !self.draining.load(Ordering::SeqCst) && !self.is_paused() {
            self.notify.notify_waiters();
            self.maybe_open(queued.max(2));
        }
    }

    /// Most jobs the site holds in memory now: `queue_capacity`, and for a rate-limited site
    /// no more than it sends in [`HOLD_HORIZON`] at this node's rate (at least a pipelining
    /// [`WINDOW`]).
    pub fn capacity(&self) -> usize {
        let cap = self.policy.queue_capacity;
        match self.node_rate() {
            Some(r) if r > 0.0 => {
                let horizon = (r * HOLD_HORIZON.as_secs_f64()).ceil();
                cap.min((horizon as usize).max(WINDOW))
            }
            _ => cap,
        }
    }

    /// A paused or suspended site hands its queued jobs back to the retry set (each with its
    /// own delay, so they return spread out) and wakes its connections to close.
    pub(super) fn hand_back_queued(&self) {
        self.notify.notify_waiters();
        let queued: Vec<Routed> = self.q().drain(..).collect();
        for r in queued {
            let delay = self.refusal_delay(Duration::ZERO);
            self.deps.reporter.requeue(r.work, &self.policy, delay);
        }
    }

    /// Whether the site is paused by an operator or suspended after a provider reply.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed) || self.suspended()
    }

    pub(super) fn suspended(&self) -> bool {
        !self.adaptive.is_empty() && self.adaptive.suspended_until_ms() > clock::now_ms()
    }

    /// Starts draining and returns every job not yet started, for hand-back. Connections
    /// finish the messages they have written, write nothing more, and hand back what they
    /// hold unsent (a job waiting for the rate, say).
    pub fn drain(&self) -> Vec<Routed> {
        self.draining.store(true, Ordering::SeqCst);
        self.halt.send_if_modified(|h| {
            let run = *h == Halt::Run;
            if run {
                *h = Halt::Drain;
            }
            run
        });
        self.notify.notify_waiters();
        self.q().drain(..).collect()
    }

    /// Ends every connection now (the end of the shutdown grace): messages on the wire get no
    /// verdict, and their entries stay pending for reclaim.
    pub fn abort(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.halt.send_replace(Halt::Abort);
        self.notify.notify_waiters();
    }

    /// How long a job refused by this site should wait before it is offered again.
    ///
    /// A rate-limited site hands out return slots: the refused jobs form a virtual queue
    /// behind the real one, each due back one rate step after the one before, starting when the
    /// real queue will have drained. So a throttled site's backlog comes back from Redis about
    /// once per job, at the pace the site takes it, instead of circulating through the shard
    /// streams (and the CPU) that other sites share. Otherwise (no rate, or paused) the delay is
    /// `base` (at least 10 s when paused), spread ±50% so returns are a trickle, not a wave.
    pub fn refusal_delay(&self, base: Duration) -> Duration {
        let spread = |d: Duration| d.mul_f64(0.5 + fastrand::f64());
        if self.suspended() {
            // Back when the suspension ends, spread over the following tenth of it.
            let left = Duration::from_millis(
                self.adaptive
                    .suspended_until_ms()
                    .saturating_sub(clock::now_ms()),
            );
            return base.max(left + left.mul_f64(0.1 * fastrand::f64()));
        }
        if self.is_paused() {
            return spread(base.max(Duration::from_secs(10)));
        }
        // A node of a fleet drains at its share of the site's rate, not all of it.
        match self.node_rate() {
            Some(r) if r > 0.0 => {
                let now_us = clock::now_ms().saturating_mul(1000);
                self.start_over_if_dry(now_us);
                let drain_us = (self.capacity() as f64 / r * 1e6) as u64;
                let step_us = ((1e6 / r) as u64).max(1);
                let max_us = MAX_RETURN_DELAY.as_micros() as u64;
                let prev = self
                    .return_slot_us
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                        Some(return_slot(cur, now_us, drain_us, max_us) + step_us)
                    })
                    .unwrap_or(now_us);
                let slot = return_slot(prev, now_us, drain_us, max_us);
                let delay = Duration::from_micros(slot - now_us).min(MAX_RETURN_DELAY);
                base.max(delay)
            }
            _ => spread(base),
        }
    }

    /// How long the queue must have been empty before the return slots start over: two
    /// seconds, or three rate steps on a slow site. A queue empty for a moment between two
    /// batches is not dry: starting over then would bring the backlog back at once.
    pub(super) fn dry_enough_us(&self) -> u64 {
        let step_us = self
            .node_rate()
            .filter(|r| *r > 0.0)
            .map_or(0, |r| (3e6 / r) as u64);
        step_us.max(2_000_000)
    }

    /// Starts the return slots over when the queue has been dry long enough as of `now_us`:
    /// the refused jobs due by then have come back and gone, so jobs refused from now on are
    /// due when this queue drains again, not behind the end of an earlier backlog's virtual
    /// queue (which only ever moves forward).
    /// Once per dry spell: the mark is cleared as the slots start over, so a batch refused after
    /// a long idle spell gets successive slots again from the first refusal on.
    pub(super) fn start_over_if_dry(&self, now_us: u64) {
        let since = self.dry_since_us.load(Ordering::Acquire);
        if since != 0
            && now_us.saturating_sub(since) >= self.dry_enough_us()
            && self
                .dry_since_us
                .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.return_slot_us.store(0, Ordering::Release);
        }
    }

    /// A job was taken at `now_us`: a dry spell (if long enough) ends here.
    pub(super) fn end_dry_spell(&self, now_us: u64) {
        if self.dry_since_us.load(Ordering::Acquire) != 0 {
            self.start_over_if_dry(now_us);
            self.dry_since_us.store(0, Ordering::Release);
        }
    }

    /// How long a job this site refused before, and refuses again, should wait. On a node of a
    /// fleet, returns paced at the node's measured share can still come early (the share
    /// moves); putting such a job at the end of the virtual queue again would push the queue's
    /// end ahead of real time with every early return, until the last jobs waited long after
    /// the site ran dry. So it comes back once the jobs queued here now have gone (at least a
    /// pipelining window's worth), spread ±50%, and the virtual queue is left alone. Otherwise as [`Site::refusal_delay`].
    pub fn refused_again_delay(&self, base: Duration) -> Duration {
        let (Some(f), Some(r)) = (&self.fleet, self.rate()) else {
            return self.refusal_delay(base);
        };
        if self.is_paused() || r <= 0.0 {
            return self.refusal_delay(base);
        }
        let queued = self.queued().max(WINDOW);
        let drain = Duration::from_secs_f64(queued as f64 / f.node_rate(r));
        base.max(drain.mul_f64(0.5 + fastrand::f64()))
            .min(MAX_RETURN_DELAY)
    }

    /// The next job, preferring one for `prefer` (the open session's destination) among the
    /// first few queued, so a session is reused for its own destination.
    pub(super) async fn next(&self, prefer: Option<&Target>) -> Option<Routed> {
        loop {
            if self.draining.load(Ordering::SeqCst) || self.is_paused() {
                return None;
            }
            let picked = {
                let mut q = self.q();
                let at = prefer.and_then(|t| {
                    q.iter()
                        .take(PREFER_SCAN)
                        .position(|r| same_target(&r.target, t))
                });
                match at {
                    Some(i) => q.remove(i),
                    None => q.pop_front(),
                }
            };
            let now_us = clock::now_ms().saturating_mul(1000);
            if let Some(r) = picked {
                self.end_dry_spell(now_us);
                return Some(r);
            }
            let _ = self.dry_since_us.compare_exchange(
                0,
                now_us.max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            // An idle connection keeps the session for the next job, unless other nodes of
            // the fleet are waiting for a connection slot of this site.
            if self.fleet.as_ref().is_some_and(|f| f.contended()) {
                return None;
            }
            let notified = self.notify.notified();
            if tokio::time::timeout(self.policy.timeouts.idle, notified)
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// A job for `target` only, if one is queued now and the rate limiter lets it go now: what
    /// a pipelined session takes to keep its window full without waiting.
    pub(super) fn try_next_for(&self, target: &Target, credits: &mut u32) -> Option<Routed> {
        if self.draining.load(Ordering::SeqCst) || self.is_paused() {
            return None;
        }
        let item = {
            let mut q = self.q();
            let at = q
                .iter()
                .take(PREFER_SCAN)
                .position(|r| same_target(&r.target, target))?;
            q.remove(at)?
        };
        if *credits > 0 {
            *credits -= 1;
        } else if !self.rate_allows_now() {
            // Back through put_back: a pause or drain that came meanwhile has already handed
            // the queue back, and a job pushed in after it would wait where nobody serves.
            self.put_back(std::iter::once(item));
            return None;
        }
        Some(item)
    }

    /// Puts jobs a session could not finish back at the front of the queue, in order, for the
    /// next session — no attempt counted: they got no reply. If the site is draining or paused
    /// they go to the retry set instead (the queue is being emptied). Checked under the queue
    /// lock, which `drain` and `set_paused` take after setting their flags.
    pub(super) fn put_back(&self, items: impl DoubleEndedIterator<Item = Routed>) {
        let mut refused = Vec::new();
        {
            let mut q = self.q();
            let closing = self.draining.load(Ordering::SeqCst) || self.is_paused();
            for r in items.rev() {
                if closing {
                    refused.push(r);
                } else {
                    q.push_front(r);
                }
            }
        }
        if !refused.is_empty() {
            let delay = self.refusal_delay(Duration::ZERO);
            for r in refused.into_iter().rev() {
                self.deps.reporter.requeue(r.work, &self.policy, delay);
            }
        } else {
            self.notify.notify_one();
        }
    }

    /// Gives a job this connection holds and has not written back to the retry set unsent
    /// (no attempt counted), with the rate tokens it took: the site is draining.
    pub(super) fn hand_back(&self, item: Routed, credits: u32) {
        self.give_back_tokens(credits);
        self.deps
            .reporter
            .requeue(item.work, &self.policy, Duration::ZERO);
    }

    /// Whether the site is draining (shutdown): nothing more is written to a server.
    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_jobs_get_successive_return_slots_at_the_site_rate() {
        // 300/s, a queue of 600: the first refused job is due when the queue has drained (2 s),
        // each next one a rate step (3,333 µs) later; an idle site starts over from now.
        let (drain, step) = (2_000_000, 3_333);
        let now = 10_000_000;
        let mut end = 0;
        let mut slots = Vec::new();
        let max = 3_600_000_000;
        for _ in 0..3 {
            let slot = return_slot(end, now, drain, max);
            end = slot + step;
            slots.push(slot - now);
        }
        assert_eq!(slots, [2_000_000, 2_003_333, 2_006_666]);
        let later = now + 60_000_000;
        assert_eq!(return_slot(end, later, drain, max), later + drain);
        // However long the backlog was, a slot is at most `max` ahead.
        assert_eq!(return_slot(now + 10 * max, now, drain, max), now + max);
    }
}
