//! Campaign expansion: the frozen snapshot into Redis, then every active, unsuppressed
//! subscriber of the list into the shard streams, in keyset pages.
//!
//! Freezing puts tracking into the HTML body of a campaign that has it on
//! ([`crate::tracking`]) and stores its click targets; expansion rewrites the same body to name
//! the same fields, and gives each job its `tracking_url`.
//!
//! Resumable without duplicates: pages go through `queue-schema`'s `enqueue` script, which
//! skips any job at or below the campaign's per-shard high mark, so a page replayed after a
//! crash (the cursor in PostgreSQL is written after the page) enqueues nothing twice. Pausable:
//! the campaign's status is read before every page.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hikyaku_queue_schema::keys::SNAPSHOT_FIELD;
use hikyaku_queue_schema::{scripts, shard_for_domain, CampaignSnapshot, Job, JobId, Keys};
use sqlx::FromRow;

use crate::error::ApiError;
use crate::routes::campaigns::Campaign;
use crate::state::AppState;
use crate::tokens::{self, Purpose, NO_SUBSCRIBER};
use crate::tracking::{self, TRACKING_URL};

/// Subscribers read per page.
const PAGE: i64 = 10_000;

/// One page of a list's recipients after the cursor, with the merge attributes the campaign
/// uses and whether the address is excluded (inactive or suppressed for the tenant).
/// Parameters: list, cursor, tenant, page size, attribute names. Served in order by the
/// `subscribers (list_id, id)` index — no sort, whatever the list's size.
pub const PAGE_QUERY: &str = "SELECT s.id, s.email, \
       COALESCE((SELECT jsonb_object_agg(k, s.attributes -> k) FROM unnest($5::text[]) AS k \
                 WHERE s.attributes ? k), '{}'::jsonb) AS attributes, \
       (s.status <> 'active' OR EXISTS (SELECT 1 FROM suppressions x \
          WHERE x.tenant_id = $3 AND x.email_lower = s.email_lower)) AS excluded \
     FROM subscribers s WHERE s.list_id = $1 AND s.id > $2 ORDER BY s.id LIMIT $4";

/// The merge fields a campaign uses: every `{{name}}` in its subject and bodies.
pub fn field_names(texts: &[&str]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for t in texts {
        let mut rest = *t;
        while let Some(start) = rest.find("{{") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find("}}") else { break };
            let name = &rest[..end];
            if !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                names.insert(name.to_owned());
            }
            rest = &rest[end + 2..];
        }
    }
    names.into_iter().collect()
}

/// The fields jobs of a campaign carry, in order: every `{{name}}` of its texts (the HTML body
/// as frozen, so `tracking_url` when tracking put it there), plus the computed ones its headers
/// need (`unsubscribe_url`, and `unsubscribe_token` when a mailto unsubscribe address is
/// offered).
pub fn campaign_fields(state: &AppState, texts: &[&str]) -> Vec<String> {
    let mut names = field_names(texts);
    let mut computed = vec![UNSUBSCRIBE_URL];
    if state.unsubscribe_mailbox.is_some() {
        computed.push(UNSUBSCRIBE_TOKEN);
    }
    for n in computed {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_owned());
        }
    }
    names
}

/// Name of the Feedback-ID sender field (5–15 characters, as Gmail's feedback loop asks).
pub const FEEDBACK_SENDER_ID: &str = "hikyaku";

/// The bulk-sender headers of every message: RFC 8058 one-click unsubscribe (HTTPS URL with
/// the recipient's signed token, plus a mailto when configured) and Gmail's
/// `Feedback-ID: campaign:tenant:type:sender`.
pub fn bulk_headers(state: &AppState, campaign: i64, tenant: i64) -> Vec<String> {
    let unsubscribe = match &state.unsubscribe_mailbox {
        Some(m) => format!(
            "List-Unsubscribe: <{{{{{UNSUBSCRIBE_URL}}}}}>, <mailto:{m}?subject=unsubscribe%20{{{{{UNSUBSCRIBE_TOKEN}}}}}>"
        ),
        None => format!("List-Unsubscribe: <{{{{{UNSUBSCRIBE_URL}}}}}>"),
    };
    vec![
        unsubscribe,
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click".to_owned(),
        format!("Feedback-ID: {campaign}:{tenant}:newsletter:{FEEDBACK_SENDER_ID}"),
    ]
}

