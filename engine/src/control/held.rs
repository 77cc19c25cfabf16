//! Held mail: what waits in the retry sets, per site. Mail held back by a paused or suspended
//! site (or one at its queue capacity) and mail deferred by a server's reply both wait there,
//! where the shard gauges show only a depth: a forgotten pause would expire a day of mail with
//! nothing but a flat graph to show for it. So the fleet's leader (the lowest-named live node,
//! [`crate::intake::membership::FleetView::is_leader`]) reads every retry set with `ZSCAN`, a bounded
//! page per shard and control tick ([`PAGE`]), and once a whole pass over every shard is done
//! publishes per site: the jobs, those held (put back without an attempt, never deferred by a
//! reply at that site), the age of the oldest (since first enqueue), and those that expire
//! within [`EXPIRING_WITHIN`]. Deferred and held jobs carry the site they were routed to
//! ([`hikyaku_queue_schema::LastTry`]), so no DNS lookup is needed; a job that carries none is
//! counted under [`UNROUTED`].
//!
//! A pass reads each member once, except that `ZSCAN` may return a member twice while Redis
//! rehashes the set: a count may then be a little high for one pass, never low. The figures are
//! as old as the pass (seconds for thousands of jobs, a few minutes for millions).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hikyaku_queue_schema::{Job, Keys, Redis};

/// Retry-set members one shard's scan asks for per control tick (a `ZSCAN COUNT` hint).
pub const PAGE: usize = 2000;

/// Jobs whose expiry is nearer than this count as expiring.
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(3600);

/// One `ZSCAN` reply: the next cursor and the members with their scores.
type ScanPage = (u64, Vec<(Vec<u8>, f64)>);

/// The site of jobs that carry none (deferred by an engine of a release before sites were
/// recorded on held jobs).
pub const UNROUTED: &str = "(never routed)";

/// One site's jobs in the retry sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteTally {
    /// Jobs last routed to the site.
    pub jobs: u64,
    /// Of those, held back by the site rather than deferred by a reply.
    pub held: u64,
    /// First enqueue of the oldest, ms since the epoch (0: none).
    pub oldest_queued_ms: u64,
    /// Of those, jobs expiring within [`EXPIRING_WITHIN`].
    pub expiring: u64,
    /// Of the expiring ones, those held back by the site: mail a pause or suspension is about
    /// to lose (the others are soft bounces reaching their natural end).
    pub expiring_held: u64,
}

impl SiteTally {
    fn add(&mut self, job: &Job, held: bool, expiring: bool) {
        self.jobs += 1;
        self.held += u64::from(held);
        self.expiring += u64::from(expiring);
        self.expiring_held += u64::from(expiring && held);
        if self.oldest_queued_ms == 0 || job.queued_ms < self.oldest_queued_ms {
            self.oldest_queued_ms = job.queued_ms;
        }
    }
}

/// The site a retry-set job waits for and whether it is held (no reply error there).
pub fn site_of(job: &Job) -> (&str, bool) {
    match &job.last {
        Some(last) => (last.site.as_str(), last.error.is_empty()),
        None => (UNROUTED, true),
    }
}

/// An incremental pass over every shard's retry set.
#[derive(Debug, Default)]
pub struct RetryScan {
    /// Per shard, the cursor to go on from; `None` once the shard is done this pass.
    cursors: Vec<Option<u64>>,
    /// What this pass has read so far.
    tally: BTreeMap<String, SiteTally>,
    /// Sites whose gauges this node has set (zeroed when they drop out).
    published: BTreeSet<String>,
}

