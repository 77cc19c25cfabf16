//! Queue control: depths per shard, requeue of deferred jobs, drain orders, and a look at
//! sample jobs with their last error.
//!
//! Deferred jobs carry the site they were routed to and their last error
//! ([`hikyaku_queue_schema::LastTry`]), so the retry sets can be filtered by site without DNS.
//! Requeue only moves due times (`ZADD XX`: a job the mover took meanwhile is not re-added);
//! a drain is an order engines carry out ([`hikyaku_queue_schema::drain`]), so a job is still
//! finished in exactly one place, by the one script that finishes jobs.

use std::collections::BTreeMap;

use hikyaku_queue_schema::drain::{Rule, Scope};
use hikyaku_queue_schema::keys::{ENGINE_GROUP, JOB_FIELD};
use hikyaku_queue_schema::{EventStatus, Job, Keys};

use super::{progress, AdminError, Ctx};

/// Members read per `ZSCAN` call.
const SCAN_COUNT: usize = 1_000;

/// Now, ms since the epoch.
fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// Which jobs a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Jobs last routed to this site.
    pub site: Option<String>,
    /// Jobs of this campaign.
    pub campaign: Option<u64>,
}

impl Filter {
    fn matches(&self, job: &Job) -> bool {
        self.campaign.is_none_or(|c| job.id.campaign == c)
            && self
                .site
                .as_deref()
                .is_none_or(|s| job.last.as_ref().is_some_and(|l| l.site == s))
    }

    fn is_empty(&self) -> bool {
        self.site.is_none() && self.campaign.is_none()
    }
}

/// One shard's depths.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardStats {
    /// Shard.
    pub shard: u16,
    /// Entries in the ready stream (pending ones included).
    pub ready: u64,
    /// Entries delivered to an engine and not yet finished.
    pub pending: u64,
    /// Jobs in the retry set.
    pub retry: u64,
    /// Of those, due now.
    pub retry_due: u64,
    /// Jobs of paused campaigns parked on the shard (back when the campaign is resumed or
    /// cancelled).
    pub parked: u64,
    /// Age of the oldest ready entry, seconds.
    pub oldest_age_s: f64,
    /// Events not yet recorded.
    pub events: u64,
}

/// `queue stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStats {
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// Retry-set jobs by the site they were last routed to (with `--by-site`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_by_site: Option<BTreeMap<String, u64>>,
    /// Of those, jobs held back by the site (paused, suspended, full: put back without an
    /// attempt, never deferred by a reply there), by site (with `--by-site`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_held_by_site: Option<BTreeMap<String, u64>>,
    /// Age of the oldest retry-set job by site, seconds since its first enqueue (with
    /// `--by-site`): what the ready streams' `oldest_age_s` cannot show of held mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_oldest_age_s_by_site: Option<BTreeMap<String, f64>>,
}

/// Depths of every shard, and optionally the retry sets counted by site.
pub async fn stats(ctx: &Ctx, by_site: bool) -> Result<QueueStats, AdminError> {
    let mut con = ctx.redis().await?;
    let shards = ctx.shards().await?;
    let now = now_ms();
    let mut pipe = redis::pipe();
    for s in 0..shards {
        pipe.xlen(Keys::ready(s))
            .zcard(Keys::retry(s))
            .zcount(Keys::retry(s), "-inf", now)
            .xlen(Keys::events(s));
        pipe.cmd("XRANGE")
            .arg(Keys::ready(s))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut con).await?;
    let mut it = replies.into_iter();
    let mut next = || it.next().unwrap_or(redis::Value::Nil);
    let mut out = Vec::new();
    for shard in 0..shards {
        let ready: u64 = redis::from_redis_value(next()).unwrap_or(0);
        let retry: u64 = redis::from_redis_value(next()).unwrap_or(0);
        let retry_due: u64 = redis::from_redis_value(next()).unwrap_or(0);
        let events: u64 = redis::from_redis_value(next()).unwrap_or(0);
        let head: Vec<(String, redis::Value)> = redis::from_redis_value(next()).unwrap_or_default();
        let oldest_age_s = head
            .first()
            .and_then(|(id, _)| hikyaku_queue_schema::keys::stream_id_ms(id))
            .map_or(0.0, |ms| now.saturating_sub(ms) as f64 / 1000.0);
        // XPENDING summary: [count, min, max, consumers]; an error (so asked on its own)
        // while no engine has created the group yet.
        let pending: u64 = redis::cmd("XPENDING")
            .arg(Keys::ready(shard))
            .arg(ENGINE_GROUP)
            .query_async::<redis::Value>(&mut con)
            .await
            .ok()
            .and_then(|v| match v {
                redis::Value::Array(v) => v.into_iter().next(),
                _ => None,
            })
            .and_then(|c| redis::from_redis_value::<u64>(c).ok())
            .unwrap_or(0);
        let mut parked = 0;
        for c in hikyaku_queue_schema::scripts::parked_campaigns(&mut con, shard).await? {
            let n: u64 = redis::cmd("LLEN")
                .arg(Keys::parked_jobs(shard, c))
                .query_async(&mut con)
                .await?;
            parked += n;
        }
        out.push(ShardStats {
            shard,
            ready,
            pending,
            retry,
            retry_due,
            parked,
            oldest_age_s,
            events,
        });
    }
    let (mut retry_by_site, mut held, mut oldest) = (None, None, None);
    if by_site {
        let total = out.iter().map(|s| s.retry).sum();
        let pb = progress::bar(Some(total), "retry sets");
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut held_counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut first: BTreeMap<String, u64> = BTreeMap::new();
        for shard in 0..shards {
            scan_retry(ctx, shard, |_, job| {
                pb.inc(1);
                // A job put back without an attempt carries its site and no error.
                let (site, is_held) = job.last.as_ref().map_or(("(never routed)", true), |l| {
                    (l.site.as_str(), l.error.is_empty())
                });
                *counts.entry(site.to_owned()).or_insert(0) += 1;
                *held_counts.entry(site.to_owned()).or_insert(0) += u64::from(is_held);
                let q = first.entry(site.to_owned()).or_insert(job.queued_ms);
                *q = (*q).min(job.queued_ms);
            })
            .await?;
        }
        pb.finish_and_clear();
        retry_by_site = Some(counts);
        held = Some(held_counts);
        oldest = Some(
            first
                .into_iter()
                .map(|(site, q)| (site, now.saturating_sub(q) as f64 / 1000.0))
                .collect(),
        );
    }
    Ok(QueueStats {
        shards: out,
        retry_by_site,
        retry_held_by_site: held,
        retry_oldest_age_s_by_site: oldest,
    })
}

