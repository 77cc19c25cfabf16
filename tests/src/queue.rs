//! Putting jobs into the queue and reading the results back, through `hikyaku-queue-schema`.

use hikyaku_queue_schema::keys::EVENT_FIELD;
use hikyaku_queue_schema::Redis;
use hikyaku_queue_schema::{CampaignSnapshot, Event, Job, JobId, Keys, ENGINE_GROUP};

/// The test campaign's id.
pub const CAMPAIGN: u64 = 1;

/// A small campaign with one merge field.
pub fn snapshot() -> CampaignSnapshot {
    CampaignSnapshot {
        id: CAMPAIGN,
        tenant: "test".into(),
        from_name: "Test".into(),
        from_addr: "news@sender.test".into(),
        reply_to: String::new(),
        subject: "Hello {{name}}".into(),
        text_body: "Hi {{name}},\nthis is a test.\n".into(),
        html_body: String::new(),
        field_names: vec!["name".into()],
        return_path: "bounce@sender.test".into(),
        message_id_domain: "sender.test".into(),
        headers: Vec::new(),
        verp_domain: String::new(),
        mobile_charset: String::new(),
        id_key: String::new(),
    }
}

/// A fresh job for `rcpt`.
pub fn job(seq: u64, rcpt: &str) -> Job {
    Job {
        id: JobId {
            campaign: CAMPAIGN,
            seq,
        },
        attempt: 0,
        queued_ms: now_ms(),
        expires_ms: 0,
        priority: 0,
        rcpt: rcpt.to_owned(),
        fields: vec![format!("reader {seq}")],
        last: None,
    }
}

/// Wall-clock ms (the engine's unit for due times).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes the snapshot and the jobs; returns how many jobs.
pub async fn enqueue(con: &mut Redis, shards: u16, jobs: Vec<Job>) -> u64 {
    let shards = hikyaku_loadtest::enqueue::shards(con, shards)
        .await
        .expect("meta");
    hikyaku_loadtest::enqueue::write_snapshot(con, &snapshot())
        .await
        .expect("snapshot");
    hikyaku_loadtest::enqueue::write_jobs(con, shards, jobs, |_| {})
        .await
        .expect("jobs")
}

/// Writes the test campaign's snapshot and jobs given as encoded bytes (a format another
/// release may write), each on the shard of its domain (`domain` gives it: the bytes may not
/// decode here).
pub async fn enqueue_raw(con: &mut Redis, shards: u16, jobs: Vec<(&str, Vec<u8>)>) {
    let shards = hikyaku_loadtest::enqueue::shards(con, shards)
        .await
        .expect("meta");
    hikyaku_loadtest::enqueue::write_snapshot(con, &snapshot())
        .await
        .expect("snapshot");
    for (domain, bytes) in jobs {
        let shard = hikyaku_queue_schema::shard_for_domain(domain, shards);
        let _: String = redis::cmd("XADD")
            .arg(hikyaku_queue_schema::Keys::ready(shard))
            .arg("*")
            .arg(hikyaku_queue_schema::keys::JOB_FIELD)
            .arg(bytes)
            .query_async(con)
            .await
            .expect("XADD");
    }
}

/// Writes `snapshot` and the jobs (of that campaign); returns how many jobs.
pub async fn enqueue_campaign(
    con: &mut Redis,
    shards: u16,
    snapshot: &CampaignSnapshot,
    jobs: Vec<Job>,
) -> u64 {
    let shards = hikyaku_loadtest::enqueue::shards(con, shards)
        .await
        .expect("meta");
    hikyaku_loadtest::enqueue::write_snapshot(con, snapshot)
        .await
        .expect("snapshot");
    hikyaku_loadtest::enqueue::write_jobs(con, shards, jobs, |_| {})
        .await
        .expect("jobs")
}

