//! A site scheduler: one destination's queue, rate limiter and connection pool.
//!
//! Jobs wait in a bounded in-memory queue; up to `max_connections` connection tasks take them,
//! each waiting for the site's rate limiter (governor) before a message and closing after
//! `max_messages_per_connection`. A full or paused site refuses new jobs (the dispatcher puts
//! them in the retry set), so one slow site never holds memory or readers that other sites
//! need: no head-of-line blocking. A rate-limited site is "full" at what it can send within
//! [`HOLD_HORIZON`] ([`Site::capacity`]): queued jobs hold in-flight permits, and a slow site
//! holding thousands of them would starve the fast ones of the node's budget.

pub mod adaptive;
pub mod connect;
pub mod events;
pub mod fleet;
pub mod in_doubt;
pub mod policy;

mod pipelining;
mod queue;
mod session;
mod shaping;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::DefaultDirectRateLimiter;
use tokio::sync::{watch, Notify};

use crate::clock;
use crate::control::campaigns::CampaignStates;
use crate::message::Renderer;
use crate::meter::Meter;
use crate::metrics::SiteMetrics;
use crate::outcome::report::Reporter;
use crate::site::adaptive::Adaptive;
use crate::site::connect::{Connector, Target};
use crate::site::events::SiteEvents;
use crate::site::fleet::FleetLimits;
use crate::site::policy::SitePolicy;
use crate::units::Rate;
use crate::work::Work;
use shaping::limiter;

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
    pub suppressed: Arc<crate::control::suppressed::Suppressed>,
    /// Fleet-wide limits through Redis (`None`: this node's limits only).
    pub fleet: Option<crate::site::fleet::FleetDeps>,
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
    in_doubt: crate::site::in_doubt::InDoubt,
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
            in_doubt: crate::site::in_doubt::InDoubt::new(WINDOW as u32),
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
}
