//! The recorder: every shard's events stream → PostgreSQL, in batches, idempotently.
//!
//! Each shard is read by the `hk-recorder` consumer group. A batch is inserted with
//! `ON CONFLICT DO NOTHING` on the engine's idempotency key `(campaign, seq, attempt)`; only the
//! rows really inserted move the live counters and add suppressions, and the entries are acked and
//! deleted only after the transaction commits — so a replayed event changes nothing and a crash
//! loses nothing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use hikyaku_queue_schema::keys::{EVENT_FIELD, RECORDER_GROUP};
use hikyaku_queue_schema::{Event, Keys};
use hikyaku_queue_schema::{Redis, RedisClient};
use redis::streams::StreamReadReply;

use crate::error::ApiError;
use crate::state::AppState;

/// Events per batch.
const BATCH: usize = 2_000;

/// Reasons that make an address undeliverable for the tenant from now on.
const HARD_BOUNCES: [&str; 2] = ["bad-mailbox", "bad-domain"];

/// Bounce reasons of our own making (not a refusal by the carrier): they never suppress.
const LOCAL_BOUNCES: [&str; 5] = ["unencodable", "expired", "cancelled", "drained", "not-sent"];

/// Reasons of bounces whose message never left: the quota gives them back, as it gives back
/// every `cancelled` job (and every job that expired without an attempt).
const NEVER_SENT: [&str; 3] = ["unencodable", "drained", "not-sent"];

/// PostgreSQL refuses NUL in text; a peer's reply may carry one. Strip it, or one hostile
/// reply would block its shard's recording forever.
fn text<'e>(events: &[&'e Event], f: fn(&'e Event) -> &'e str) -> Vec<Cow<'e, str>> {
    events
        .iter()
        .map(|e| {
            let s = f(e);
            if s.contains('\0') {
                Cow::Owned(s.replace('\0', ""))
            } else {
                Cow::Borrowed(s)
            }
        })
        .collect()
}

/// Records deferral events (not end states) in `deferral_events`; returns how many were new.
async fn record_deferrals(state: &AppState, events: &[&Event]) -> Result<usize, ApiError> {
    let campaign: Vec<i64> = events.iter().map(|e| e.id.campaign as i64).collect();
    let seq: Vec<i64> = events.iter().map(|e| e.id.seq as i64).collect();
    let attempt: Vec<i32> = events.iter().map(|e| e.attempt as i32).collect();
    let code: Vec<i32> = events.iter().map(|e| i32::from(e.code)).collect();
    let at: Vec<f64> = events.iter().map(|e| e.at_ms as f64 / 1000.0).collect();
    let started = tokio::time::Instant::now();
    let done = sqlx::query(
        "INSERT INTO deferral_events (campaign_id, seq, attempt, tenant_id, reason, code, enhanced, \
           detail, site, mx, rcpt, at) \
         SELECT u.c, u.s, u.a, k.tenant_id, u.r, u.code, u.e, u.d, u.site, u.mx, u.rcpt, to_timestamp(u.t) \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::int[], $6::text[], \
           $7::text[], $8::text[], $9::text[], $10::text[], $11::float8[]) \
           AS u(c, s, a, r, code, e, d, site, mx, rcpt, t) \
         JOIN campaigns k ON k.id = u.c \
         ON CONFLICT (campaign_id, seq, attempt) DO NOTHING",
    )
    .bind(&campaign)
    .bind(&seq)
    .bind(&attempt)
    .bind(text(events, |e| &e.reason))
    .bind(&code)
    .bind(text(events, |e| &e.enhanced))
    .bind(text(events, |e| &e.text))
    .bind(text(events, |e| &e.site))
    .bind(text(events, |e| &e.mx))
    .bind(text(events, |e| &e.rcpt))
    .bind(&at)
    .execute(&state.db)
    .await?;
    let n = done.rows_affected();
    crate::metrics::recorded("deferred", n, started.elapsed().as_secs_f64());
    Ok(n as usize)
}

/// Marks a campaign completed once every enqueued job has an end state.
pub async fn maybe_complete(state: &AppState, campaign: i64) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE campaigns SET status = 'completed', updated_at = now() \
         WHERE id = $1 AND status = 'sending' AND expansion_done \
           AND expanded <= (SELECT COALESCE(sum(n), 0) FROM campaign_counters WHERE campaign_id = $1)",
    )
    .bind(campaign)
    .execute(&state.db)
    .await?;
    Ok(())
}

