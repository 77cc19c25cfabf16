//! Carrying messages on one session: whole messages pipelined with `BDAT` within the in-doubt
//! window, or, against a server without CHUNKING, each message's content and dot chained with
//! the next message's envelope so that every message costs one round trip.

use super::{Routed, Sent, Site, WINDOW_BYTES};
use crate::clock;
use crate::message::{Campaign, DateLine, Framing};
use crate::outcome::classify::Attempt;
use crate::site::connect::Session;
use crate::smtp::{Envelope, SmtpError};
use std::collections::VecDeque;
use std::sync::Arc;

impl Site {
    /// Whole-message pipelining on a session that offers PIPELINING and CHUNKING: each message
    /// is `[RSET] MAIL RCPT BDAT <n> LAST <content>`, and up to [`WINDOW`] of them go out before
    /// their replies are read. Every read's replies are handled together and the freed room is
    /// refilled in one write, so under load a write and a read carry many messages (against two
    /// round trips each with `DATA`). Returns with the window empty: when no job for this
    /// destination is ready now, at the session's message cap (session closed), or when the
    /// session failed (session dropped; messages that got no reply went back to the queue).
    pub(super) async fn pipelined(
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
    pub(super) async fn chained(
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
}