/// Jobs parked for paused campaigns, on every shard.
pub async fn parked(con: &mut Redis, shards: u16) -> u64 {
    let mut n = 0;
    for shard in 0..shards {
        let campaigns: Vec<u64> = redis::cmd("SMEMBERS")
            .arg(Keys::parked(shard))
            .query_async(con)
            .await
            .expect("smembers");
        for c in campaigns {
            let len: u64 = redis::cmd("LLEN")
                .arg(Keys::parked_jobs(shard, c))
                .query_async(con)
                .await
                .expect("llen");
            n += len;
        }
    }
    n
}

/// Every end-state event on every shard's events stream (deferrals left out: see
/// [`deferrals`]).
pub async fn events(con: &mut Redis, shards: u16) -> Vec<Event> {
    let mut all = stream_events(con, shards).await;
    all.retain(|e| e.status.is_end());
    all
}

/// Every deferral event on every shard's events stream.
pub async fn deferrals(con: &mut Redis, shards: u16) -> Vec<Event> {
    let mut all = stream_events(con, shards).await;
    all.retain(|e| !e.status.is_end());
    all
}

/// Every event on every shard's events stream, in stream order per shard.
async fn stream_events(con: &mut Redis, shards: u16) -> Vec<Event> {
    let mut out = Vec::new();
    for shard in 0..shards {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(Keys::events(shard))
            .arg("-")
            .arg("+")
            .query_async(con)
            .await
            .expect("xrange");
        for e in entries.ids {
            let bytes: Vec<u8> = e.get(EVENT_FIELD).expect("event field");
            out.push(Event::decode(&bytes).expect("event decodes"));
        }
    }
    out
}

/// Where jobs are: (entries in ready streams, pending in the group, in retry sets), counted by
/// one script so the counts of different shards are a consistent snapshot.
pub async fn depths(con: &mut Redis, shards: u16) -> (u64, u64, u64) {
    const COUNT: &str = r"
        local ready, pending, retry = 0, 0, 0
        for i = 1, #KEYS, 2 do
            ready = ready + redis.call('XLEN', KEYS[i])
            local ok, summary = pcall(redis.call, 'XPENDING', KEYS[i], ARGV[1])
            if ok then pending = pending + summary[1] end
            retry = retry + redis.call('ZCARD', KEYS[i + 1])
        end
        return {ready, pending, retry}
    ";
    let script = redis::Script::new(COUNT);
    let mut inv = script.prepare_invoke();
    for shard in 0..shards {
        inv.key(Keys::ready(shard)).key(Keys::retry(shard));
    }
    inv.arg(ENGINE_GROUP);
    let (ready, pending, retry): (u64, u64, u64) = inv.invoke_async(con).await.expect("depths");
    (ready, pending, retry)
}

/// Jobs in the retry sets, decoded.
pub async fn retry_jobs(con: &mut Redis, shards: u16) -> Vec<Job> {
    let mut out = Vec::new();
    for shard in 0..shards {
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(Keys::retry(shard))
            .arg(0)
            .arg(-1)
            .query_async(con)
            .await
            .expect("zrange");
        out.extend(members.iter().map(|m| Job::decode(m).expect("job decodes")));
    }
    out
}

/// Waits until the events streams hold at least `n` events (fails after `timeout`), and
/// returns them all.
pub async fn wait_events(con: &Redis, n: usize, timeout: std::time::Duration) -> Vec<Event> {
    crate::wait_for(timeout, &format!("{n} events"), || {
        let mut c = con.clone();
        async move {
            let e = events(&mut c, crate::world::SHARDS).await;
            (e.len() >= n).then_some(e)
        }
    })
    .await
}

/// Every job in the ready streams, decoded.
pub async fn ready_jobs(con: &mut Redis) -> Vec<Job> {
    let mut out = Vec::new();
    for shard in 0..crate::world::SHARDS {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(Keys::ready(shard))
            .arg("-")
            .arg("+")
            .query_async(con)
            .await
            .expect("xrange");
        for e in entries.ids {
            let bytes: Vec<u8> = e.get("j").expect("job field");
            out.push(Job::decode(&bytes).expect("job decodes"));
        }
    }
    out
}