/// Marks every campaign completed whose enqueued jobs all have an end state.
pub async fn complete_all(state: &AppState) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE campaigns c SET status = 'completed', updated_at = now() \
         WHERE c.status = 'sending' AND c.expansion_done \
           AND c.expanded <= (SELECT COALESCE(sum(n), 0) FROM campaign_counters WHERE campaign_id = c.id)",
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// Records a batch of events; returns how many were new.
///
/// Jobs that end without their message ever leaving (cancelled, drained, refused by the
/// sender, expired unattempted) give their message back to the tenant's monthly quota, in the
/// month they were counted in.
///
/// One statement, so one round trip and one implicit transaction: the insert, the counter
/// upserts, the hard-bounce suppressions and the subscriber marks are data-modifying CTEs over
/// the rows really inserted, and only per-(campaign, status) totals and the newly suppressed
/// addresses come back (for the engines' suppression feed). Deferral events (not end states)
/// go to `deferral_events` in a statement of their own, first.
pub async fn record(state: &AppState, events: &[Event]) -> Result<usize, ApiError> {
    let (events, deferred): (Vec<&Event>, Vec<&Event>) = events
        .iter()
        .filter(|e| e.id.campaign > 0)
        .partition(|e| e.status.is_end());
    let deferrals = if deferred.is_empty() {
        0
    } else {
        record_deferrals(state, &deferred).await?
    };
    if events.is_empty() {
        return Ok(deferrals);
    }
    let campaign: Vec<i64> = events.iter().map(|e| e.id.campaign as i64).collect();
    let seq: Vec<i64> = events.iter().map(|e| e.id.seq as i64).collect();
    let attempt: Vec<i32> = events.iter().map(|e| e.attempt as i32).collect();
    let status: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    let code: Vec<i32> = events.iter().map(|e| i32::from(e.code)).collect();
    let queued: Vec<f64> = events.iter().map(|e| e.queued_ms as f64 / 1000.0).collect();
    let at: Vec<f64> = events.iter().map(|e| e.at_ms as f64 / 1000.0).collect();
    let started = tokio::time::Instant::now();
    // Counter rows are upserted in key order, so concurrent shard recorders lock them in the
    // same order (no deadlocks).
    let totals: Vec<(i64, String, i64)> = sqlx::query_as(
        "WITH ins AS ( \
           INSERT INTO delivery_events (campaign_id, seq, attempt, tenant_id, status, reason, code, enhanced, \
             detail, site, mx, rcpt, queued_at, at) \
           SELECT u.c, u.s, u.a, k.tenant_id, u.st, u.r, u.code, u.e, u.d, u.site, u.mx, u.rcpt, \
             to_timestamp(u.q), to_timestamp(u.t) \
           FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::text[], $6::int[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[], $13::float8[]) \
             AS u(c, s, a, st, r, code, e, d, site, mx, rcpt, q, t) \
           JOIN campaigns k ON k.id = u.c \
           ON CONFLICT (campaign_id, seq, attempt, at) DO NOTHING \
           RETURNING campaign_id, tenant_id, status, site, reason, rcpt, attempt, queued_at \
         ), unsent AS ( \
           SELECT tenant_id, date_trunc('month', queued_at AT TIME ZONE 'UTC')::date AS month, \
                  count(*) AS n FROM ins \
           WHERE status = 'cancelled' OR (status = 'expired' AND attempt = 0) \
              OR (status = 'bounced' AND reason = ANY($17::text[])) \
           GROUP BY 1, 2 \
         ), credited AS ( \
           INSERT INTO tenant_usage (tenant_id, month, messages) \
           SELECT u.tenant_id, u.month, -u.n FROM unsent u \
           WHERE EXISTS (SELECT 1 FROM tenant_usage t WHERE t.tenant_id = u.tenant_id AND t.month = u.month) \
           ORDER BY 1, 2 \
           ON CONFLICT (tenant_id, month) DO UPDATE \
             SET messages = GREATEST(tenant_usage.messages + EXCLUDED.messages, 0) \
         ), counted AS ( \
           INSERT INTO campaign_counters (campaign_id, status, site, n) \
           SELECT campaign_id, status, site, count(*) FROM ins GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 \
           ON CONFLICT (campaign_id, status, site) DO UPDATE SET n = campaign_counters.n + EXCLUDED.n \
         ), hard AS ( \
           SELECT DISTINCT ON (tenant_id, lower(rcpt)) tenant_id, lower(rcpt) AS e, reason FROM ins \
           WHERE status = 'bounced' \
             AND (reason = ANY($14::text[]) OR (split_part(lower(rcpt), '@', 2) = ANY($15::text[]) \
                  AND reason <> ALL($16::text[]))) \
         ), suppressed AS ( \
           INSERT INTO suppressions (tenant_id, email_lower, reason, source) \
           SELECT tenant_id, e, reason, 'bounce' FROM hard ON CONFLICT DO NOTHING \
           RETURNING tenant_id, email_lower \
         ), marked AS ( \
           UPDATE subscribers s SET status = 'bounced', updated_at = now() FROM hard h \
           WHERE s.tenant_id = h.tenant_id AND s.email_lower = h.e AND s.status = 'active' \
         ) \
         (SELECT campaign_id, status, count(*) FROM ins GROUP BY 1, 2 ORDER BY 1, 2) \
         UNION ALL SELECT tenant_id, email_lower, -1 FROM suppressed",
    )
    .bind(&campaign)
    .bind(&seq)
    .bind(&attempt)
    .bind(&status)
    .bind(text(&events, |e| &e.reason))
    .bind(&code)
    .bind(text(&events, |e| &e.enhanced))
    .bind(text(&events, |e| &e.text))
    .bind(text(&events, |e| &e.site))
    .bind(text(&events, |e| &e.mx))
    .bind(text(&events, |e| &e.rcpt))
    .bind(&queued)
    .bind(&at)
    .bind(&HARD_BOUNCES[..])
    .bind(&hikyaku_queue_schema::carriers::CARRIER_DOMAINS[..])
    .bind(&LOCAL_BOUNCES[..])
    .bind(&NEVER_SENT[..])
    .fetch_all(&state.db)
    .await?;
    let secs = started.elapsed().as_secs_f64();
    // Rows with -1 are the addresses this batch newly suppressed (tenant, address).
    let (suppressed, totals): (Vec<_>, Vec<_>) = totals.into_iter().partition(|r| r.2 < 0);
    let changes: Vec<(i64, &str, bool)> = suppressed
        .iter()
        .map(|(tenant, email, _)| (*tenant, email.as_str(), true))
        .collect();
    crate::suppression_feed::publish(state, &changes).await;
    let mut by_status: HashMap<&str, u64> = HashMap::new();
    for (_, status, n) in &totals {
        *by_status.entry(status.as_str()).or_insert(0) += *n as u64;
    }
    for (status, n) in by_status {
        crate::metrics::recorded(status, n, secs);
    }
    let mut touched: Vec<i64> = totals.iter().map(|r| r.0).collect();
    touched.sort_unstable();
    touched.dedup();
    for c in touched {
        maybe_complete(state, c).await?;
    }
    Ok(deferrals + totals.iter().map(|r| r.2 as usize).sum::<usize>())
}

