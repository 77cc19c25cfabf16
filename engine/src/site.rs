//! A site scheduler: one destination's queue, rate limiter and connection pool.
//!
//! Jobs wait in a bounded in-memory queue; up to `max_connections` connection tasks take them,
//! each waiting for the site's rate limiter (governor) before a message and closing after
//! `max_messages_per_connection`. A full or paused site refuses new jobs (the dispatcher puts
//! them in the retry set), so one slow site never holds memory or readers that other sites
//! need: no head-of-line blocking. A rate-limited site is "full" at what it can send within
//! [`HOLD_HORIZON`] ([`Site::capacity`]): queued jobs hold in-flight permits, and a slow site
//! holding thousands of them would starve the fast ones of the node's budget.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{watch, Notify};

use crate::adaptive::{Adaptive, Change};
use crate::campaigns::CampaignStates;
use crate::classify::Attempt;
use crate::clock;
use crate::connect::{Connector, Session, Target};
use crate::fleet::FleetLimits;
use crate::jis::Charset;
use crate::meter::Meter;
use crate::metrics::SiteMetrics;
use crate::policy::SitePolicy;
use crate::render::{Campaign, DateLine, Framing, Renderer, MAX_MESSAGE_BYTES};
use crate::report::Reporter;
use crate::site_events::{SiteEvent, SiteEvents};
use crate::smtp::client::too_big;
use crate::smtp::stream::MaybeTls;
use crate::smtp::{Envelope, Reply, SmtpClient, SmtpError};
use crate::units::Rate;
use crate::work::Work;

/// How far into the queue a connection looks for a job to its own destination.
const PREFER_SCAN: usize = 64;
/// Longest a refused job is told to wait for its return slot (it expires on its own schedule).
const MAX_RETURN_DELAY: Duration = Duration::from_secs(3600);
/// Most messages a pipelined session has sent and not had replies for.
const WINDOW: usize = 32;
/// A pipelined session stops adding messages to one write past this many bytes.
const WINDOW_BYTES: usize = 256 * 1024;
/// A rate-limited site holds in memory only what it can send in this long at its rate (at
/// least a pipelining [`WINDOW`]); the rest waits in Redis, not in the node's in-flight budget.
pub const HOLD_HORIZON: Duration = Duration::from_secs(3);

/// A message sent on a pipelined session, waiting for its replies.
#[derive(Debug)]
struct Sent {
    item: Routed,
    /// The session had carried messages before this one.
    reused: bool,
    started: tokio::time::Instant,
}

/// Whether two targets are the same destination (cheap when they are the same cached `Arc`).
fn same_target(a: &Target, b: &Target) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// The return slot for the next refused job: the end of the virtual queue, or — when that is
/// past — the time the real queue will have drained (`drain_us` from `now_us`); never more than
/// `max_us` ahead (a virtual queue longer than that only makes every return wait the maximum,
/// and its end would run ahead of real time for as long as refusals go on).
fn return_slot(end_us: u64, now_us: u64, drain_us: u64, max_us: u64) -> u64 {
    end_us
        .max(now_us.saturating_add(drain_us))
        .min(now_us.saturating_add(max_us))
}

/// A job routed to a site, with the target its domain resolved to.
#[derive(Debug)]
pub struct Routed {
    /// The job.
    pub work: Work,
    /// MX hosts for its domain.
    pub target: Arc<Target>,
}

/// What the site's connections need from the rest of the engine.
#[derive(Debug, Clone)]
pub struct SiteDeps {
    /// Opens sessions.
    pub connector: Connector,
    /// Campaign cache.
    pub renderer: Arc<Renderer>,
    /// Results.
    pub reporter: Reporter,
    /// Campaign run states (paused / cancelled by the API).
    pub campaigns: Arc<CampaignStates>,
    /// Where adaptive-shaping changes go.
    pub events: SiteEvents,
    /// Addresses suppressed after expansion (the last check before sending).
    pub suppressed: Arc<crate::suppressed::Suppressed>,
    /// Fleet-wide limits through Redis (`None`: this node's limits only).
    pub fleet: Option<crate::fleet::FleetDeps>,
}