impl RetryScan {
    /// Reads the next page of every shard not done yet (one pipelined round trip); returns the
    /// pass's tally by site once every shard is done, and starts the next pass. `expires`
    /// gives a job's expiry (ms since the epoch) at a site, `None` for a site it does not know.
    pub async fn step(
        &mut self,
        con: &mut Redis,
        shards: u16,
        now_ms: u64,
        expires: impl Fn(&Job, &str) -> Option<u64>,
    ) -> redis::RedisResult<Option<BTreeMap<String, SiteTally>>> {
        if self.cursors.len() != usize::from(shards) {
            self.cursors = vec![Some(0); usize::from(shards)];
            self.tally.clear();
        }
        let active: Vec<(u16, u64)> = (0..shards)
            .zip(&self.cursors)
            .filter_map(|(s, c)| c.map(|c| (s, c)))
            .collect();
        let mut pipe = redis::pipe();
        for (shard, cursor) in &active {
            pipe.cmd("ZSCAN")
                .arg(Keys::retry(*shard))
                .arg(*cursor)
                .arg("COUNT")
                .arg(PAGE);
        }
        let pages: Vec<ScanPage> = pipe.query_async(con).await?;
        let soon = now_ms.saturating_add(EXPIRING_WITHIN.as_millis() as u64);
        for ((shard, _), (next, members)) in active.into_iter().zip(pages) {
            for (bytes, _) in members {
                // An undecodable member is the mover's to deal with; it is not mail of a site.
                let Ok(job) = Job::decode(&bytes) else {
                    continue;
                };
                let (site, held) = site_of(&job);
                let expiring = expires(&job, site).is_some_and(|at| at <= soon);
                match self.tally.get_mut(site) {
                    Some(t) => t.add(&job, held, expiring),
                    None => {
                        let mut t = SiteTally::default();
                        t.add(&job, held, expiring);
                        self.tally.insert(site.to_owned(), t);
                    }
                }
            }
            self.cursors[usize::from(shard)] = (next != 0).then_some(next);
        }
        if self.cursors.iter().any(Option::is_some) {
            return Ok(None);
        }
        self.cursors = vec![Some(0); usize::from(shards)];
        Ok(Some(std::mem::take(&mut self.tally)))
    }

    /// The sites to publish after a pass: every site of `tally`, and the ones published before
    /// that it no longer has (their gauges go to zero).
    pub fn to_publish(&mut self, tally: &BTreeMap<String, SiteTally>) -> Vec<(String, SiteTally)> {
        let mut out: Vec<(String, SiteTally)> = self
            .published
            .iter()
            .filter(|s| !tally.contains_key(*s))
            .map(|s| (s.clone(), SiteTally::default()))
            .collect();
        out.extend(tally.iter().map(|(s, t)| (s.clone(), *t)));
        self.published = tally.keys().cloned().collect();
        out
    }

    /// This node stopped leading: its gauges go to zero (the new leader publishes), and its
    /// pass starts over should it lead again.
    pub fn stand_down(&mut self) -> Vec<(String, SiteTally)> {
        self.cursors.clear();
        self.tally.clear();
        std::mem::take(&mut self.published)
            .into_iter()
            .map(|s| (s, SiteTally::default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hikyaku_queue_schema::{JobId, LastTry};

    fn job(seq: u64, queued_ms: u64, last: Option<(&str, &str)>) -> Job {
        Job {
            id: JobId { campaign: 1, seq },
            attempt: 0,
            queued_ms,
            expires_ms: 0,
            priority: 0,
            rcpt: format!("r{seq}@x.test"),
            fields: Vec::new(),
            last: last.map(|(s, e)| Box::new(LastTry::new(s, e))),
        }
    }

    #[test]
    fn held_jobs_are_the_ones_without_a_reply_error() {
        assert_eq!(site_of(&job(1, 5, Some(("yahoo", "")))), ("yahoo", true));
        assert_eq!(
            site_of(&job(2, 5, Some(("yahoo", "421 4.7.0 [TSS04]")))),
            ("yahoo", false)
        );
        assert_eq!(site_of(&job(3, 5, None)), (UNROUTED, true));
    }

    #[test]
    fn a_tally_keeps_the_oldest_and_counts() {
        let mut t = SiteTally::default();
        t.add(&job(1, 500, None), true, false);
        t.add(&job(2, 200, None), false, true);
        t.add(&job(3, 900, None), true, false);
        let mut h = t;
        h.add(&job(4, 900, None), true, true);
        assert_eq!((h.expiring, h.expiring_held), (2, 1));
        assert_eq!(
            t,
            SiteTally {
                jobs: 3,
                held: 2,
                oldest_queued_ms: 200,
                expiring: 1,
                expiring_held: 0,
            }
        );
    }

    #[test]
    fn sites_that_drop_out_are_published_as_zero_once() {
        let mut scan = RetryScan::default();
        let mut first = BTreeMap::new();
        first.insert(
            "yahoo".to_owned(),
            SiteTally {
                jobs: 4,
                ..SiteTally::default()
            },
        );
        assert_eq!(scan.to_publish(&first).len(), 1);
        let out = scan.to_publish(&BTreeMap::new());
        assert_eq!(out, vec![("yahoo".to_owned(), SiteTally::default())]);
        assert!(scan.to_publish(&BTreeMap::new()).is_empty());
        scan.to_publish(&first);
        assert_eq!(scan.stand_down().len(), 1);
        assert!(scan.stand_down().is_empty());
    }
}