/// The snapshot of `c` under id `id` (the campaign's, or a test send's), whose HTML body as
/// frozen is `html`. Its job-id key is derived from the token secret for that id.
fn snapshot(state: &AppState, id: u64, c: &Campaign, html: String) -> CampaignSnapshot {
    let domain = c.from_addr.rsplit_once('@').map_or("localhost", |(_, d)| d);
    CampaignSnapshot {
        id,
        tenant: c.tenant_id.to_string(),
        from_name: c.from_name.clone(),
        from_addr: c.from_addr.clone(),
        reply_to: c.reply_to.clone(),
        subject: c.subject.clone(),
        text_body: c.text_body.clone(),
        field_names: campaign_fields(state, &[&c.subject, &c.text_body, &html]),
        html_body: html,
        return_path: c.from_addr.clone(),
        message_id_domain: domain.to_owned(),
        headers: bulk_headers(state, c.id, c.tenant_id),
        verp_domain: state.bounce_domain.clone().unwrap_or_default(),
        mobile_charset: c.mobile_charset.clone().unwrap_or_default(),
        id_key: hikyaku_queue_schema::ids::campaign_key(&state.token_secret, id),
    }
}

use hikyaku_queue_schema::keys::{TEST_ID_BASE, TEST_LEFT_FIELD};

/// How long a test message may take to be delivered before it expires.
const TEST_EXPIRY: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long a test send's snapshot stays after its last job ended (for a straggler of another
/// engine), and at most past [`TEST_EXPIRY`] if the end is never seen.
pub const TEST_SNAPSHOT_LINGER: std::time::Duration = std::time::Duration::from_secs(600);

/// Test-send recipients taken from a tenant's hourly allowance ([`take_test_allowance`]).
#[derive(Debug)]
#[must_use = "give the allowance back when the test send fails"]
pub struct TestAllowance {
    /// The hour's counter (`None`: unlimited, nothing taken).
    key: Option<String>,
    n: u64,
}

impl TestAllowance {
    /// Gives the recipients back: the test send they were taken for did not go out.
    pub async fn give_back(self, state: &AppState) {
        let Some(key) = self.key else { return };
        let mut con = state.redis.clone();
        let given: redis::RedisResult<()> = redis::cmd("DECRBY")
            .arg(&key)
            .arg(self.n)
            .query_async(&mut con)
            .await;
        if let Err(e) = given {
            tracing::warn!(error = %e, "giving back a failed test send's allowance failed");
        }
    }
}

/// Takes `n` test-send recipients from the tenant's allowance for this clock hour
/// ([`AppState::test_sends_per_hour`]), or refuses with 429 and the seconds until the next
/// hour. Counted in Redis, so every API process shares it.
pub async fn take_test_allowance(
    state: &AppState,
    tenant: i64,
    n: u64,
) -> Result<TestAllowance, ApiError> {
    let limit = u64::from(state.test_sends_per_hour);
    if limit == 0 {
        return Ok(TestAllowance { key: None, n });
    }
    let now_s = chrono::Utc::now().timestamp().max(0) as u64;
    let hour = now_s / 3600;
    let key = Keys::test_sends(tenant, hour);
    let mut con = state.redis.clone();
    let (used,): (u64,) = redis::pipe()
        .cmd("INCRBY")
        .arg(&key)
        .arg(n)
        .cmd("EXPIRE")
        .arg(&key)
        .arg(7200)
        .ignore()
        .query_async(&mut con)
        .await?;
    let taken = TestAllowance { key: Some(key), n };
    if used <= limit {
        return Ok(taken);
    }
    taken.give_back(state).await;
    Err(ApiError::TooManyRequests((hour + 1) * 3600 - now_s))
}

