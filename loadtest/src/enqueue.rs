//! Writing a campaign snapshot and jobs straight into Redis through `hikyaku-queue-schema`.
//!
//! This is the benchmark's and the tests' path into the queue (the API's expansion replaces it
//! for customers). Jobs are pipelined per shard in batches, so a million jobs take seconds.

use std::collections::HashMap;

use hikyaku_queue_schema::keys::{JOB_FIELD, SNAPSHOT_FIELD};
use hikyaku_queue_schema::Redis;
use hikyaku_queue_schema::{shard_for_domain, CampaignSnapshot, Job, JobId, Keys};

/// Jobs per pipelined round trip.
const BATCH: usize = 2000;

/// Why enqueuing failed.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The `--domains` list is malformed.
    #[error("bad domain list {0:?}: expected name:weight,name:weight (weights ≥ 1)")]
    BadDomains(String),
}

/// Parses `gmail.test:40,yahoo.test:20,…` (a missing weight means 1).
pub fn parse_domains(s: &str) -> Result<Vec<(String, u32)>, EnqueueError> {
    let bad = || EnqueueError::BadDomains(s.to_owned());
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.split_once(':') {
            Some((n, w)) => (n.trim(), w.trim().parse::<u32>().map_err(|_| bad())?),
            None => (part, 1),
        };
        if name.is_empty() || weight == 0 || name.contains(char::is_whitespace) {
            return Err(bad());
        }
        out.push((name.to_ascii_lowercase(), weight));
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// The shard count recorded in Redis, or `default` (recorded then) if none is.
pub async fn shards(con: &mut Redis, default: u16) -> Result<u16, EnqueueError> {
    Ok(hikyaku_queue_schema::meta::record_or_read(con, default)
        .await?
        .shards)
}

/// Writes the snapshot of a campaign.
pub async fn write_snapshot(
    con: &mut Redis,
    snapshot: &CampaignSnapshot,
) -> Result<(), EnqueueError> {
    let _: () = redis::cmd("HSET")
        .arg(Keys::campaign(snapshot.id))
        .arg(SNAPSHOT_FIELD)
        .arg(snapshot.encode())
        .query_async(con)
        .await?;
    Ok(())
}

/// Appends jobs to their shards' ready streams; `progress` is called with the running count.
pub async fn write_jobs(
    con: &mut Redis,
    shards: u16,
    jobs: impl IntoIterator<Item = Job>,
    mut progress: impl FnMut(u64),
) -> Result<u64, EnqueueError> {
    let mut keys: HashMap<u16, String> = HashMap::new();
    let mut pipe = redis::pipe();
    let mut in_pipe = 0;
    let mut total = 0u64;
    for job in jobs {
        let shard = shard_for_domain(job.domain(), shards);
        let key = keys.entry(shard).or_insert_with(|| Keys::ready(shard));
        pipe.cmd("XADD")
            .arg(&*key)
            .arg("*")
            .arg(JOB_FIELD)
            .arg(job.encode())
            .ignore();
        in_pipe += 1;
        if in_pipe == BATCH {
            let _: () = pipe.query_async(con).await?;
            pipe = redis::pipe();
            total += in_pipe as u64;
            in_pipe = 0;
            progress(total);
        }
    }
    if in_pipe > 0 {
        let _: () = pipe.query_async(con).await?;
        total += in_pipe as u64;
        progress(total);
    }
    Ok(total)
}

/// The benchmark newsletter body: about `body_bytes` of text (less the unsubscribe line the
/// caller adds) with the `{{first_name}}` and `{{plan}}` merge fields.
pub fn newsletter_text(body_bytes: usize) -> String {
    newsletter(body_bytes, false)
}

/// [`newsletter_text`], in Japanese when `japanese` (UTF-8: 3 bytes a character).
fn newsletter(body_bytes: usize, japanese: bool) -> String {
    let (paragraph, greeting) = if japanese {
        (
            "飛脚週報：江戸と大坂を結んだ飛脚のように、このニュースレターも読者の皆さまへ\
             リレーでお届けします。今週のおすすめ商品とお知らせをご覧ください。\n",
            "{{first_name}}様\n\nご契約プラン：{{plan}}\n\n",
        )
    } else {
        (
            "hikyaku weekly: the express couriers of old Japan ran relay stages between \
             Edo and Osaka; this newsletter runs the same relay for your readers.\n",
            "Dear {{first_name}},\n\nYour plan: {{plan}}.\n\n",
        )
    };
    let mut text = String::from(greeting);
    while text.len() + paragraph.len() < body_bytes.saturating_sub(120) {
        text.push_str(paragraph);
    }
    text
}

/// The domain of recipient `seq` when `domains` share recipients by weight (deterministic, so
/// runs are comparable).
pub fn weighted_domain(domains: &[(String, u32)], seq: u64) -> &str {
    let total: u64 = domains
        .iter()
        .map(|(_, w)| u64::from(*w))
        .sum::<u64>()
        .max(1);
    let mut slot = seq % total;
    for (d, w) in domains {
        if slot < u64::from(*w) {
            return d;
        }
        slot -= u64::from(*w);
    }
    domains.first().map_or("", |(d, _)| d.as_str())
}

/// Domain of the bench campaign's From address (what `--dkim` signs for).
pub const BENCH_FROM_DOMAIN: &str = "hikyaku.test";

/// The benchmark campaign: about `body_bytes` of text with three merge fields and a
/// per-recipient unsubscribe link.
pub fn bench_snapshot(id: u64, body_bytes: usize, japanese: bool) -> CampaignSnapshot {
    let mut text = newsletter(body_bytes, japanese);
    text.push_str("\nUnsubscribe: https://hikyaku.test/u/{{token}}\n");
    CampaignSnapshot {
        id,
        tenant: "bench".into(),
        from_name: "hikyaku bench".into(),
        from_addr: format!("news@{BENCH_FROM_DOMAIN}"),
        reply_to: String::new(),
        subject: "Weekly news for {{first_name}}".into(),
        text_body: text,
        html_body: String::new(),
        field_names: vec!["first_name".into(), "plan".into(), "token".into()],
        return_path: "bounce@hikyaku.test".into(),
        message_id_domain: "hikyaku.test".into(),
        // The bulk-sender headers the API gives every campaign.
        headers: vec![
            "List-Unsubscribe: <https://hikyaku.test/u/{{token}}>".into(),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click".into(),
            format!("Feedback-ID: {id}:bench:newsletter:hikyaku"),
        ],
        verp_domain: "bounces.hikyaku.test".into(),
        mobile_charset: String::new(),
        // Tagged identifiers, as the API's campaigns have: their MAC is part of the cost.
        id_key: hikyaku_queue_schema::ids::campaign_key(b"bench token secret", id),
    }
}

/// `count` bench jobs for campaign `campaign`, recipients `u<seq>@<domain>` spread over
/// `domains` by weight (deterministically, so runs are comparable).
pub fn bench_jobs(
    campaign: u64,
    count: u64,
    domains: &[(String, u32)],
    queued_ms: u64,
    japanese: bool,
) -> impl Iterator<Item = Job> + '_ {
    (0..count).map(move |seq| {
        let domain = weighted_domain(domains, seq);
        Job {
            id: JobId { campaign, seq },
            attempt: 0,
            queued_ms,
            expires_ms: 0,
            priority: 0,
            rcpt: format!("u{seq}@{domain}"),
            last: None,
            fields: vec![
                if japanese {
                    format!("読者{seq}")
                } else {
                    format!("Reader{seq}")
                },
                ["bronze", "silver", "gold"][(seq % 3) as usize].to_owned(),
                format!("{campaign:x}{seq:08x}"),
            ],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_lists_parse_or_fail_clearly() {
        assert_eq!(
            parse_domains("gmail.test:40, Yahoo.test:20,x.test").expect("ok"),
            vec![
                ("gmail.test".to_owned(), 40),
                ("yahoo.test".to_owned(), 20),
                ("x.test".to_owned(), 1)
            ]
        );
        for bad in ["", "a:0", "a:x", ":3", "a b:1"] {
            assert!(parse_domains(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bench_jobs_follow_the_weights() {
        let domains = parse_domains("a.test:3,b.test:1").expect("ok");
        let jobs: Vec<Job> = bench_jobs(1, 400, &domains, 0, false).collect();
        let a = jobs.iter().filter(|j| j.domain() == "a.test").count();
        assert_eq!(a, 300);
        assert_eq!(jobs[5].fields.len(), 3);
        let snap = bench_snapshot(1, 2048, false);
        assert!(snap.text_body.len() > 1800 && snap.text_body.len() < 2100);
        let ja = bench_snapshot(1, 2048, true);
        assert!(!ja.text_body.is_ascii());
        assert!(ja.text_body.len() > 1700 && ja.text_body.len() < 2100);
    }
}
