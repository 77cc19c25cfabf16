//! A connection's life: open a session (counted while starting), admit jobs (campaign state,
//! suppression, size, rendering), serve them with the framing the server allows
//! ([`super::pipelining`]), and report what became of each when a session or connection fails.

use super::{same_target, Counted, Halt, Routed, Sent, Site};
use crate::clock;
use crate::message::jis::Charset;
use crate::message::{Campaign, DateLine, Framing, MAX_MESSAGE_BYTES};
use crate::outcome::classify::Attempt;
use crate::site::connect::{Session, Target};
use crate::smtp::stream::MaybeTls;
use crate::smtp::too_big;
use crate::smtp::{Envelope, Reply, SmtpClient, SmtpError};
use crate::work::Work;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Site {
    /// A job whose campaign (or its run state) could not be read: a newer release's campaign
    /// and a Redis unavailable for a moment put it back uncharged; anything else ends the
    /// attempt as unrenderable.
    pub(super) fn unreadable(&self, work: Work, e: crate::message::RenderError) {
        use crate::message::RenderError;
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
    pub(super) async fn admit(
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
    pub(super) async fn next_admitted(
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
    pub(super) async fn connection(self: Arc<Self>) {
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

    /// The work of one connection ([`Site::connection`]).
    pub(super) async fn serve(self: &Arc<Self>, starting: &mut Counted<'_>) {
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
    pub(super) fn oversize(
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

    /// A message a pipelining session had in doubt was answered.
    pub(super) fn answered(&self) {
        if let Some(limit) = self.in_doubt.answered() {
            self.metrics.in_doubt.set(limit as f64);
        }
    }

    /// Reads the replies that arrived for the `window` before a write of the session failed
    /// with `e`, reporting each message they answer; returns the failure that stands for the
    /// rest: a reply that closed the session (`421 … closing`, which then reaches the reply
    /// rules), else the write's error. Messages the client refused itself are reported too.
    pub(super) async fn settle_after_write_error(
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
    pub(super) fn session_failed(
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
    pub(super) fn connect_failed(&self, item: Routed, mx: &str, attempt: &Attempt) {
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