/// Sends the campaign as it is now to `recipients`, under a fresh test id (above
/// [`TEST_ID_BASE`]). Test messages expire after [`TEST_EXPIRY`]; the snapshot goes
/// [`TEST_SNAPSHOT_LINGER`] after the last of them ended (the recorder counts them down), or
/// that long after their expiry. Merge fields get the recipient's address for `email` and are
/// empty otherwise.
///
/// Computed fields carry tokens of the real campaign and [`NO_SUBSCRIBER`]: the unsubscribe
/// link unsubscribes nobody, and tracking links work (the pixel loads, clicks redirect, to
/// targets stored under the real campaign id as a freeze stores them) but record nothing.
/// Editing the draft and test-sending or sending again stores the new body's targets, so a
/// link of an older test message may lead where the edited body's link at its position does.
pub async fn test_send(
    state: &AppState,
    c: &Campaign,
    recipients: &[String],
) -> Result<crate::routes::campaigns::TestSent, ApiError> {
    let mut con = state.redis.clone();
    let n: u64 = redis::cmd("HINCRBY")
        .arg(Keys::meta())
        .arg("test_sends")
        .arg(1)
        .query_async(&mut con)
        .await?;
    let test_id = TEST_ID_BASE + n;
    // Read again under a share lock: a campaign sent meanwhile has its links stored by `send`,
    // and those must not be overwritten with this (possibly older) body's.
    let mut tx = state.db.begin().await?;
    let c: Campaign = sqlx::query_as(&format!(
        "SELECT {} FROM campaigns WHERE id = $1 FOR SHARE",
        crate::routes::campaigns::COLUMNS
    ))
    .bind(c.id)
    .fetch_one(&mut *tx)
    .await?;
    let c = &c;
    let tracked = frozen_html(c);
    if (c.track_opens || c.track_clicks) && c.status == "draft" {
        store_links(&mut *tx, c.id, &tracked.links).await?;
    }
    crate::quota::count(&mut *tx, c.tenant_id, recipients.len() as i64).await?;
    tx.commit().await?;
    let snap = snapshot(state, test_id, c, tracked.html);
    let key = Keys::campaign(test_id);
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&key)
        .arg(SNAPSHOT_FIELD)
        .arg(snap.encode())
        .arg(TEST_LEFT_FIELD)
        .arg(recipients.len())
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg((TEST_EXPIRY + TEST_SNAPSHOT_LINGER).as_secs())
        .ignore()
        .query_async(&mut con)
        .await?;
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let mut by_shard: BTreeMap<u16, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    let computed = Computed::new(
        state,
        tokens::Recipient {
            tenant: c.tenant_id,
            campaign: c.id,
            subscriber: NO_SUBSCRIBER,
        },
        tracks(c.track_opens, c.track_clicks, &snap.field_names),
    );
    for (i, rcpt) in recipients.iter().enumerate() {
        let job = Job {
            id: JobId {
                campaign: test_id,
                seq: i as u64,
            },
            attempt: 0,
            queued_ms: now_ms,
            expires_ms: now_ms + TEST_EXPIRY.as_millis() as u64,
            priority: 9,
            rcpt: rcpt.clone(),
            last: None,
            fields: snap
                .field_names
                .iter()
                .map(|n| match n.as_str() {
                    "email" => rcpt.clone(),
                    name => computed.field(name).unwrap_or_default(),
                })
                .collect(),
        };
        by_shard
            .entry(shard_for_domain(job.domain(), state.shards))
            .or_default()
            .push((i as u64, job.encode()));
    }
    let mut enqueued = 0;
    for (shard, jobs) in &by_shard {
        enqueued += scripts::enqueue(&mut con, *shard, test_id, jobs).await?;
    }
    Ok(crate::routes::campaigns::TestSent { test_id, enqueued })
}

