//! Operators' drain orders (`hikyaku queue drain`), read from `hk:drain`
//! ([`hikyaku_queue_schema::drain`]) every second with the other control state and applied by
//! the dispatcher when it routes a job: a job of a drained campaign, or routed to a drained
//! site, first enqueued before the order, ends unsent as the order says (bounced or cancelled,
//! reason `drained`). While no order exists the check is one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use hikyaku_queue_schema::drain::{Rule, Scope};
use hikyaku_queue_schema::Keys;
use hikyaku_queue_schema::Redis;

/// The drain orders in force, by site and by campaign (looked up without allocating).
#[derive(Debug, Default)]
pub struct Drains {
    any_site: AtomicBool,
    any_campaign: AtomicBool,
    sites: RwLock<HashMap<String, Rule>>,
    campaigns: RwLock<HashMap<u64, Rule>>,
}

impl Drains {
    /// Re-reads `hk:drain`.
    pub async fn refresh(&self, con: &mut Redis) -> redis::RedisResult<()> {
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(Keys::drains())
            .query_async(con)
            .await?;
        self.set(&raw);
        Ok(())
    }

    /// Replaces the orders with those of `raw` (field → value); malformed ones are ignored.
    pub fn set(&self, raw: &HashMap<String, String>) {
        let mut sites = HashMap::new();
        let mut campaigns = HashMap::new();
        for (f, v) in raw {
            match (Scope::parse(f), Rule::parse(v)) {
                (Some(Scope::Site(s)), Some(r)) => {
                    sites.insert(s, r);
                }
                (Some(Scope::Campaign(c)), Some(r)) => {
                    campaigns.insert(c, r);
                }
                _ => {}
            }
        }
        self.any_site.store(!sites.is_empty(), Ordering::Relaxed);
        self.any_campaign
            .store(!campaigns.is_empty(), Ordering::Relaxed);
        *self.sites.write().unwrap_or_else(|p| p.into_inner()) = sites;
        *self.campaigns.write().unwrap_or_else(|p| p.into_inner()) = campaigns;
    }

    /// The order that drains a job of `campaign` first enqueued at `queued_ms`, if any.
    pub fn for_campaign(&self, campaign: u64, queued_ms: u64) -> Option<Rule> {
        if !self.any_campaign.load(Ordering::Relaxed) {
            return None;
        }
        self.campaigns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&campaign)
            .filter(|r| r.covers(queued_ms))
            .cloned()
    }

    /// The order that drains a job routed to `site` first enqueued at `queued_ms`, if any.
    pub fn for_site(&self, site: &str, queued_ms: u64) -> Option<Rule> {
        if !self.any_site.load(Ordering::Relaxed) {
            return None;
        }
        self.sites
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(site)
            .filter(|r| r.covers(queued_ms))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_cover_jobs_enqueued_before_them() {
        let d = Drains::default();
        assert!(d.for_site("yahoo", 1).is_none());
        let mut raw = HashMap::new();
        raw.insert("site:yahoo".to_owned(), "bounced|100|gone".to_owned());
        raw.insert("campaign:7".to_owned(), "cancelled|50|stop".to_owned());
        raw.insert("site:bad".to_owned(), "nonsense".to_owned());
        d.set(&raw);
        assert_eq!(
            d.for_site("yahoo", 100).map(|r| r.reason),
            Some("gone".into())
        );
        assert!(d.for_site("yahoo", 101).is_none());
        assert!(d.for_site("google", 1).is_none());
        assert!(d.for_site("bad", 1).is_none());
        assert!(d.for_campaign(7, 50).is_some());
        assert!(d.for_campaign(8, 1).is_none());
        d.set(&HashMap::new());
        assert!(d.for_campaign(7, 1).is_none());
    }
}