/// Calls `f` with every member of a shard's retry set (raw bytes and decoded job; members that
/// do not decode are skipped: engines end those themselves when they come due).
async fn scan_retry(
    ctx: &Ctx,
    shard: u16,
    mut f: impl FnMut(&[u8], &Job),
) -> Result<(), AdminError> {
    let mut con = ctx.redis().await?;
    let key = Keys::retry(shard);
    let mut cursor: u64 = 0;
    loop {
        let (next, items): (u64, Vec<(Vec<u8>, f64)>) = redis::cmd("ZSCAN")
            .arg(&key)
            .arg(cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut con)
            .await?;
        for (member, _) in &items {
            if let Ok(job) = Job::decode(member) {
                f(member, &job);
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Makes the matching deferred jobs due now (the retry mover returns them within its
/// interval). Needs a filter unless `all`. Returns how many were requeued.
pub async fn requeue(ctx: &Ctx, filter: &Filter, all: bool) -> Result<u64, AdminError> {
    if filter.is_empty() && !all {
        return Err(AdminError::Invalid(
            "say which jobs: --site, --campaign, or --all".into(),
        ));
    }
    let mut con = ctx.redis().await?;
    let shards = ctx.shards().await?;
    let total: u64 = {
        let mut pipe = redis::pipe();
        for s in 0..shards {
            pipe.zcard(Keys::retry(s));
        }
        let n: Vec<u64> = pipe.query_async(&mut con).await?;
        n.into_iter().sum()
    };
    let pb = progress::bar(Some(total), "requeue");
    let mut moved = 0u64;
    for shard in 0..shards {
        let mut picked: Vec<Vec<u8>> = Vec::new();
        scan_retry(ctx, shard, |member, job| {
            pb.inc(1);
            if filter.matches(job) {
                picked.push(member.to_vec());
            }
        })
        .await?;
        // ZSCAN may return a member twice; ZADD of the same member twice is harmless.
        for chunk in picked.chunks(SCAN_COUNT) {
            let now = now_ms();
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(Keys::retry(shard)).arg("XX").arg("CH");
            for m in chunk {
                cmd.arg(now).arg(&m[..]);
            }
            let n: u64 = cmd.query_async(&mut con).await?;
            moved += n;
        }
    }
    pb.finish_and_clear();
    Ok(moved)
}

/// What `queue drain` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drained {
    /// The order's field in `hk:drain`.
    pub order: String,
    /// `bounced` or `cancelled`.
    pub status: String,
    /// Deferred jobs made due now so engines end them at once.
    pub requeued: u64,
}

/// Orders every engine to end the queued jobs of a site or campaign (those enqueued until now)
/// unsent, as `status` (bounced or cancelled) with `reason`; deferred ones are made due now.
pub async fn drain(
    ctx: &Ctx,
    scope: Scope,
    status: EventStatus,
    reason: &str,
) -> Result<Drained, AdminError> {
    if !matches!(status, EventStatus::Bounced | EventStatus::Cancelled) {
        return Err(AdminError::Invalid(
            "--as must be bounced or cancelled".into(),
        ));
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 200 || reason.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "--reason must be 1-200 printable characters".into(),
        ));
    }
    match &scope {
        Scope::Site(s) => super::sites::check_known(ctx, s).await?,
        Scope::Campaign(c) => {
            let mut con = ctx.redis().await?;
            let exists: bool = redis::cmd("EXISTS")
                .arg(Keys::campaign(*c))
                .query_async(&mut con)
                .await?;
            if !exists {
                return Err(AdminError::NotFound(format!("campaign {c} in the queues")));
            }
        }
    }
    let rule = Rule {
        status,
        before_ms: now_ms(),
        reason: reason.to_owned(),
    };
    let mut con = ctx.redis().await?;
    let _: () = redis::cmd("HSET")
        .arg(Keys::drains())
        .arg(scope.field())
        .arg(rule.encode())
        .query_async(&mut con)
        .await?;
    // Deferred jobs come back only once every engine holds the order, or they would be sent.
    super::sites::await_engines(ctx).await?;
    let filter = match &scope {
        Scope::Site(s) => Filter {
            site: Some(s.clone()),
            campaign: None,
        },
        Scope::Campaign(c) => Filter {
            site: None,
            campaign: Some(*c),
        },
    };
    let requeued = requeue(ctx, &filter, false).await?;
    Ok(Drained {
        order: scope.field(),
        status: status.as_str().into(),
        requeued,
    })
}

/// Withdraws a drain order; returns whether there was one.
pub async fn clear_drain(ctx: &Ctx, scope: &Scope) -> Result<bool, AdminError> {
    let mut con = ctx.redis().await?;
    let n: u64 = redis::cmd("HDEL")
        .arg(Keys::drains())
        .arg(scope.field())
        .query_async(&mut con)
        .await?;
    Ok(n > 0)
}

/// The drain orders in force: field → (status, reason, given at ms).
pub async fn drains(ctx: &Ctx) -> Result<Vec<(String, Rule)>, AdminError> {
    let mut con = ctx.redis().await?;
    let raw: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(Keys::drains())
        .query_async(&mut con)
        .await?;
    Ok(raw
        .into_iter()
        .filter_map(|(f, v)| Some((f, Rule::parse(&v)?)))
        .collect())
}

/// One job as `queue inspect` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobView {
    /// `ready` or `retry`.
    pub place: &'static str,
    /// Shard.
    pub shard: u16,
    /// `campaign.seq`.
    pub id: String,
    /// Recipient.
    pub rcpt: String,
    /// Attempts made.
    pub attempt: u32,
    /// Seconds since first enqueue.
    pub age_s: f64,
    /// Seconds until due (retry set only; negative: overdue).
    pub due_in_s: Option<f64>,
    /// Site last routed to.
    pub site: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
}

/// Up to `limit` matching jobs: first from the retry sets (soonest due first), then from the
/// heads of the ready streams.
pub async fn inspect(ctx: &Ctx, filter: &Filter, limit: usize) -> Result<Vec<JobView>, AdminError> {
    let limit = limit.clamp(1, 10_000);
    let mut con = ctx.redis().await?;
    let shards = ctx.shards().await?;
    let now = now_ms();
    let view = |place, shard, job: &Job, due: Option<f64>| JobView {
        place,
        shard,
        id: job.id.to_string(),
        rcpt: job.rcpt.clone(),
        attempt: job.attempt,
        age_s: now.saturating_sub(job.queued_ms) as f64 / 1000.0,
        due_in_s: due.map(|d| (d - now as f64) / 1000.0),
        site: job.last.as_ref().map(|l| l.site.clone()),
        last_error: job
            .last
            .as_ref()
            .map(|l| l.error.clone())
            .filter(|e| !e.is_empty()),
    };
    let mut out = Vec::new();
    for shard in 0..shards {
        let items: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
            .arg(Keys::retry(shard))
            .arg(0)
            .arg(4 * limit)
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await?;
        for (member, due) in items {
            if out.len() >= limit {
                return Ok(out);
            }
            if let Ok(job) = Job::decode(&member) {
                if filter.matches(&job) {
                    out.push(view("retry", shard, &job, Some(due)));
                }
            }
        }
    }
    for shard in 0..shards {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(Keys::ready(shard))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(4 * limit)
            .query_async(&mut con)
            .await?;
        for e in entries.ids {
            if out.len() >= limit {
                return Ok(out);
            }
            let Some(bytes) = e.get::<Vec<u8>>(JOB_FIELD) else {
                continue;
            };
            if let Ok(job) = Job::decode(&bytes) {
                if filter.matches(&job) {
                    out.push(view("ready", shard, &job, None));
                }
            }
        }
    }
    Ok(out)
}