/// Writes the campaign's frozen snapshot to Redis, after its click targets to `db` (idempotent).
/// `db` is the caller's transaction where it holds the campaign's row locked: the targets
/// reference that row.
pub async fn freeze<'c>(
    state: &AppState,
    db: impl sqlx::PgExecutor<'c>,
    c: &Campaign,
) -> Result<(), ApiError> {
    let tracked = frozen_html(c);
    if c.track_opens || c.track_clicks {
        store_links(db, c.id, &tracked.links).await?;
    }
    let mut con = state.redis.clone();
    let _: () = redis::cmd("HSET")
        .arg(Keys::campaign(c.id as u64))
        .arg(SNAPSHOT_FIELD)
        .arg(snapshot(state, c.id as u64, c, tracked.html).encode())
        .query_async(&mut con)
        .await?;
    Ok(())
}

/// `c`'s HTML body as frozen: with tracking put in when the campaign has it on.
fn frozen_html(c: &Campaign) -> tracking::Tracked {
    tracking::rewrite(&c.html_body, c.track_clicks, c.track_opens)
}

/// Stores a frozen body's click targets by position, in one statement. A position an earlier
/// freeze (a test send of the draft before an edit) gave another URL gets this body's, and
/// positions beyond this body's links go, so a redirect only ever leads to a link of the body
/// frozen last. Freezing the same body again changes nothing; once a campaign sends, its body
/// cannot change.
async fn store_links<'c>(
    db: impl sqlx::PgExecutor<'c>,
    campaign: i64,
    links: &[String],
) -> Result<(), ApiError> {
    sqlx::query(
        "WITH gone AS (DELETE FROM campaign_links WHERE campaign_id = $1 AND n >= cardinality($2::text[])) \
         INSERT INTO campaign_links (campaign_id, n, url) \
         SELECT $1, (t.o - 1)::int, t.url FROM unnest($2::text[]) WITH ORDINALITY AS t(url, o) \
         ON CONFLICT (campaign_id, n) DO UPDATE SET url = EXCLUDED.url WHERE campaign_links.url <> EXCLUDED.url",
    )
    .bind(campaign)
    .bind(links)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct Expanding {
    id: i64,
    tenant_id: i64,
    list_id: i64,
    subject: String,
    text_body: String,
    html_body: String,
    track_opens: bool,
    track_clicks: bool,
    priority: i16,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    expansion_cursor: i64,
}

#[derive(FromRow)]
struct Recipient {
    id: i64,
    email: String,
    attributes: serde_json::Value,
    excluded: bool,
}

/// Merge fields the expander computes rather than reads from attributes (with
/// [`TRACKING_URL`], for a campaign that tracks).
pub const UNSUBSCRIBE_URL: &str = "unsubscribe_url";
/// The recipient's unsubscribe token alone (for the mailto link).
pub const UNSUBSCRIBE_TOKEN: &str = "unsubscribe_token";

/// Whether jobs of a campaign get a computed `tracking_url`: only when it tracks and its frozen
/// body uses the field, so other campaigns sign no second token per recipient.
fn tracks(opens: bool, clicks: bool, names: &[String]) -> bool {
    (opens || clicks) && names.iter().any(|n| n == TRACKING_URL)
}

/// One recipient's computed fields: its signed tokens, as the fields carry them.
struct Computed<'a> {
    state: &'a AppState,
    unsubscribe: String,
    /// `{public_url}/t/{token}`, for a campaign that [`tracks`].
    tracking_url: Option<String>,
}

impl<'a> Computed<'a> {
    fn new(state: &'a AppState, r: tokens::Recipient, tracks: bool) -> Self {
        let secret = &state.token_secret;
        Computed {
            state,
            unsubscribe: tokens::sign(secret, Purpose::Unsubscribe, r),
            tracking_url: tracks.then(|| {
                let token = tokens::sign(secret, Purpose::Track, r);
                format!("{}/t/{token}", state.public_url)
            }),
        }
    }

