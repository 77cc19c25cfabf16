//! Turning an attempt's outcome into the job's next place, through the one classifier.
//!
//! Every path that ends an attempt — a reply, a connection failure, a DNS answer, a full site —
//! comes here. [`Reporter::outcome`] classifies, counts, and hands the job to its shard's
//! [`crate::intake::flusher`] as finished (event) or deferred (retry set, or expired past its expiry).

use hikyaku_queue_schema::suppressed::MAX_JOB_LIFE_MS;
use std::sync::Arc;
use std::time::Duration;

use hikyaku_queue_schema::drain::Rule;
use hikyaku_queue_schema::scripts::{Deferred, Finished, Parked};
use hikyaku_queue_schema::{Event, EventStatus, Job, JobId, LastTry};
use tokio::sync::mpsc;

use crate::clock;
use crate::control::campaigns::RunState;
use crate::metrics::Metrics;
use crate::outcome::classify::{classify, Attempt, Disposition, Reason};
use crate::site::policy::SitePolicy;
use crate::work::Work;

/// A job leaving the engine, on its way to Redis.
#[derive(Debug)]
pub enum Done {
    /// Ack + event.
    Finished(Finished),
    /// Ack + retry set.
    Deferred(Deferred),
    /// Ack + the paused campaign's parking list.
    Parked(Parked),
}

/// Sends finished and deferred jobs to their shard's flusher.
#[derive(Debug, Clone)]
pub struct Reporter {
    shards: Arc<[mpsc::UnboundedSender<Done>]>,
    metrics: Metrics,
}

impl Reporter {
    /// A reporter feeding one channel per shard.
    pub fn new(shards: Vec<mpsc::UnboundedSender<Done>>, metrics: Metrics) -> Self {
        Reporter {
            shards: shards.into(),
            metrics,
        }
    }

    /// Classifies `attempt` for `work` routed to `site` (MX host `mx`) and moves the job on.
    pub fn outcome(&self, work: Work, site: &SitePolicy, mx: &str, attempt: &Attempt) {
        self.session_outcome(work, site, mx, attempt, false);
    }

    /// As [`Reporter::outcome`], for an attempt made on an SMTP session; `reused` says the
    /// session had carried messages before. "Messages per connection reached" on a reused
    /// session is a reconnect without penalty; on a fresh one it is an ordinary deferral (a
    /// server that says it to every first message must not keep a job circling forever).
    pub fn session_outcome(
        &self,
        work: Work,
        site: &SitePolicy,
        mx: &str,
        attempt: &Attempt,
        reused: bool,
    ) {
        let mut verdict = classify(attempt);
        if verdict.reason == Reason::Reconnect && !reused {
            verdict.reason = Reason::TempFailure;
        }
        let (code, enhanced, text) = describe(attempt);
        let now = clock::now_ms();
        let attempts = work.job.attempt.saturating_add(1);
        match verdict.disposition {
            Disposition::Delivered | Disposition::Bounced => {
                let status = if verdict.disposition == Disposition::Delivered {
                    EventStatus::Delivered
                } else {
                    EventStatus::Bounced
                };
                self.metrics
                    .outcome(&site.name, status.as_str(), verdict.reason.as_str());
                if status == EventStatus::Delivered {
                    let waited = now.saturating_sub(work.job.queued_ms);
                    self.metrics
                        .delivery_latency(&site.name, waited as f64 / 1000.0);
                }
                self.finish(
                    work,
                    site,
                    mx,
                    status,
                    verdict.reason,
                    attempts,
                    code,
                    enhanced,
                    text,
                );
            }
            Disposition::Deferred if verdict.reason == Reason::Reconnect => {
                // The server ended the session on purpose: no attempt is counted.
                self.metrics.requeued(&site.name, verdict.reason.as_str());
                self.requeue(work, site, Duration::ZERO);
            }
            Disposition::Deferred => {
                let expires = expires_ms(&work, site);
                let delay = site.retry.delay(attempts, fastrand::f64());
                let due = now.saturating_add(delay.as_millis() as u64);
                if due >= expires {
                    self.metrics
                        .outcome(&site.name, "expired", verdict.reason.as_str());
                    let why = format!("expired after {attempts} attempts; last: {text}");
                    self.finish(
                        work,
                        site,
                        mx,
                        EventStatus::Expired,
                        Reason::Expired,
                        attempts,
                        code,
                        enhanced,
                        why,
                    );
                } else {
                    self.metrics
                        .outcome(&site.name, "deferred", verdict.reason.as_str());
                    let mut job = work.job;
                    job.attempt = attempts;
                    job.last = Some(Box::new(LastTry::new(&site.name, &text)));
                    // The deferral, for the record (the daily digest groups these).
                    let event = Event {
                        id: job.id,
                        attempt: attempts,
                        status: EventStatus::Deferred,
                        reason: verdict.reason.as_str().into(),
                        code,
                        enhanced,
                        text,
                        site: site.name.clone(),
                        mx: mx.to_owned(),
                        rcpt: job.rcpt.clone(),
                        queued_ms: job.queued_ms,
                        at_ms: now,
                    };
                    self.send(
                        work.shard,
                        Done::Deferred(Deferred {
                            entry: work.entry.to_string(),
                            due_ms: due,
                            job: job.encode(),
                            event: Some(event.encode()),
                        }),
                    );
                }
            }
        }
    }

