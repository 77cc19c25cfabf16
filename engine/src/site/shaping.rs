//! The site's sending rate: the limiter in force (policy rate, operator override or the cap
//! reply rules set), tokens leased from the fleet, and the cuts, suspensions and recoveries
//! that replies cause ([`crate::site::adaptive`]).

use super::{Halt, Site, WINDOW};
use crate::clock;
use crate::outcome::classify::Attempt;
use crate::site::adaptive::Change;
use crate::site::events::SiteEvent;
use crate::units::Rate;
use crate::work::Work;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Limiter for `rate` with a burst of 5% of a second's worth (at least one), so that no
/// one-second window carries more than ~105% of the rate.
pub(super) fn limiter(rate: Rate) -> Option<Arc<DefaultDirectRateLimiter>> {
    let per_sec = rate.0?;
    let period = Duration::from_secs_f64(1.0 / per_sec.max(1e-6));
    let burst =
        NonZeroU32::new(((per_sec / 20.0).floor() as u32).max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)?.allow_burst(burst);
    Some(Arc::new(RateLimiter::direct(quota)))
}

impl Site {
    /// Reports a session's attempt, feeding adaptive shaping first.
    pub(super) fn session_outcome(&self, work: Work, mx: &str, attempt: &Attempt, reused: bool) {
        self.adapt(attempt);
        self.deps
            .reporter
            .session_outcome(work, &self.policy, mx, attempt, reused);
    }

    /// Once a second: the observed rate, and a recovery step when one is due.
    pub(super) fn tick(&self) {
        let now = clock::now_ms();
        self.accepted.update(now);
        if let Some(change) = self.adaptive.tick(now) {
            self.apply_change(change, "");
        }
        if self.adaptive.suspended_until_ms() <= now {
            self.metrics.suspended.set(0.0);
            self.metrics.blocked.set(0.0);
            self.blocked.store(false, Ordering::Relaxed);
        }
    }

    /// Feeds a reported attempt to adaptive shaping.
    pub(super) fn adapt(&self, attempt: &Attempt) {
        if self.adaptive.is_empty() {
            return;
        }
        let reply = match attempt {
            Attempt::Reply(r) if r.is_positive() => {
                self.accepted.add(1);
                return;
            }
            Attempt::Reply(r) | Attempt::SessionRefused(r) => r,
            _ => return,
        };
        // `Reply::text` keeps the enhanced code: "421 4.7.28 Our system …".
        let text = reply.one_line();
        let current = self.accepting_rate();
        if let Some(change) = self.adaptive.on_reply(&text, current, clock::now_ms()) {
            self.apply_change(change, &text);
        }
    }

    /// The rate the site has been accepting at, msg/s: the smoothed per-second rate, or the
    /// count since the last tick if higher (a throttle can come before the first tick). Never
    /// over less than a second: providers cap messages per second, and a burst that filled
    /// the second in 100 ms is 100 msg/s, not 1,000.
    pub(super) fn accepting_rate(&self) -> f64 {
        self.accepted.recent(clock::now_ms())
    }