    /// The value of computed field `name`, or `None` for a field read from attributes.
    fn field(&self, name: &str) -> Option<String> {
        match name {
            UNSUBSCRIBE_URL => Some(format!("{}/u/{}", self.state.public_url, self.unsubscribe)),
            UNSUBSCRIBE_TOKEN => Some(self.unsubscribe.clone()),
            TRACKING_URL => self.tracking_url.clone(),
            _ => None,
        }
    }
}

fn value_of(attrs: &serde_json::Value, name: &str, email: &str) -> String {
    if name == "email" {
        return email.to_owned();
    }
    match attrs.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Expands one campaign to the end (or until it leaves `sending`).
pub async fn expand(state: &AppState, campaign: i64) -> Result<(), ApiError> {
    let Some(c) = sqlx::query_as::<_, Expanding>(
        "SELECT id, tenant_id, list_id, subject, text_body, html_body, track_opens, track_clicks, \
         priority, expires_at, expansion_cursor FROM campaigns WHERE id = $1 AND status = 'sending' AND NOT expansion_done",
    )
    .bind(campaign)
    .fetch_optional(&state.db)
    .await?
    else {
        return Ok(());
    };
    // The body as frozen, for the same field names as the snapshot (its links need not be
    // stored again: the freeze did that).
    let html = tracking::rewrite(&c.html_body, c.track_clicks, c.track_opens).html;
    let names = campaign_fields(state, &[&c.subject, &c.text_body, &html]);
    let tracks = tracks(c.track_opens, c.track_clicks, &names);
    let expires_ms = c
        .expires_at
        .map_or(0, |t| t.timestamp_millis().max(1) as u64);
    let mut cursor = c.expansion_cursor;
    let mut con = state.redis.clone();
    loop {
        let (status,): (String,) = sqlx::query_as("SELECT status FROM campaigns WHERE id = $1")
            .bind(c.id)
            .fetch_one(&state.db)
            .await?;
        if status != "sending" {
            tracing::info!(campaign = c.id, %status, "expansion stops: campaign left sending");
            return Ok(());
        }
        let rows = sqlx::query_as::<_, Recipient>(PAGE_QUERY)
            .bind(c.list_id)
            .bind(cursor)
            .bind(c.tenant_id)
            .bind(PAGE)
            .bind(&names)
            .fetch_all(&state.db)
            .await?;
        let Some(last) = rows.last().map(|r| r.id) else {
            sqlx::query(
                "UPDATE campaigns SET expansion_done = true, updated_at = now() WHERE id = $1",
            )
            .bind(c.id)
            .execute(&state.db)
            .await?;
            crate::recorder::maybe_complete(state, c.id).await?;
            tracing::info!(campaign = c.id, "expansion done");
            return Ok(());
        };
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let mut by_shard: BTreeMap<u16, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        let mut skipped = 0i64;
        for r in &rows {
            if r.excluded {
                skipped += 1;
                continue;
            }
            let job = Job {
                id: JobId {
                    campaign: c.id as u64,
                    seq: r.id as u64,
                },
                attempt: 0,
                queued_ms: now_ms,
                expires_ms,
                priority: c.priority.clamp(0, 9) as u8,
                rcpt: r.email.clone(),
                last: None,
                fields: {
                    let recipient = tokens::Recipient {
                        tenant: c.tenant_id,
                        campaign: c.id,
                        subscriber: r.id,
                    };
                    let computed = Computed::new(state, recipient, tracks);
                    names
                        .iter()
                        .map(|n| {
                            computed
                                .field(n)
                                .unwrap_or_else(|| value_of(&r.attributes, n, &r.email))
                        })
                        .collect()
                },
            };
            let shard = shard_for_domain(job.domain(), state.shards);
            by_shard
                .entry(shard)
                .or_default()
                .push((r.id as u64, job.encode()));
        }
        // Count the page's eligible rows, not what the script added: a page replayed after a
        // crash (enqueued, but its cursor update lost) adds nothing to Redis yet was never
        // counted here.
        let eligible: usize = by_shard.values().map(Vec::len).sum();
        // The quota is the wall here: a page that does not fit is not enqueued.
        let fits = crate::quota::usage(&state.db, c.tenant_id)
            .await?
            .is_none_or(|u| u.fits(eligible as i64));
        if !fits {
            sqlx::query(
                "UPDATE campaigns SET status = 'paused', updated_at = now() WHERE id = $1 AND status = 'sending'",
            )
            .bind(c.id)
            .execute(&state.db)
            .await?;
            tracing::warn!(
                campaign = c.id,
                tenant = c.tenant_id,
                "expansion paused: the tenant's monthly sending quota is used up"
            );
            crate::metrics::quota_paused();
            return Ok(());
        }
        for (shard, jobs) in &by_shard {
            scripts::enqueue(&mut con, *shard, c.id as u64, jobs).await?;
        }
        // Only from the cursor this page started at: if another expander (another API process)
        // moved it meanwhile, it counted this page; stop here and leave the campaign to it.
        let mut tx = state.db.begin().await?;
        let moved = sqlx::query(
            "UPDATE campaigns SET expansion_cursor = $2, expanded = expanded + $3, skipped = skipped + $4, \
             updated_at = now() WHERE id = $1 AND expansion_cursor = $5",
        )
        .bind(c.id)
        .bind(last)
        .bind(eligible as i64)
        .bind(skipped)
        .bind(cursor)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tracing::info!(campaign = c.id, "another expander took this campaign over");
            return Ok(());
        }
        crate::quota::count(&mut *tx, c.tenant_id, eligible as i64).await?;
        tx.commit().await?;
        crate::metrics::expanded(eligible as u64, skipped as u64);
        cursor = last;
    }
}

