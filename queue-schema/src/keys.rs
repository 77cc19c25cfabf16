//! The Redis key map (see the crate docs for the table).

/// Version of the wire format and key layout. Bumped on any incompatible change; written to
/// `hk:meta` so an engine refuses a Redis laid out by a different schema.
pub const SCHEMA_VERSION: u32 = 1;

/// The consumer group every engine node joins on every shard's ready stream.
pub const ENGINE_GROUP: &str = "hk-engine";

/// The consumer group the API's recorder reads every shard's events stream with.
pub const RECORDER_GROUP: &str = "hk-recorder";

/// Field name of the encoded job in a ready-stream entry.
pub const JOB_FIELD: &str = "j";

/// Field name of the encoded event in an events-stream entry.
pub const EVENT_FIELD: &str = "e";

/// Field of the campaign hash that holds the campaign's run state: absent or `sending`,
/// `paused` (engines hold its jobs back), `cancelled` (engines finish its jobs unsent).
pub const STATE_FIELD: &str = "state";

/// Field of a test send's snapshot hash that counts its jobs not yet ended
/// ([`crate::scripts::test_jobs_done`]).
pub const TEST_LEFT_FIELD: &str = "left";

/// Ids of test sends start here, above every real campaign id: test messages never touch a
/// campaign's snapshot, counters or record (the recorder has no campaign for them).
pub const TEST_ID_BASE: u64 = 1 << 48;

/// Field of the campaign hash that holds the encoded snapshot.
pub const SNAPSHOT_FIELD: &str = "snap";

/// Key names. A zero-sized namespace so call sites read `Keys::ready(3)`.
#[derive(Debug, Clone, Copy)]
pub struct Keys;

impl Keys {
    /// `hk:meta`: schema version and shard count.
    pub fn meta() -> &'static str {
        "hk:meta"
    }

    /// `hk:{sN}:ready`: the ready stream of a shard.
    pub fn ready(shard: u16) -> String {
        format!("hk:{{s{shard}}}:ready")
    }

    /// `hk:{sN}:retry`: the retry sorted set of a shard.
    pub fn retry(shard: u16) -> String {
        format!("hk:{{s{shard}}}:retry")
    }

    /// `hk:{sN}:events`: the events stream of a shard.
    pub fn events(shard: u16) -> String {
        format!("hk:{{s{shard}}}:events")
    }

    /// `hk:{sN}:expanded`: per campaign, the highest job `seq` expansion has enqueued on this
    /// shard (makes replayed expansion pages idempotent).
    pub fn expanded(shard: u16) -> String {
        format!("hk:{{s{shard}}}:expanded")
    }

    /// `hk:{sN}:parked`: ids of the campaigns with jobs parked on this shard.
    pub fn parked(shard: u16) -> String {
        format!("hk:{{s{shard}}}:parked")
    }

    /// `hk:{sN}:parked:<campaign>`: a paused campaign's parked jobs on this shard (a list of
    /// encoded jobs), back to the ready stream when it is resumed or cancelled.
    pub fn parked_jobs(shard: u16, campaign: u64) -> String {
        format!("hk:{{s{shard}}}:parked:{campaign}")
    }

    /// `hk:testsends:<tenant>:<hour>`: test-send recipients of a tenant in one clock hour (hours
    /// since the epoch), for the API's hourly limit; expires after two hours.
    pub fn test_sends(tenant: i64, hour: u64) -> String {
        format!("hk:testsends:{tenant}:{hour}")
    }

    /// `hk:camp:{id}`: the frozen campaign snapshot hash.
    pub fn campaign(id: u64) -> String {
        format!("hk:camp:{{{id}}}")
    }

    /// `hk:camp:{id}:n`: the campaign's live counters.
    pub fn campaign_counters(id: u64) -> String {
        format!("hk:camp:{{{id}}}:n")
    }

    /// `hk:site:events`: adaptive-shaping changes of every site (cut, suspend, recover), newest
    /// last, capped.
    pub fn site_events() -> &'static str {
        "hk:site:events"
    }

    /// `hk:suppressed`: the suppression feed ([`crate::suppressed`]).
    pub fn suppressed() -> &'static str {
        "hk:suppressed"
    }

    /// `hk:drain`: operators' drain rules ([`crate::drain`]).
    pub fn drains() -> &'static str {
        "hk:drain"
    }

    /// `hk:node:<node>:sites`: the site state one engine node publishes ([`crate::node`]).
    pub fn node_sites(node: &str) -> String {
        format!("hk:node:{node}:sites")
    }

    /// `hk:site:<site>:tat`: the site's fleet-wide rate limiter (GCRA theoretical arrival
    /// time, µs), leased from by [`crate::scripts::lease`].
    pub fn site_tat(site: &str) -> String {
        format!("hk:site:{site}:tat")
    }

    /// `hk:site:{<site>}:conns`: the site's fleet-wide connection slots
    /// ([`crate::scripts::take_slot`]).
    pub fn site_conns(site: &str) -> String {
        format!("hk:site:{{{site}}}:conns")
    }

    /// `hk:site:{<site>}:want`: nodes refused a connection slot of the site lately (same hash
    /// slot as [`Keys::site_conns`]).
    pub fn site_conn_wanted(site: &str) -> String {
        format!("hk:site:{{{site}}}:want")
    }

    /// `hk:nodes`: live engine nodes and when each one's heartbeat runs out
    /// ([`crate::scripts::heartbeat`]).
    pub fn nodes() -> &'static str {
        "hk:nodes"
    }

    /// `hk:site:<site>:ctl`: run-time control of a site (pause, rate override).
    pub fn site_ctl(site: &str) -> String {
        format!("hk:site:{site}:ctl")
    }
}

/// The time part (ms since the epoch) of a stream entry id `<ms>-<seq>`: when it was added.
pub fn stream_id_ms(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

/// The shard of a recipient domain: FNV-1a of the lower-cased domain, modulo `shards`.
///
/// Every writer (API expansion, load-test enqueuer, retry mover) must use this function so that
/// all jobs for one domain share a shard and its per-shard ordering and locality.
pub fn shard_for_domain(domain: &str, shards: u16) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in domain.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_shard_share_a_hash_tag() {
        for k in [Keys::ready(7), Keys::retry(7), Keys::events(7)] {
            assert!(k.contains("{s7}"), "{k}");
        }
        assert_eq!(Keys::ready(0), "hk:{s0}:ready");
        assert_eq!(Keys::campaign(42), "hk:camp:{42}");
        assert_eq!(Keys::campaign_counters(42), "hk:camp:{42}:n");
        assert_eq!(Keys::site_ctl("google"), "hk:site:google:ctl");
    }

    #[test]
    fn stream_ids_give_their_time() {
        assert_eq!(stream_id_ms("1700000000000-3"), Some(1_700_000_000_000));
        assert_eq!(stream_id_ms("x-3"), None);
        assert_eq!(stream_id_ms("17"), None);
    }

    #[test]
    fn shard_is_case_insensitive_and_in_range() {
        assert_eq!(
            shard_for_domain("Gmail.COM", 16),
            shard_for_domain("gmail.com", 16)
        );
        for d in ["a.test", "b.test", "docomo.ne.jp", "yahoo.co.jp"] {
            assert!(shard_for_domain(d, 4) < 4);
        }
        assert_eq!(shard_for_domain("x", 0), 0);
    }

    #[test]
    fn shards_spread_domains() {
        let mut seen = [0u32; 4];
        for i in 0..400 {
            seen[shard_for_domain(&format!("d{i}.test"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