async fn read(
    con: &mut Redis,
    key: &str,
    from: &str,
    block: bool,
) -> redis::RedisResult<Vec<(String, Option<Vec<u8>>)>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(RECORDER_GROUP)
        .arg("recorder")
        .arg("COUNT")
        .arg(BATCH);
    if block {
        cmd.arg("BLOCK").arg(500);
    }
    cmd.arg("STREAMS").arg(key).arg(from);
    let reply: Option<StreamReadReply> = cmd.query_async(con).await?;
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .map(|e| {
            let bytes = e.get::<Vec<u8>>(EVENT_FIELD);
            (e.id, bytes)
        })
        .collect())
}

/// How often an idle recorder goes over the pending entries again.
const PENDING_SWEEP: Duration = Duration::from_secs(5);

/// Records one shard's events until `shutdown`.
async fn shard_loop(
    state: AppState,
    client: RedisClient,
    shard: u16,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let key = Keys::events(shard);
    let mut from = "0".to_owned(); // first our own pending entries, then new ones
    let mut last_sweep = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut con = loop {
        match client.connect_blocking().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(shard, error = %e, "recorder cannot reach Redis; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg(RECORDER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await;
    while !*shutdown.borrow() {
        let entries = match read(&mut con, &key, &from, from == ">").await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(shard, error = %e, "reading events failed; retrying");
                // Entries Redis may have delivered before the error are pending: re-read them.
                from = "0".into();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if entries.is_empty() {
            // Every API node reads as the one consumer `recorder`: entries another node read
            // and never acknowledged (it stopped mid-batch, as in a rolling upgrade) stay
            // pending under that name. Idle, go over them again now and then (recording is
            // idempotent, so one still being recorded elsewhere costs nothing).
            if from == ">" && last_sweep.elapsed() >= PENDING_SWEEP {
                last_sweep = tokio::time::Instant::now();
                from = "0".into();
                continue;
            }
            from = ">".into();
            if let Ok(n) = redis::cmd("XLEN")
                .arg(&key)
                .query_async::<u64>(&mut con)
                .await
            {
                crate::metrics::events_backlog(shard, n);
            }
            continue;
        }
        // Events of a newer release marked must-understand stay pending, unacknowledged, for a
        // recorder of that release (in a rolling upgrade, soon); newer ones that are not marked
        // decode as far as this build knows them (see hikyaku_queue_schema::codec).
        let mut newer: Vec<&str> = Vec::new();
        let events: Vec<Event> = entries
            .iter()
            .filter_map(|(id, bytes)| match bytes.as_deref().map(Event::decode) {
                Some(Ok(e)) => Some(e),
                Some(Err(e)) if e.is_too_new() => {
                    newer.push(id.as_str());
                    None
                }
                other => {
                    tracing::warn!(shard, entry = %id, ?other, "undecodable event skipped");
                    None
                }
            })
            .collect();
        if !newer.is_empty() {
            tracing::warn!(
                shard,
                events = newer.len(),
                "events of a newer release left pending for a recorder of that release"
            );
            crate::metrics::events_newer(newer.len() as u64);
        }
        count_down_test_sends(&mut con, shard, &events).await;
        // Until PostgreSQL takes the batch, keep trying: the entries stay pending meanwhile.
        loop {
            match record(&state, &events).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "recording events failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        backoff = Duration::from_millis(100);
        let ids: Vec<&str> = entries
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !newer.contains(id))
            .collect();
        // Reading pending entries, go on after this batch: those left pending (a newer
        // release's) would otherwise come back first every time.
        if from != ">" {
            if let Some((last, _)) = entries.last() {
                from.clone_from(last);
            }
        }
        if ids.is_empty() {
            continue;
        }
        let acked: redis::RedisResult<(u64,)> = redis::pipe()
            .cmd("XACK")
            .arg(&key)
            .arg(RECORDER_GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&key)
            .arg(&ids)
            .ignore()
            .cmd("XLEN")
            .arg(&key)
            .query_async(&mut con)
            .await;
        match acked {
            Ok((backlog,)) => crate::metrics::events_backlog(shard, backlog),
            Err(e) => {
                tracing::warn!(shard, error = %e, "acking recorded events failed; they will be replayed (harmlessly)");
            }
        }
    }
}

/// Counts the ended jobs of test sends down on their snapshots, which expire shortly after the
/// last one ([`hikyaku_queue_schema::scripts::test_jobs_done`]). A batch replayed after a crash
/// may count twice: the snapshot then goes early, and a message of it still waiting is not
/// sent (test messages only).
async fn count_down_test_sends(
    con: &mut hikyaku_queue_schema::Redis,
    shard: u16,
    events: &[Event],
) {
    use hikyaku_queue_schema::keys::TEST_ID_BASE;
    let mut ended: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for e in events {
        if e.id.campaign >= TEST_ID_BASE && e.status.is_end() {
            *ended.entry(e.id.campaign).or_default() += 1;
        }
    }
    let linger = crate::expansion::TEST_SNAPSHOT_LINGER.as_secs();
    for (test_id, n) in ended {
        if let Err(e) = hikyaku_queue_schema::scripts::test_jobs_done(con, test_id, n, linger).await
        {
            tracing::warn!(shard, test_id, error = %e, "counting test messages down failed; the snapshot expires on its own");
        }
    }
}

/// Spawns one recorder task per shard.
pub fn spawn(
    state: AppState,
    client: RedisClient,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..state.shards)
        .map(|shard| {
            tokio::spawn(shard_loop(
                state.clone(),
                client.clone(),
                shard,
                shutdown.clone(),
            ))
        })
        .collect()
}