/// One site's scheduler.
#[derive(Debug)]
pub struct Site {
    /// The policy in force.
    pub policy: SitePolicy,
    /// Jobs waiting for a connection. A std mutex: pushed and popped without awaiting.
    queue: Mutex<VecDeque<Routed>>,
    /// Wakes idle connections when a job arrives.
    notify: Notify,
    /// The limiter in force (policy rate or operator override); `None` = unlimited.
    limiter: Mutex<Option<Arc<DefaultDirectRateLimiter>>>,
    /// Rate of the limiter in force, to rebuild it only on change.
    current_rate: Mutex<Rate>,
    /// Connection tasks alive.
    open: AtomicU32,
    /// Rate-limiter tokens taken by a connection and not used (see
    /// [`Site::give_back_tokens`]).
    spare_tokens: AtomicU32,
    /// End of the virtual queue of refused jobs, µs since the epoch (see
    /// [`Site::refusal_delay`]).
    return_slot_us: AtomicU64,
    /// Since when a connection found the queue empty, µs since the epoch (0: a job was taken
    /// since). A queue dry for [`Site::dry_enough`] starts the return slots over.
    dry_since_us: AtomicU64,
    /// How many messages a pipelining session may have written and unanswered.
    in_doubt: crate::in_doubt::InDoubt,
    /// Operator pause.
    paused: AtomicBool,
    /// Operator rate override (`None`: the policy's).
    operator_rate: Mutex<Option<Rate>>,
    /// Reply rules and the rate cap / suspension they set.
    adaptive: Adaptive,
    /// Messages the site accepted per second, smoothed (adaptive cuts start from it).
    accepted: Meter,
    /// The current suspension came from a block rule (operator attention needed).
    blocked: AtomicBool,
    /// Shutting down: take no new jobs, start no new messages.
    draining: AtomicBool,
    /// The shutdown stage, watched by connections' waits ([`Site::drain`], [`Site::abort`]).
    halt: watch::Sender<Halt>,
    /// The site's rate and connection cap for the whole fleet, when shared.
    fleet: Option<FleetLimits>,
    /// A look for a free fleet slot is scheduled ([`Site::open_later`]).
    reopen: AtomicBool,
    /// Connections waiting for the rate limiter right now: while one is, the rate and not the
    /// connections holds the site back, and no connection is added ([`Site::maybe_open`]).
    rate_waiters: AtomicUsize,
    /// Connections opened and without a session yet: while as many are starting as are
    /// carrying mail, no more are added (connections at most double per set-up time); each
    /// one that gets its session looks whether another may open.
    starting: AtomicUsize,
    deps: SiteDeps,
    metrics: SiteMetrics,
}

/// How far a site's shutdown has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// Serving.
    Run,
    /// Draining: nothing more is written to a server.
    Drain,
    /// Aborted: connections end now.
    Abort,
}

/// One count in a gauge until it leaves or is dropped (a cancelled wait is counted out too).
struct Counted<'a>(Option<&'a AtomicUsize>);

impl<'a> Counted<'a> {
    /// Counts one in `gauge`.
    fn enter(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::AcqRel);
        Counted(Some(gauge))
    }

    /// Takes over a count already made in `gauge`.
    fn adopt(gauge: &'a AtomicUsize) -> Self {
        Counted(Some(gauge))
    }

    /// Counts it out now; whether it was still counted.
    fn leave(&mut self) -> bool {
        let Some(g) = self.0.take() else {
            return false;
        };
        g.fetch_sub(1, Ordering::AcqRel);
        true
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let _ = self.leave();
    }
}

/// Limiter for `rate` with a burst of 5% of a second's worth (at least one), so that no
/// one-second window carries more than ~105% of the rate.
fn limiter(rate: Rate) -> Option<Arc<DefaultDirectRateLimiter>> {
    let per_sec = rate.0?;
    let period = Duration::from_secs_f64(1.0 / per_sec.max(1e-6));
    let burst =
        NonZeroU32::new(((per_sec / 20.0).floor() as u32).max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)?.allow_burst(burst);
    Some(Arc::new(RateLimiter::direct(quota)))
}