    /// Puts a job back without counting an attempt (site full or paused, shutdown hand-back,
    /// reconnect): it returns to the ready stream after `delay` — unless it is past its expiry,
    /// then it ends `expired` (a job at a site paused for days does not wait forever).
    pub fn requeue(&self, work: Work, site: &SitePolicy, delay: Duration) {
        let now = clock::now_ms();
        if now >= expires_ms(&work, site) {
            self.metrics.outcome(&site.name, "expired", "expired");
            let attempts = work.job.attempt;
            let why =
                format!("expired while waiting (site busy or paused) after {attempts} attempts");
            self.finish(
                work,
                site,
                "",
                EventStatus::Expired,
                Reason::Expired,
                attempts,
                0,
                String::new(),
                why,
            );
            return;
        }
        let due = now.saturating_add(delay.as_millis() as u64);
        self.send(
            work.shard,
            Done::Deferred(Deferred {
                entry: work.entry.to_string(),
                due_ms: due,
                job: work.job.encode(),
                event: None,
            }),
        );
    }

    /// Applies a campaign's run state to one of its jobs: `None` if the job may go on, else the
    /// job was held back (paused: parked in Redis until the campaign is resumed or cancelled,
    /// no attempt counted) or finished unsent (cancelled). The one rule for the dispatcher and
    /// the connections.
    pub fn campaign_gate(&self, work: Work, site: &SitePolicy, state: RunState) -> Option<Work> {
        match state {
            RunState::Sending => Some(work),
            RunState::Paused => {
                self.metrics.requeued(&site.name, "campaign-paused");
                self.park(work);
                None
            }
            RunState::Cancelled => {
                self.cancelled(work, site);
                None
            }
        }
    }

    /// Parks a job of a paused campaign: it leaves the engine for the campaign's parking list,
    /// where no reader or mover looks at it until the campaign changes state.
    fn park(&self, work: Work) {
        self.metrics.parked("parked", 1);
        self.send(
            work.shard,
            Done::Parked(Parked {
                entry: work.entry.to_string(),
                campaign: work.job.id.campaign,
                job: work.job.encode(),
            }),
        );
    }

    /// Finishes a job of a cancelled campaign without sending it.
    fn cancelled(&self, work: Work, site: &SitePolicy) {
        self.unsent(work, site, Reason::Cancelled, "campaign cancelled");
    }

    /// Finishes a job whose address was suppressed after expansion, without sending it.
    pub fn suppressed(&self, work: Work, site: &SitePolicy) {
        self.unsent(
            work,
            site,
            Reason::Suppressed,
            "address suppressed for the tenant after expansion",
        );
    }

    /// Finishes a job an operator drained (site or campaign), as the rule says: bounced or
    /// cancelled, reason `drained`, the operator's words as the text; `site` and `mx` are where
    /// it was routed.
    pub fn drained(&self, work: Work, site: &SitePolicy, mx: &str, rule: &Rule) {
        self.end_unsent_at(work, site, mx, rule.status, Reason::Drained, &rule.reason);
    }

    /// Ends a job unsent: status `cancelled`, with `reason`.
    fn unsent(&self, work: Work, site: &SitePolicy, reason: Reason, why: &str) {
        self.end_unsent_at(work, site, "", EventStatus::Cancelled, reason, why);
    }

    /// Ends a job without an attempt, with `status` and `reason`, routed to MX host `mx` (empty
    /// when it was not routed).
    fn end_unsent_at(
        &self,
        work: Work,
        site: &SitePolicy,
        mx: &str,
        status: EventStatus,
        reason: Reason,
        why: &str,
    ) {
        self.metrics
            .outcome(&site.name, status.as_str(), reason.as_str());
        let attempts = work.job.attempt;
        self.finish(
            work,
            site,
            mx,
            status,
            reason,
            attempts,
            0,
            String::new(),
            why.into(),
        );
    }

    /// Puts back, byte for byte, a job a newer release wrote for its own nodes
    /// ([`hikyaku_queue_schema::DecodeError::TooNew`]): into the retry set, due after
    /// [`NEWER_RELEASE_DELAY`], for whichever node reads it then — during a rolling upgrade,
    /// soon one of that release. Never ended, never charged an attempt.
    pub fn newer_job(&self, shard: u16, entry: Arc<str>, bytes: Vec<u8>) {
        self.metrics.requeued("none", "newer-release");
        self.send(
            shard,
            Done::Deferred(Deferred {
                entry: entry.to_string(),
                due_ms: clock::now_ms().saturating_add(NEWER_RELEASE_DELAY.as_millis() as u64),
                job: bytes,
                event: None,
            }),
        );
    }