    /// Applies an adaptive change: limiter, queue, metric, log line, event.
    pub(super) fn apply_change(&self, change: Change, reply: &str) {
        let site = &self.policy.name;
        let event = |action: &'static str, rate: f64, until_ms: u64| SiteEvent {
            site: site.clone(),
            action,
            rate,
            until_ms,
            reply: reply.to_owned(),
        };
        match change {
            Change::Cut { from, to } => {
                tracing::warn!(site = %site, from, to, reply, "provider throttles: site rate cut");
                self.refresh_limiter();
                self.metrics.rate_cap.set(to);
                self.metrics.adaptive("cut");
                self.deps.events.send(event("cut", to, 0));
            }
            Change::Suspend {
                until_ms,
                blocked,
                learned,
            } => {
                if let Some(l) = learned {
                    tracing::warn!(site = %site, sustainable = l.sustainable, resume = l.resume, "suspension teaches the site's sustainable rate; it comes back below it");
                    self.refresh_limiter();
                    self.metrics.rate_cap.set(l.resume);
                    self.metrics.sustainable.set(l.sustainable);
                    self.deps.events.send(event("learn", l.sustainable, 0));
                }
                let action = if blocked { "block" } else { "suspend" };
                let secs = until_ms.saturating_sub(clock::now_ms()) / 1000;
                if blocked {
                    tracing::error!(site = %site, for_s = secs, reply, "provider blocks us: site suspended, operator attention needed");
                    self.metrics.blocked.set(1.0);
                    self.blocked.store(true, Ordering::Relaxed);
                } else {
                    tracing::warn!(site = %site, for_s = secs, reply, "provider defers us: site suspended");
                }
                self.metrics.suspended.set(1.0);
                self.metrics.adaptive(action);
                self.deps
                    .events
                    .send(event(action, self.adaptive.cap().unwrap_or(0.0), until_ms));
                self.hand_back_queued();
            }
            Change::Recover { to } => {
                tracing::info!(site = %site, to = ?to, "site rate recovers");
                self.metrics
                    .sustainable
                    .set(self.adaptive.sustainable().unwrap_or(0.0));
                self.refresh_limiter();
                self.metrics.rate_cap.set(to.unwrap_or(0.0));
                self.metrics.adaptive("recover");
                self.deps
                    .events
                    .send(event("recover", to.unwrap_or(0.0), 0));
            }
        }
    }

    /// Rebuilds the limiter when the rate in force changed: the operator's override or the
    /// policy's rate, under the adaptive cap.
    pub(super) fn refresh_limiter(&self) {
        let base = self
            .operator_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(self.policy.rate);
        let want = match (base.0, self.adaptive.cap()) {
            (Some(b), Some(c)) => Rate(Some(b.min(c))),
            (None, Some(c)) => Rate(Some(c)),
            (b, None) => Rate(b),
        };
        let mut cur = self.current_rate.lock().unwrap_or_else(|p| p.into_inner());
        if *cur != want {
            *cur = want;
            *self.limiter.lock().unwrap_or_else(|p| p.into_inner()) = limiter(want);
        }
    }

    /// The rate this node sends to the site at: the rate in force, or this node's share of it
    /// in a fleet (`None` = unlimited).
    pub(super) fn node_rate(&self) -> Option<f64> {
        self.rate()
            .map(|r| self.fleet.as_ref().map_or(r, |f| f.node_rate(r)))
    }

    /// Sets the operator's rate (`None` = back to the policy's); adaptive shaping may hold
    /// the site below it.
    pub fn set_rate_override(&self, rate: Option<Rate>) {
        *self.operator_rate.lock().unwrap_or_else(|p| p.into_inner()) = rate;
        self.refresh_limiter();
    }

    /// The site's rate for the whole fleet: the operator's override or the policy's, without
    /// this node's adaptive cut (`None` = unlimited).
    pub(super) fn fleet_rate(&self) -> Option<f64> {
        self.operator_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(self.policy.rate)
            .0
    }

    /// Messages per second in force (`None` = unlimited).
    pub(super) fn rate(&self) -> Option<f64> {
        self.current_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Waits for the rate limiter and returns how many messages may go now (tokens taken,
    /// at least 1, at most `batch`); `None` when the site starts draining meanwhile (the
    /// caller hands its job back unsent).
    pub(super) async fn wait_for_rate(&self, batch: u32) -> Option<u32> {
        let mut halt = self.halt.subscribe();
        tokio::select! {
            n = self.take_rate(batch) => Some(n),
            _ = halt.wait_for(|h| *h != Halt::Run) => None,
        }
    }

    /// [`Site::wait_for_rate`] without the shutdown watch. With a backlog, a rate-limited site takes up to 20 ms of its rate at once
    /// (within the limiter's burst), so a pipelined session sends them in one write instead of
    /// waking per message. The wait is a tokio timer, not the limiter's own thread-based one.
    pub(super) async fn take_rate(&self, batch: u32) -> u32 {
        let l = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(l) = l else {
            return u32::MAX;
        };
        let rate = self.rate().unwrap_or(1.0);
        let backlog = u32::try_from(self.queued().saturating_add(1)).unwrap_or(u32::MAX);
        if self.take_spare() {
            return 1;
        }
        let mut want = ((rate / 50.0) as u32)
            .clamp(1, WINDOW as u32)
            .min(backlog)
            .min(batch);
        if let (Some(f), Some(fleet_rate)) = (&self.fleet, self.fleet_rate()) {
            // The fleet's share first, at the fleet's rate (this node's adaptive cut is its
            // own: leasing at the cut rate would take a larger share of the fleet's schedule
            // per message); the local limiter then spaces what was leased, cut included.
            want = f.take(want, fleet_rate, backlog).await;
        }
        let mut n = NonZeroU32::new(want).unwrap_or(NonZeroU32::MIN);
        let mut waited = false;
        loop {
            match l.check_n(n) {
                Ok(Ok(())) => return n.get(),
                Ok(Err(not_until)) => {
                    if !waited {
                        self.metrics.rate_waits.increment(1);
                        waited = true;
                    }
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(l.clock()));
                    tokio::time::sleep(wait.max(Duration::from_micros(100))).await;
                }
                // More than the burst: ask for one (and keep the other leased tokens).
                Err(_) => {
                    self.give_back_tokens(n.get() - 1);
                    n = NonZeroU32::MIN;
                }
            }
        }
    }

    /// Takes a token a connection gave back, if any.
    pub(super) fn take_spare(&self) -> bool {
        self.spare_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives back tokens a connection took and could not use, up to the limiter's burst (so
    /// spare tokens never let a second carry more than the burst over the rate).
    pub(super) fn give_back_tokens(&self, n: u32) {
        if n == 0 || n == u32::MAX {
            return;
        }
        let rate = self.rate();
        let Some(r) = rate else { return };
        let cap = ((r / 20.0) as u32).max(1);
        let _ = self
            .spare_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |have| {
                Some(have.saturating_add(n).min(cap))
            });
    }

    /// Takes a token from the rate limiter (and a leased one from the fleet's, when shared)
    /// if one is free now.
    pub(super) fn rate_allows_now(&self) -> bool {
        if self.take_spare() {
            return true;
        }
        let l = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(l) = l else { return true };
        if let Some(f) = &self.fleet {
            if !f.try_take_one() {
                return false;
            }
            if l.check().is_err() {
                f.untake_one();
                return false;
            }
            return true;
        }
        l.check().is_ok()
    }

    /// Renews the fleet connection slots this node holds for the site (control loop).
    pub async fn renew_fleet_slots(&self) -> redis::RedisResult<()> {
        let Some(f) = &self.fleet else { return Ok(()) };
        f.renew().await?;
        if f.contended() {
            // Idle connections wake, see the fleet waiting, and give their slots back.
            self.notify.notify_waiters();
        }
        Ok(())
    }
}