/// Starts scheduled campaigns whose time has come: freeze, then `sending`.
async fn start_due(state: &AppState) -> Result<(), ApiError> {
    let due: Vec<Campaign> = sqlx::query_as(&format!(
        "SELECT {} FROM campaigns WHERE status = 'scheduled' AND send_at <= now()",
        crate::routes::campaigns::COLUMNS
    ))
    .fetch_all(&state.db)
    .await?;
    for c in due {
        freeze(state, &state.db, &c).await?;
        sqlx::query("UPDATE campaigns SET status = 'sending', sent_at = COALESCE(sent_at, now()), updated_at = now() WHERE id = $1 AND status = 'scheduled'")
            .bind(c.id)
            .execute(&state.db)
            .await?;
        tracing::info!(campaign = c.id, "scheduled campaign started");
    }
    Ok(())
}

/// Runs until `shutdown`: starts due scheduled campaigns and expands every campaign in `sending` that is not done, then waits for
/// a notification (a new send) or a second.
pub async fn run(state: AppState, shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut shutdown = shutdown;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = start_due(&state).await {
            tracing::warn!(error = %e, "starting scheduled campaigns failed");
        }
        // Completion is also checked here, not only when events arrive: a campaign whose last
        // events landed while it was paused, or whose check failed once, still completes.
        if let Err(e) = crate::recorder::complete_all(&state).await {
            tracing::warn!(error = %e, "completing campaigns failed");
        }
        let pending: Result<Vec<(i64,)>, sqlx::Error> = sqlx::query_as(
            "SELECT id FROM campaigns WHERE status = 'sending' AND NOT expansion_done ORDER BY priority DESC, id",
        )
        .fetch_all(&state.db)
        .await;
        match pending {
            Ok(ids) => {
                crate::metrics::campaigns_expanding(ids.len());
                for (id,) in ids {
                    if let Err(e) = expand(&state, id).await {
                        tracing::warn!(campaign = id, error = %e, "expansion interrupted; will resume");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing campaigns to expand failed"),
        }
        tokio::select! {
            _ = state.expander.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::field_names;

    #[test]
    fn merge_fields_are_found_once_each() {
        assert_eq!(
            field_names(&[
                "Hi {{first_name}}",
                "{{plan}} and {{first_name}} {{bad name}} {{ x }} {{",
                "{{email}}"
            ]),
            ["email", "first_name", "plan"]
        );
    }
}
