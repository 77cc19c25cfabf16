//! What a report does: maps it to its job (VERP address or our Message-ID), checks the
//! identifier's MAC ([`hikyaku_queue_schema::ids`]: only identifiers the service made name a
//! job), checks the record says the message was delivered to the address the report names,
//! records it once in `feedback_events`, and suppresses that address for the tenant — at once
//! for a hard bounce or a complaint, after `soft_limit` soft bounces within `soft_window` for
//! delays and transient failures.
//!
//! Whatever happens here, the sender gets the same reply and the public metric moves the same
//! way for every report that is not applied (see [`crate::metrics::feedback`]).

use std::time::Duration;

use hikyaku_queue_schema::{ids, verp};

use super::report::{Complaint, DsnRecipient, Report};
use crate::error::ApiError;
use crate::state::AppState;

/// How soft bounces add up.
#[derive(Debug, Clone, Copy)]
pub struct SoftBounces {
    /// Soft bounces (distinct campaigns) that suppress an address…
    pub limit: u32,
    /// …within this window.
    pub window: Duration,
}

/// What became of one report for one envelope recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded; `suppressed` says whether the address is now suppressed.
    Recorded {
        /// `bounce`, `soft-bounce` or `complaint`.
        kind: &'static str,
        /// The address is suppressed for the tenant now.
        suppressed: bool,
    },
    /// The same report was recorded before.
    Duplicate,
    /// Nothing to do, and why (not ours, not a failure, recipient mismatch…).
    Ignored(&'static str),
}

/// The signed job a complaint's returned message names (`hk.<campaign>.<seq>.<tag>@…`), if
/// its tag verifies under `secret`.
fn job_of_message_id(secret: &[u8], id: &str) -> Option<(u64, u64)> {
    let (c, s, tag) = ids::parse_message_id(id)?;
    ids::verify(secret, c, s, tag).then_some((c, s))
}

/// Applies `report`, received for envelope recipient `rcpt_to`.
pub async fn apply(
    state: &AppState,
    bounce_domain: &str,
    soft: SoftBounces,
    rcpt_to: &str,
    report: &Report,
) -> Result<Applied, ApiError> {
    let applied = apply_report(state, bounce_domain, soft, rcpt_to, report).await?;
    if let Applied::Ignored(why) = &applied {
        tracing::debug!(rcpt_to, why, "report not applied");
    }
    Ok(applied)
}