    /// Puts a job back, uncharged, whose campaign a newer release wrote for its own nodes
    /// (its snapshot cannot be read here): due after [`NEWER_RELEASE_DELAY`].
    pub fn newer_release(&self, work: Work, site: &SitePolicy) {
        self.metrics.requeued(&site.name, "newer-release");
        self.requeue(work, site, NEWER_RELEASE_DELAY);
    }

    /// Puts a job back, uncharged, whose campaign could not be read because Redis was
    /// unavailable for a moment (restarting, loading its data, failing over): due after
    /// [`STORE_RETRY_DELAY`]. The job is not at fault, and the delivery schedule of a
    /// deferral (minutes, then hours) would hold it long after Redis is back.
    pub fn store_unavailable(&self, work: Work, site: &SitePolicy) {
        self.metrics.requeued(&site.name, "redis-unavailable");
        self.requeue(work, site, STORE_RETRY_DELAY);
    }

    /// Ends an entry whose job could not even be decoded, with an event that says so, so that
    /// nothing leaves the queue silently.
    pub fn undecodable(&self, shard: u16, entry: Arc<str>, error: String) {
        let event = Event {
            id: JobId {
                campaign: 0,
                seq: 0,
            },
            attempt: 0,
            status: EventStatus::Bounced,
            reason: "undecodable-job".into(),
            code: 0,
            enhanced: String::new(),
            text: format!("entry {entry}: {error}"),
            site: String::new(),
            mx: String::new(),
            rcpt: String::new(),
            queued_ms: 0,
            at_ms: clock::now_ms(),
        };
        self.metrics.outcome("none", "bounced", "undecodable-job");
        self.send(
            shard,
            Done::Finished(Finished {
                entry: entry.to_string(),
                event: event.encode(),
            }),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        work: Work,
        site: &SitePolicy,
        mx: &str,
        status: EventStatus,
        reason: Reason,
        attempts: u32,
        code: u16,
        enhanced: String,
        text: String,
    ) {
        let event = Event {
            id: work.job.id,
            attempt: attempts,
            status,
            reason: reason.as_str().into(),
            code,
            enhanced,
            text,
            site: site.name.clone(),
            mx: mx.to_owned(),
            rcpt: work.job.rcpt,
            queued_ms: work.job.queued_ms,
            at_ms: clock::now_ms(),
        };
        self.send(
            work.shard,
            Done::Finished(Finished {
                entry: work.entry.to_string(),
                event: event.encode(),
            }),
        );
    }

    fn send(&self, shard: u16, done: Done) {
        if let Some(tx) = self.shards.get(usize::from(shard)) {
            // The flusher outlives every sender (it stops only when all are dropped), so a
            // failed send means the engine is being torn down after a fatal error; the entry
            // stays pending in Redis and is reclaimed.
            if tx.send(done).is_err() {
                tracing::warn!(shard, "flusher gone; entry left pending for reclaim");
            }
        }
    }
}

/// How long a job or campaign written by a newer release for its own nodes waits before it is
/// read again (by any node): in a rolling upgrade, time for a node of that release to take it.
pub const NEWER_RELEASE_DELAY: Duration = Duration::from_secs(30);

/// How long a job waits whose campaign could not be read while Redis was unavailable
/// ([`Reporter::store_unavailable`]).
pub const STORE_RETRY_DELAY: Duration = Duration::from_secs(5);

/// When the job expires: the campaign's expiry if set, else first enqueue + the site's; never
/// later than [`MAX_JOB_LIFE_MS`] after first enqueue (the suppression feed covers that long).
fn expires_ms(work: &Work, site: &SitePolicy) -> u64 {
    job_expires_ms(&work.job, site)
}

/// When `job` expires at `site` (ms since the epoch): the campaign's expiry, else the site's
/// after first enqueue, and never later than [`MAX_JOB_LIFE_MS`] after it.
pub fn job_expires_ms(job: &Job, site: &SitePolicy) -> u64 {
    let queued = job.queued_ms;
    let wanted = if job.expires_ms > 0 {
        job.expires_ms
    } else {
        queued.saturating_add(site.expiry.as_millis() as u64)
    };
    wanted.min(queued.saturating_add(MAX_JOB_LIFE_MS))
}

fn describe(attempt: &Attempt) -> (u16, String, String) {
    match attempt {
        Attempt::Reply(r) | Attempt::SessionRefused(r) => (
            r.code,
            r.enhanced.map(|e| e.to_string()).unwrap_or_default(),
            r.text.replace('\n', " "),
        ),
        Attempt::ConnectionLost(s)
        | Attempt::Garbage(s)
        | Attempt::Tls(s)
        | Attempt::DnsNoDomain(s)
        | Attempt::DnsTemporary(s)
        | Attempt::Unrenderable(s)
        | Attempt::Unencodable(s)
        | Attempt::InvalidRecipient(s) => (0, String::new(), s.clone()),
        Attempt::Timeout(phase) => (0, String::new(), format!("timeout during {phase}")),
    }
}