impl Site {
    /// A site with no connections yet.
    pub fn new(policy: SitePolicy, deps: SiteDeps) -> Arc<Self> {
        let metrics = SiteMetrics::new(&policy.name);
        metrics.in_doubt.set(WINDOW as f64);
        let site = Arc::new(Site {
            limiter: Mutex::new(limiter(policy.rate)),
            current_rate: Mutex::new(policy.rate),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            open: AtomicU32::new(0),
            spare_tokens: AtomicU32::new(0),
            return_slot_us: AtomicU64::new(0),
            dry_since_us: AtomicU64::new(0),
            in_doubt: crate::in_doubt::InDoubt::new(WINDOW as u32),
            paused: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            operator_rate: Mutex::new(None),
            adaptive: Adaptive::new(
                &policy.reply_rules,
                policy.recover_interval,
                policy.recover_step,
            ),
            // Smoothed, so one idle second does not hide the rate a cut should start from.
            accepted: Meter::new(clock::now_ms(), 0.7),
            draining: AtomicBool::new(false),
            halt: watch::Sender::new(Halt::Run),
            reopen: AtomicBool::new(false),
            rate_waiters: AtomicUsize::new(0),
            starting: AtomicUsize::new(0),
            fleet: deps
                .fleet
                .clone()
                .map(|f| FleetLimits::new(&policy.name, f)),
            policy,
            deps,
            metrics,
        });
        if !site.adaptive.is_empty() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let weak = Arc::downgrade(&site);
                rt.spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let Some(site) = weak.upgrade() else { return };
                        site.tick();
                    }
                });
            }
        }
        site
    }

    /// Reports a session's attempt, feeding adaptive shaping first.
    fn session_outcome(&self, work: Work, mx: &str, attempt: &Attempt, reused: bool) {
        self.adapt(attempt);
        self.deps
            .reporter
            .session_outcome(work, &self.policy, mx, attempt, reused);
    }

    /// Once a second: the observed rate, and a recovery step when one is due.
    fn tick(&self) {
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
    fn adapt(&self, attempt: &Attempt) {
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
    fn accepting_rate(&self) -> f64 {
        self.accepted.recent(clock::now_ms())
    }

    /// Applies an adaptive change: limiter, queue, metric, log line, event.
    fn apply_change(&self, change: Change, reply: &str) {
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
    fn refresh_limiter(&self) {
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

    fn q(&self) -> MutexGuard<'_, VecDeque<Routed>> {
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
    fn maybe_open(self: &Arc<Self>, queued: usize) {
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
    fn open_later(self: &Arc<Self>) {
        if self.reopen.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(
                crate::fleet::SLOT_RETRY + Duration::from_millis(fastrand::u64(0..50)),
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
    fn wake(self: &Arc<Self>) {
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

    /// The rate this node sends to the site at: the rate in force, or this node's share of it
    /// in a fleet (`None` = unlimited).
    fn node_rate(&self) -> Option<f64> {
        self.rate()
            .map(|r| self.fleet.as_ref().map_or(r, |f| f.node_rate(r)))
    }

    /// A paused or suspended site hands its queued jobs back to the retry set (each with its
    /// own delay, so they return spread out) and wakes its connections to close.
    fn hand_back_queued(&self) {
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

    fn suspended(&self) -> bool {
        !self.adaptive.is_empty() && self.adaptive.suspended_until_ms() > clock::now_ms()
    }

    /// Sets the operator's rate (`None` = back to the policy's); adaptive shaping may hold
    /// the site below it.
    pub fn set_rate_override(&self, rate: Option<Rate>) {
        *self.operator_rate.lock().unwrap_or_else(|p| p.into_inner()) = rate;
        self.refresh_limiter();
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
    fn dry_enough_us(&self) -> u64 {
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
    fn start_over_if_dry(&self, now_us: u64) {
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
    fn end_dry_spell(&self, now_us: u64) {
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

    /// The site's rate for the whole fleet: the operator's override or the policy's, without
    /// this node's adaptive cut (`None` = unlimited).
    fn fleet_rate(&self) -> Option<f64> {
        self.operator_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(self.policy.rate)
            .0
    }

    /// Messages per second in force (`None` = unlimited).
    fn rate(&self) -> Option<f64> {
        self.current_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// The site as operators see it (`hikyaku site list`), as of `now_ms`.
    pub fn state(&self, now_ms: u64) -> hikyaku_queue_schema::node::SiteState {
        let adaptive = if self.adaptive.suspended_until_ms() > now_ms {
            if self.blocked.load(Ordering::Relaxed) {
                "blocked"
            } else {
                "suspended"
            }
        } else if self.adaptive.cap().is_some() {
            "cut"
        } else {
            "normal"
        };
        hikyaku_queue_schema::node::SiteState {
            rate: self.rate().unwrap_or(0.0),
            override_rate: self
                .operator_rate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .and_then(|r| r.0)
                .unwrap_or(0.0),
            adaptive: adaptive.into(),
            paused: self.paused.load(Ordering::Relaxed),
            connections: u64::from(self.connections()),
            queued: self.queued() as u64,
            at_ms: now_ms,
        }
    }

    /// When the oldest job in this node's queue for the site was first enqueued (ms since
    /// the epoch), `None` when the queue is empty. A scan of the queue: for the gauges, once
    /// a second.
    pub fn oldest_queued_ms(&self) -> Option<u64> {
        self.q().iter().map(|r| r.work.job.queued_ms).min()
    }

    /// Jobs waiting.
    pub fn queued(&self) -> usize {
        self.q().len()
    }

    /// Connection tasks alive.
    pub fn connections(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// The next job, preferring one for `prefer` (the open session's destination) among the
    /// first few queued, so a session is reused for its own destination.
    async fn next(&self, prefer: Option<&Target>) -> Option<Routed> {
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

    /// Waits for the rate limiter and returns how many messages may go now (tokens taken,
    /// at least 1, at most `batch`); `None` when the site starts draining meanwhile (the
    /// caller hands its job back unsent).
    async fn wait_for_rate(&self, batch: u32) -> Option<u32> {
        let mut halt = self.halt.subscribe();
        tokio::select! {
            n = self.take_rate(batch) => Some(n),
            _ = halt.wait_for(|h| *h != Halt::Run) => None,
        }
    }

    /// [`Site::wait_for_rate`] without the shutdown watch. With a backlog, a rate-limited site takes up to 20 ms of its rate at once
    /// (within the limiter's burst), so a pipelined session sends them in one write instead of
    /// waking per message. The wait is a tokio timer, not the limiter's own thread-based one.
    async fn take_rate(&self, batch: u32) -> u32 {
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

    /// A job for `target` only, if one is queued now and the rate limiter lets it go now: what
    /// a pipelined session takes to keep its window full without waiting.
    fn try_next_for(&self, target: &Target, credits: &mut u32) -> Option<Routed> {
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

    /// Takes a token a connection gave back, if any.
    fn take_spare(&self) -> bool {
        self.spare_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives back tokens a connection took and could not use, up to the limiter's burst (so
    /// spare tokens never let a second carry more than the burst over the rate).
    fn give_back_tokens(&self, n: u32) {
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
    fn rate_allows_now(&self) -> bool {
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

    /// Puts jobs a session could not finish back at the front of the queue, in order, for the
    /// next session — no attempt counted: they got no reply. If the site is draining or paused
    /// they go to the retry set instead (the queue is being emptied). Checked under the queue
    /// lock, which `drain` and `set_paused` take after setting their flags.
    fn put_back(&self, items: impl DoubleEndedIterator<Item = Routed>) {
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

    /// A job whose campaign (or its run state) could not be read: a newer release's campaign
    /// and a Redis unavailable for a moment put it back uncharged; anything else ends the
    /// attempt as unrenderable.
    fn unreadable(&self, work: Work, e: crate::render::RenderError) {
        use crate::render::RenderError;
        match e {
            RenderError::TooNew { .. } => {
                // In a rolling upgrade: for whichever node reads it next (soon one of that
                // release).
                tracing::debug!(site = %self.policy.name, error = %e, "campaign for a newer release");
                self.deps.reporter.newer_release(work, &self.policy);
            }
            RenderError::Unavailable { .. } => {
                tracing::warn!(site = %self.policy.name, error = %e, "campaign unreadable for now; job back uncharged");
                self.deps.reporter.store_unavailable(work, &self.policy);
            }
            e => {
                tracing::warn!(site = %self.policy.name, error = %e, "cannot render");
                let attempt = Attempt::Unrenderable(e.to_string());
                self.deps.reporter.outcome(work, &self.policy, "", &attempt);
            }
        }
    }

    /// The job's campaign, from the connection's cache or the shared one, and the campaign's
    /// run state applied (paused jobs go back, cancelled ones end). `None` when the job left.
    async fn admit(
        &self,
        item: Routed,
        current: &mut Option<(u64, Arc<Campaign>)>,
    ) -> Option<(Routed, Arc<Campaign>)> {
        // Most messages of a connection belong to the campaign of the one before: keep it
        // rather than asking the shared cache (a lock) per message.
        let id = item.work.job.id.campaign;
        let campaign = match current {
            Some((cached, c)) if *cached == id => c.clone(),
            _ => match self.deps.renderer.campaign(id).await {
                Ok(c) => {
                    *current = Some((id, c.clone()));
                    c
                }
                Err(e) => {
                    self.unreadable(item.work, e);
                    return None;
                }
            },
        };
        if self
            .deps
            .suppressed
            .contains(campaign.tenant(), &item.work.job.rcpt)
        {
            self.deps.reporter.suppressed(item.work, &self.policy);
            return None;
        }
        if campaign.charset_for(self.policy.charset, item.work.job.domain()) == Charset::Iso2022Jp {
            if let Some(e) = campaign.jis_error() {
                let attempt = Attempt::Unencodable(e.to_owned());
                self.deps
                    .reporter
                    .outcome(item.work, &self.policy, "", &attempt);
                return None;
            }
        }
        let state = match self.deps.renderer.state(id).await {
            Ok(state) => state,
            Err(e) => {
                self.unreadable(item.work, e);
                return None;
            }
        };
        let work = self
            .deps
            .reporter
            .campaign_gate(item.work, &self.policy, state)?;
        Some((Routed { work, ..item }, campaign))
    }

    /// The next job for `target` that is ready now and admitted (see [`Site::try_next_for`],
    /// [`Site::admit`]); jobs that leave at admission are skipped.
    async fn next_admitted(
        &self,
        target: &Target,
        credits: &mut u32,
        current: &mut Option<(u64, Arc<Campaign>)>,
    ) -> Option<(Routed, Arc<Campaign>)> {
        while let Some(item) = self.try_next_for(target, credits) {
            if let Some(admitted) = self.admit(item, current).await {
                return Some(admitted);
            }
        }
        None
    }

    /// One connection: takes jobs until idle, at its message cap, paused or draining; ended at
    /// once by [`Site::abort`] (the end of the shutdown grace).
    async fn connection(self: Arc<Self>) {
        let mut starting = Counted::adopt(&self.starting);
        // A slot of the fleet's connection cap first, when shared.
        let slot = match &self.fleet {
            Some(f) => match f.take_slot(self.policy.max_connections).await {
                Some(member) => Some(member),
                None => {
                    let _ = starting.leave();
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    self.open_later();
                    return;
                }
            },
            None => None,
        };
        self.metrics.connections.increment(1.0);
        let mut halt = self.halt.subscribe();
        tokio::select! {
            () = self.serve(&mut starting) => {}
            _ = halt.wait_for(|h| *h == Halt::Abort) => {
                // The messages on the wire have no verdict: their entries stay pending and are
                // taken back by this node's restart or another node (the crash window).
                tracing::debug!(site = %self.policy.name, "connection aborted at the end of the shutdown grace");
            }
        }
        self.metrics.connections.decrement(1.0);
        if let (Some(f), Some(member)) = (&self.fleet, slot) {
            f.release_slot(member).await;
        }
        let _ = starting.leave();
        self.open.fetch_sub(1, Ordering::AcqRel);
        // A job may have arrived between our last look and the decrement.
        let queued = self.queued();
        if queued > 0 && !self.draining.load(Ordering::SeqCst) && !self.is_paused() {
            self.maybe_open(queued.max(2));
        }
    }

    /// Gives a job this connection holds and has not written back to the retry set unsent
    /// (no attempt counted), with the rate tokens it took: the site is draining.
    fn hand_back(&self, item: Routed, credits: u32) {
        self.give_back_tokens(credits);
        self.deps
            .reporter
            .requeue(item.work, &self.policy, Duration::ZERO);
    }

    /// Whether the site is draining (shutdown): nothing more is written to a server.
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The work of one connection ([`Site::connection`]).
    async fn serve(self: &Arc<Self>, starting: &mut Counted<'_>) {
        let mut session: Option<Session> = None;
        let mut body = Vec::with_capacity(8192);
        let mut staged = Vec::new();
        let mut from_buf = String::new();
        let mut date = DateLine::default();
        let mut current: Option<(u64, Arc<Campaign>)> = None;
        'jobs: loop {
            let prefer = session.as_ref().map(|s| s.target.clone());
            let Some(item) = self.next(prefer.as_deref()).await else {
                break;
            };
            // A session to another destination is no use for this job.
            if session
                .as_ref()
                .is_some_and(|s| !same_target(&s.target, &item.target))
            {
                if let Some(s) = session.take() {
                    s.client.quit().await;
                }
            }
            let Some((item, campaign)) = self.admit(item, &mut current).await else {
                continue;
            };
            // Only a pipelining session can use more than one token at once, and no more than
            // it may still send.
            let batch = session
                .as_ref()
                .filter(|s| s.client.can_pipeline_messages() || s.client.can_chain_data())
                .map_or(1, |s| {
                    self.policy
                        .max_messages_per_connection
                        .saturating_sub(s.sent)
                        .max(1)
                });
            let credits = {
                let _waiting = Counted::enter(&self.rate_waiters);
                self.wait_for_rate(batch).await
            };
            // Shutdown came while this job waited for the rate: it goes back unsent.
            let Some(credits) = credits.map(|n| n.saturating_sub(1)) else {
                self.hand_back(item, 0);
                break;
            };
            // A reused session may have been closed by the server while idle, or be at the
            // server's message limit: that failure, before any transaction started, is retried
            // once on a fresh session without charging the job an attempt.
            let mut retried = false;
            loop {
                if session.is_none() {
                    if self.is_draining() {
                        self.hand_back(item, credits);
                        break 'jobs;
                    }
                    // A connect can take its whole timeout (a peer that does not answer): a
                    // drain does not wait for it, the job goes back unsent at once.
                    let mut halt = self.halt.subscribe();
                    let connected = tokio::select! {
                        r = self
                            .deps
                            .connector
                            .connect(&item.target, &self.policy.timeouts) => Some(r),
                        _ = halt.wait_for(|h| *h != Halt::Run) => None,
                    };
                    let Some(connected) = connected else {
                        self.hand_back(item, credits);
                        break 'jobs;
                    };
                    match connected {
                        Ok(mut s) => {
                            s.client.limit_size(self.policy.max_message_bytes);
                            self.metrics.connect_ok.increment(1);
                            if starting.leave() {
                                self.maybe_open(self.queued());
                            }
                            session = Some(s);
                        }
                        Err((mx, attempt)) => {
                            self.metrics.connect_failed.increment(1);
                            tracing::debug!(site = %self.policy.name, %mx, ?attempt, "connect failed");
                            self.give_back_tokens(credits);
                            self.connect_failed(item, &mx, &attempt);
                            // Back off before this connection tries again; jobs queued
                            // meanwhile see the same failure (fast) or a recovered site.
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue 'jobs;
                        }
                    }
                }
                if self.is_draining() {
                    self.hand_back(item, credits);
                    break 'jobs;
                }
                let Some(s) = session.as_mut() else {
                    continue;
                };
                if let Some(refusal) = self.oversize(&s.client, &campaign, &item) {
                    self.give_back_tokens(credits);
                    let mx = s.mx.clone();
                    self.session_outcome(item.work, &mx, &Attempt::Reply(refusal), s.sent > 0);
                    continue 'jobs;
                }
                if s.client.can_chain_data() {
                    let mut credits = credits;
                    self.chained(
                        &mut session,
                        (item, campaign),
                        &mut credits,
                        &mut current,
                        &mut date,
                        (&mut body, &mut staged),
                    )
                    .await;
                    self.give_back_tokens(credits);
                    continue 'jobs;
                }
                if s.client.can_pipeline_messages() {
                    let mut credits = credits;
                    self.pipelined(
                        &mut session,
                        (item, campaign),
                        &mut credits,
                        &mut current,
                        &mut date,
                        &mut body,
                    )
                    .await;
                    self.give_back_tokens(credits);
                    continue 'jobs;
                }
                body.clear();
                campaign.render(
                    &item.work.job,
                    date.get(),
                    Framing::Data,
                    self.policy.charset,
                    &mut body,
                );
                let reused = s.sent > 0;
                let env = Envelope {
                    from: campaign.envelope_from(&item.work.job, &mut from_buf),
                    to: &item.work.job.rcpt,
                    eight_bit: campaign.eight_bit,
                };
                let started = clock::now();
                let result = s.client.send(&env, &body).await;
                self.metrics
                    .reply_seconds
                    .record(started.elapsed().as_secs_f64());
                s.sent += 1;
                let mx = s.mx.clone();
                match result {
                    Ok(reply) => {
                        let done = s.sent >= self.policy.max_messages_per_connection;
                        self.session_outcome(item.work, &mx, &Attempt::Reply(reply), reused);
                        if done {
                            if let Some(s) = session.take() {
                                s.client.quit().await;
                            }
                        }
                    }
                    Err(e) if reused && !retried && e.before_transaction() => {
                        tracing::debug!(site = %self.policy.name, error = %e, "stale session; retrying on a fresh one");
                        self.adapt(&e.to_attempt());
                        session = None;
                        if self.is_paused() {
                            // That reply suspended the site: no retry now.
                            let delay = self.refusal_delay(Duration::ZERO);
                            self.deps.reporter.requeue(item.work, &self.policy, delay);
                            continue 'jobs;
                        }
                        retried = true;
                        continue;
                    }
                    Err(e) => {
                        session = None;
                        self.session_outcome(item.work, &mx, &e.to_attempt(), reused);
                    }
                }
                break;
            }
        }
        if let Some(s) = session.take() {
            s.client.quit().await;
        }
    }

    /// The refusal of a message too large for this session, decided from the campaign and
    /// the job's values before the message is built ([`Campaign::min_len`]): a merge that
    /// would make a message larger than the server's `SIZE`, the site's limit or the engine's
    /// [`MAX_MESSAGE_BYTES`] is never built, however large it would be.
    fn oversize(
        &self,
        client: &SmtpClient<MaybeTls>,
        campaign: &Campaign,
        item: &Routed,
    ) -> Option<Reply> {
        let max = client.max_message_bytes().min(MAX_MESSAGE_BYTES);
        let least = campaign.over(&item.work.job, self.policy.charset, max)?;
        if least > MAX_MESSAGE_BYTES {
            return Some(too_big(least, MAX_MESSAGE_BYTES));
        }
        client.size_refusal(least, &format!("message of at least {least} bytes"))
    }

    /// Whole-message pipelining on a session that offers PIPELINING and CHUNKING: each message
    /// is `[RSET] MAIL RCPT BDAT <n> LAST <content>`, and up to [`WINDOW`] of them go out before
    /// their replies are read. Every read's replies are handled together and the freed room is
    /// refilled in one write, so under load a write and a read carry many messages (against two
    /// round trips each with `DATA`). Returns with the window empty: when no job for this
    /// destination is ready now, at the session's message cap (session closed), or when the
    /// session failed (session dropped; messages that got no reply went back to the queue).
    async fn pipelined(
        &self,
        session: &mut Option<Session>,
        first: (Routed, Arc<Campaign>),
        credits: &mut u32,
        current: &mut Option<(u64, Arc<Campaign>)>,
        date: &mut DateLine,
        body: &mut Vec<u8>,
    ) {
        let max = self.policy.max_messages_per_connection;
        let mut window: VecDeque<Sent> = VecDeque::new();
        let mut from_buf = String::new();
        let mut next = Some(first);
        loop {
            let Some(s) = session.as_mut() else {
                return;
            };
            // Fill: this job, then whatever is ready now for the same destination.
            while let Some((item, campaign)) = next.take() {
                if let Some(refusal) = self.oversize(&s.client, &campaign, &item) {
                    self.session_outcome(item.work, &s.mx, &Attempt::Reply(refusal), s.sent > 0);
                    next = self.next_admitted(&s.target, credits, current).await;
                    continue;
                }
                body.clear();
                campaign.render(
                    &item.work.job,
                    date.get(),
                    Framing::Bdat,
                    self.policy.charset,
                    body,
                );
                let env = Envelope {
                    from: campaign.envelope_from(&item.work.job, &mut from_buf),
                    to: &item.work.job.rcpt,
                    eight_bit: campaign.eight_bit,
                };
                s.client.queue_message(&env, body);
                window.push_back(Sent {
                    item,
                    reused: s.sent > 0,
                    started: clock::now(),
                });
                s.sent += 1;
                if window.len() >= self.in_doubt.limit()
                    || s.client.queued_bytes() >= WINDOW_BYTES
                    || s.sent >= max
                {
                    break;
                }
                next = self.next_admitted(&s.target, credits, current).await;
            }
            if window.is_empty() {
                return;
            }
            if let Err(e) = s.client.flush().await {
                // The server may have answered messages of the window before the write failed
                // (and said why it went away): those replies stand. Only what is still
                // unanswered is judged by the failure.
                let e = self.settle_after_write_error(s, &mut window, e).await;
                self.session_failed(session, window, e);
                return;
            }
            // Handle at least one result, then every one that arrived with it.
            loop {
                let result = s.client.message_result().await;
                let Some(sent) = window.pop_front() else {
                    break;
                };
                self.metrics
                    .reply_seconds
                    .record(sent.started.elapsed().as_secs_f64());
                match result {
                    Ok(reply) => {
                        self.answered();
                        self.session_outcome(
                            sent.item.work,
                            &s.mx,
                            &Attempt::Reply(reply),
                            sent.reused,
                        )
                    }
                    Err(e) => {
                        window.push_front(sent);
                        self.session_failed(session, window, e);
                        return;
                    }
                }
                if window.is_empty() || !s.client.result_buffered() {
                    break;
                }
            }
            if s.sent >= max {
                if window.is_empty() {
                    if let Some(s) = session.take() {
                        s.client.quit().await;
                    }
                    return;
                }
                continue;
            }
            next = self.next_admitted(&s.target, credits, current).await;
            if next.is_none() && window.is_empty() {
                return;
            }
        }
    }

    /// `DATA` on a session whose server offers PIPELINING without CHUNKING, one round trip per
    /// message ([`SmtpClient::can_chain_data`]): each write carries the content and final dot
    /// of the message whose `DATA` was answered 354 and the next message's
    /// `[RSET] MAIL RCPT DATA`; each read brings the reply to that dot and the next envelope's
    /// replies. At most one message is in doubt at a time (its content written, its reply not
    /// read). The next message is rendered into `staged` before its envelope goes (its size is
    /// checked against `SIZE` then) and becomes `body` on 354. Returns when no job for this
    /// destination is ready now, at the session's message cap (session closed), or when the
    /// session failed (session dropped; the message in doubt is charged with the failure, the
    /// next one goes back unsent).
    async fn chained(
        &self,
        session: &mut Option<Session>,
        first: (Routed, Arc<Campaign>),
        credits: &mut u32,
        current: &mut Option<(u64, Arc<Campaign>)>,
        date: &mut DateLine,
        (body, staged): (&mut Vec<u8>, &mut Vec<u8>),
    ) {
        let max = self.policy.max_messages_per_connection;
        let mut from_buf = String::new();
        let mut next = Some(first);
        // The message whose DATA was answered 354 (its content in `body`), not yet written.
        let mut accepted: Option<Sent> = None;
        loop {
            let Some(s) = session.as_mut() else {
                return;
            };
            let carrying = accepted.take();
            if carrying.is_some() {
                s.client.queue_content(body);
            }
            // The next message's envelope rides in the same write.
            let mut opened: Option<Sent> = None;
            if s.sent < max {
                if next.is_none() {
                    next = self.next_admitted(&s.target, credits, current).await;
                }
                while let Some((item, campaign)) = next.take() {
                    let refusal = match self.oversize(&s.client, &campaign, &item) {
                        Some(r) => Some(r),
                        None => {
                            staged.clear();
                            campaign.render(
                                &item.work.job,
                                date.get(),
                                Framing::Data,
                                self.policy.charset,
                                staged,
                            );
                            let env = Envelope {
                                from: campaign.envelope_from(&item.work.job, &mut from_buf),
                                to: &item.work.job.rcpt,
                                eight_bit: campaign.eight_bit,
                            };
                            s.client.queue_envelope(&env, staged.len())
                        }
                    };
                    if let Some(refusal) = refusal {
                        self.session_outcome(
                            item.work,
                            &s.mx,
                            &Attempt::Reply(refusal),
                            s.sent > 0,
                        );
                        next = self.next_admitted(&s.target, credits, current).await;
                        continue;
                    }
                    opened = Some(Sent {
                        item,
                        reused: s.sent > 0,
                        started: clock::now(),
                    });
                    s.sent += 1;
                    break;
                }
            }
            if carrying.is_none() && opened.is_none() {
                return;
            }
            let written = if carrying.is_some() {
                s.client.flush_content().await
            } else {
                s.client.flush().await
            };
            if let Err(mut e) = written {
                // The dot may have gone before the write failed, and its reply come back.
                let mut window: VecDeque<Sent> = VecDeque::new();
                if let Some(k) = carrying {
                    match tokio::time::timeout(s.client.salvage_wait(), s.client.content_result())
                        .await
                    {
                        Ok(Ok(reply)) => self.session_outcome(
                            k.item.work,
                            &s.mx,
                            &Attempt::Reply(reply),
                            k.reused,
                        ),
                        Ok(Err(closing @ SmtpError::Refused { .. })) => {
                            e = closing;
                            window.push_back(k);
                        }
                        Ok(Err(_)) | Err(_) => window.push_back(k),
                    }
                }
                window.extend(opened);
                self.session_failed(session, window, e);
                return;
            }
            if let Some(k) = carrying {
                let result = s.client.content_result().await;
                self.metrics
                    .reply_seconds
                    .record(k.started.elapsed().as_secs_f64());
                match result {
                    Ok(reply) => {
                        self.session_outcome(k.item.work, &s.mx, &Attempt::Reply(reply), k.reused)
                    }
                    Err(e) => {
                        let window: VecDeque<Sent> = std::iter::once(k).chain(opened).collect();
                        self.session_failed(session, window, e);
                        return;
                    }
                }
            }
            if let Some(m) = opened {
                match s.client.envelope_result().await {
                    Ok(None) => {
                        std::mem::swap(body, staged);
                        accepted = Some(m);
                    }
                    Ok(Some(refusal)) => {
                        self.metrics
                            .reply_seconds
                            .record(m.started.elapsed().as_secs_f64());
                        self.session_outcome(
                            m.item.work,
                            &s.mx,
                            &Attempt::Reply(refusal),
                            m.reused,
                        );
                    }
                    Err(e) => {
                        self.session_failed(session, VecDeque::from([m]), e);
                        return;
                    }
                }
            }
            if s.sent >= max && accepted.is_none() {
                if let Some(s) = session.take() {
                    s.client.quit().await;
                }
                return;
            }
        }
    }

    /// A message a pipelining session had in doubt was answered.
    fn answered(&self) {
        if let Some(limit) = self.in_doubt.answered() {
            self.metrics.in_doubt.set(limit as f64);
        }
    }

    /// Reads the replies that arrived for the `window` before a write of the session failed
    /// with `e`, reporting each message they answer; returns the failure that stands for the
    /// rest: a reply that closed the session (`421 … closing`, which then reaches the reply
    /// rules), else the write's error. Messages the client refused itself are reported too.
    async fn settle_after_write_error(
        &self,
        s: &mut Session,
        window: &mut VecDeque<Sent>,
        e: SmtpError,
    ) -> SmtpError {
        let wait = s.client.salvage_wait();
        while !window.is_empty() {
            match tokio::time::timeout(wait, s.client.message_result()).await {
                Ok(Ok(reply)) => {
                    let Some(sent) = window.pop_front() else {
                        break;
                    };
                    self.answered();
                    self.session_outcome(
                        sent.item.work,
                        &s.mx,
                        &Attempt::Reply(reply),
                        sent.reused,
                    );
                }
                Ok(Err(closing @ SmtpError::Refused { .. })) => return closing,
                Ok(Err(_)) | Err(_) => break,
            }
        }
        e
    }

    /// A pipelined session failed with `window` unanswered (oldest first). The oldest message
    /// is charged with the failure — unless it was the reused session going stale before its
    /// transaction began, which costs nothing; the messages behind it got no reply and go back
    /// to the queue uncharged. Progress is certain: a fresh session's first message is never
    /// "reused", so a server that keeps failing charges one job per session.
    fn session_failed(
        &self,
        session: &mut Option<Session>,
        mut window: VecDeque<Sent>,
        e: SmtpError,
    ) {
        let mx = session.take().map(|s| s.mx).unwrap_or_default();
        let stale = window
            .front()
            .is_some_and(|s| s.reused && e.before_transaction());
        // Messages written and unanswered when the session broke may have been accepted: they
        // go again, so the site keeps fewer in doubt for a while. A server that said goodbye
        // (421) processed nothing after it; a stale session had started nothing.
        if !stale && !matches!(e, SmtpError::Refused { .. }) {
            let limit = self.in_doubt.lost(window.len());
            self.metrics.in_doubt.set(limit as f64);
        }
        if stale {
            tracing::debug!(site = %self.policy.name, error = %e, "stale session; its messages go to a fresh one");
            // A 421 that ends a reused session may still be a throttle reply worth acting on.
            self.adapt(&e.to_attempt());
        } else if let Some(oldest) = window.pop_front() {
            self.session_outcome(oldest.item.work, &mx, &e.to_attempt(), oldest.reused);
        }
        self.put_back(window.into_iter().map(|s| s.item));
    }

    /// A connection could not be opened. If no other connection to the site is alive, the
    /// site is unreachable now: this job and every queued job for the same target share the
    /// failure and are deferred together. If others are alive (a connection-count refusal,
    /// say), only this job is.
    fn connect_failed(&self, item: Routed, mx: &str, attempt: &Attempt) {
        self.adapt(attempt);
        if self.open.load(Ordering::Acquire) > 1 {
            self.deps
                .reporter
                .outcome(item.work, &self.policy, mx, attempt);
            return;
        }
        let same: Vec<Routed> = {
            let mut q = self.q();
            let (same, rest): (VecDeque<Routed>, VecDeque<Routed>) =
                q.drain(..).partition(|r| r.target == item.target);
            *q = rest;
            same.into()
        };
        self.deps
            .reporter
            .outcome(item.work, &self.policy, mx, attempt);
        for r in same {
            self.deps
                .reporter
                .outcome(r.work, &self.policy, mx, attempt);
        }
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