async fn apply_report(
    state: &AppState,
    bounce_domain: &str,
    soft: SoftBounces,
    rcpt_to: &str,
    report: &Report,
) -> Result<Applied, ApiError> {
    let (job, reported, kind, status, detail) = match report {
        Report::Unrecognised(why) => return Ok(Applied::Ignored(why)),
        Report::Dsn(recipients) => {
            let Some((c, seq, tag)) = verp::parse(rcpt_to, bounce_domain) else {
                return Ok(Applied::Ignored("DSN not sent to a VERP address"));
            };
            if !ids::verify(&state.token_secret, c, seq, tag) {
                return Ok(Applied::Ignored("VERP address not signed by this service"));
            }
            let job = (c, seq);
            let Some(r) = recipients.iter().find(|r| r.is_hard() || r.is_soft()) else {
                return Ok(Applied::Ignored("DSN reports no failure"));
            };
            let DsnRecipient {
                recipient,
                original,
                status,
                diagnostic,
                ..
            } = r;
            // RFC 3464 requires Final-Recipient: a "DSN" without one is not taken (it would
            // let anyone name a job without naming its address).
            let Some(reported) = recipient else {
                return Ok(Applied::Ignored("DSN without Final-Recipient"));
            };
            // The job's address may be the original one, forwarded elsewhere.
            let reported = match original {
                Some(o) if o != reported => vec![reported.clone(), o.clone()],
                _ => vec![reported.clone()],
            };
            let kind = if r.is_hard() { "bounce" } else { "soft-bounce" };
            (job, reported, kind, status.clone(), diagnostic.clone())
        }
        Report::Complaint(Complaint {
            feedback_type,
            recipient,
            message_id,
        }) => {
            let Some(job) = message_id
                .as_deref()
                .and_then(|id| job_of_message_id(&state.token_secret, id))
            else {
                return Ok(Applied::Ignored(
                    "complaint about a message that is not ours (or not signed)",
                ));
            };
            // Feedback loops often redact the recipient: the Message-ID names the job then.
            (
                job,
                recipient.iter().cloned().collect::<Vec<String>>(),
                "complaint",
                feedback_type.clone(),
                String::new(),
            )
        }
    };
    let (campaign, seq) = (
        i64::try_from(job.0).unwrap_or(i64::MAX),
        i64::try_from(job.1).unwrap_or(i64::MAX),
    );
    let mut tx = state.db.begin().await?;
    // Only a message that was actually delivered, and to the address it was delivered to.
    let found: Option<(i64, String)> = sqlx::query_as(
        "SELECT c.tenant_id, lower(d.rcpt) FROM delivery_events d \
         JOIN campaigns c ON c.id = d.campaign_id \
         WHERE d.campaign_id = $1 AND d.seq = $2 AND d.status = 'delivered' LIMIT 1",
    )
    .bind(campaign)
    .bind(seq)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((tenant, email)) = found else {
        return Ok(Applied::Ignored("no delivery of that message is recorded"));
    };
    if !reported.is_empty() && !reported.contains(&email) {
        return Ok(Applied::Ignored("reported recipient is not the job's"));
    }
    let clean = |s: String| s.replace('\0', "").chars().take(1000).collect::<String>();
    let inserted = sqlx::query(
        "INSERT INTO feedback_events (campaign_id, seq, kind, tenant_id, rcpt, status, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(campaign)
    .bind(seq)
    .bind(kind)
    .bind(tenant)
    .bind(&email)
    .bind(clean(status))
    .bind(clean(detail))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Applied::Duplicate);
    }
    let suppress = match kind {
        "soft-bounce" => {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM feedback_events WHERE kind = 'soft-bounce' \
                 AND tenant_id = $1 AND rcpt = $2 AND at > now() - make_interval(secs => $3)",
            )
            .bind(tenant)
            .bind(&email)
            .bind(soft.window.as_secs_f64())
            .fetch_one(&mut *tx)
            .await?;
            (n >= i64::from(soft.limit)).then_some(("soft-bounce", "bounced"))
        }
        "complaint" => Some(("complaint", "complained")),
        _ => Some(("bounce", "bounced")),
    };
    if let Some((reason, subscriber_status)) = suppress {
        let source = if kind == "complaint" { "arf" } else { "dsn" };
        sqlx::query(
            "INSERT INTO suppressions (tenant_id, email_lower, reason, source) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, email_lower) DO NOTHING",
        )
        .bind(tenant)
        .bind(&email)
        .bind(reason)
        .bind(source)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE subscribers SET status = $3, updated_at = now() \
             WHERE tenant_id = $1 AND email_lower = $2 AND status = 'active'",
        )
        .bind(tenant)
        .bind(&email)
        .bind(subscriber_status)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if suppress.is_some() {
        crate::suppression_feed::publish(state, &[(tenant, &email, true)]).await;
    }
    tracing::info!(
        campaign,
        seq,
        kind,
        suppressed = suppress.is_some(),
        "feedback recorded"
    );
    Ok(Applied::Recorded {
        kind,
        suppressed: suppress.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::job_of_message_id;
    use hikyaku_queue_schema::ids;

    #[test]
    fn our_signed_message_ids_name_their_job() {
        let tag = ids::Tagger::new(&ids::campaign_key(b"s", 42))
            .expect("key")
            .tag(7);
        let tag = std::str::from_utf8(&tag).expect("hex");
        let id = format!("hk.42.7.{tag}@acme.test");
        assert_eq!(job_of_message_id(b"s", &id), Some((42, 7)));
        assert_eq!(job_of_message_id(b"other", &id), None, "another secret");
        let forged = format!("hk.42.8.{tag}@acme.test");
        assert_eq!(job_of_message_id(b"s", &forged), None, "another job");
        assert_eq!(
            job_of_message_id(b"s", "hk.42.7@acme.test"),
            None,
            "unsigned"
        );
        assert_eq!(job_of_message_id(b"s", "hk.42@acme.test"), None);
        assert_eq!(job_of_message_id(b"s", "CAF=abc@mail.gmail.com"), None);
    }
}
