//! The dispatcher: recipient domain → MX → site, with a TTL cache, and routing of each job to
//! its site's scheduler.
//!
//! A domain's first job starts one lookup; jobs for the same domain that arrive meanwhile wait
//! with it and are routed together when it completes, so the shard consumer never waits on
//! DNS. Answers are kept in a bounded LRU cache ([`DomainCache`]): a list of a million
//! domains costs at most the cache's size, and a miss never scans it. A site is found by MX rollup: the most preferred MX host's name is matched
//! against every site's `mx_suffixes` (longest suffix wins), then the recipient domain against
//! `domains`, else the `default` site.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock;
use crate::control::campaigns::CampaignStates;
use crate::metrics::Metrics;
use crate::outcome::classify::Attempt;
use crate::outcome::report::Reporter;
use crate::routing::mx::{MxAnswer, MxLookup};
use crate::site::connect::Target;
use crate::site::policy::DEFAULT_SITE;
use crate::site::{Routed, Site};
use crate::work::Work;

/// Domains whose answers are kept by default ([`DispatchConfig::cache_domains`]).
pub const DEFAULT_CACHED_DOMAINS: usize = 100_000;

/// Checks that `rcpt` can go in `RCPT TO:<…>`: one `@` splitting a non-empty local part and a
/// domain, no whitespace, control characters or angle brackets (nothing that could end the
/// command or start another), at most 254 bytes (RFC 5321 §4.5.3.1).
pub fn check_recipient(rcpt: &str) -> Result<(), &'static str> {
    if rcpt.len() > 254 {
        return Err("address longer than 254 bytes");
    }
    if rcpt
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
    {
        return Err("address contains whitespace, control characters or angle brackets");
    }
    let Some((local, domain)) = rcpt.rsplit_once('@') else {
        return Err("address has no @domain");
    };
    if local.is_empty()
        || domain.is_empty()
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err("address has an empty local part or a malformed domain");
    }
    Ok(())
}

/// Where a domain's jobs go.
#[derive(Debug, Clone)]
enum Route {
    Site(Arc<Site>, Arc<Target>),
    NoDomain(Arc<str>),
    Temporary(Arc<str>),
}

/// Domain answers, least recently used evicted first, and the jobs waiting for lookups in
/// progress (never evicted: they hold jobs).
#[derive(Debug)]
pub struct DomainCache {
    ready: hashlink::LruCache<String, (Instant, Route)>,
    pending: HashMap<String, Vec<Work>>,
}

/// What the cache knows of a domain.
enum Lookup {
    /// A valid answer.
    Ready(Route),
    /// A lookup is in progress; the job waits with it.
    Waiting,
    /// Nothing (or an expired answer): the caller starts a lookup; the job waits with it.
    Start,
}

impl DomainCache {
    /// A cache of at most `capacity` answers.
    pub fn new(capacity: usize) -> Self {
        DomainCache {
            ready: hashlink::LruCache::new(capacity.max(1)),
            pending: HashMap::new(),
        }
    }

    /// Answers kept.
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// The route of `domain` for `work`, or `work` waits for a lookup (in progress, or to be
    /// started by the caller).
    fn route(&mut self, domain: &str, work: Work, now: Instant) -> (Lookup, Option<Work>) {
        if let Some((until, route)) = self.ready.get(domain) {
            if *until > now {
                return (Lookup::Ready(route.clone()), Some(work));
            }
        }
        if let Some(waiting) = self.pending.get_mut(domain) {
            waiting.push(work);
            return (Lookup::Waiting, None);
        }
        self.ready.remove(domain);
        self.pending.insert(domain.to_owned(), vec![work]);
        (Lookup::Start, None)
    }

    /// Stores `domain`'s answer until `until`; returns the jobs that waited for it.
    fn answer(&mut self, domain: String, until: Instant, route: Route) -> Vec<Work> {
        let waiting = self.pending.remove(&domain).unwrap_or_default();
        self.ready.insert(domain, (until, route));
        waiting
    }
}

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// SMTP port on MX hosts.
    pub port: u16,
    /// Relay that takes everything, if any (`host`, `port`).
    pub smarthost: Option<(String, u16)>,
    /// Cap on cached answers' lifetime.
    pub max_cache_ttl: Duration,
    /// Lifetime of a cached temporary failure.
    pub failure_ttl: Duration,
    /// Delay before a job refused by a full or paused site comes back.
    pub requeue_delay: Duration,
    /// Most domain answers kept (least recently used evicted first).
    pub cache_domains: usize,
}

/// Routes jobs to sites.
#[derive(Debug)]
pub struct Dispatcher {
    sites: BTreeMap<String, Arc<Site>>,
    default_site: Arc<Site>,
    /// (suffix, site), longest suffix first.
    suffixes: Vec<(String, Arc<Site>)>,
    domains: HashMap<String, Arc<Site>>,
    cache: Mutex<DomainCache>,
    lookup: Arc<dyn MxLookup>,
    reporter: Reporter,
    metrics: Metrics,
    config: DispatchConfig,
    /// Campaign run states (paused / cancelled by the API).
    campaigns: Arc<CampaignStates>,
    /// Operators' drain orders.
    drains: Arc<crate::routing::drains::Drains>,
}

impl Dispatcher {
    /// A dispatcher over `sites` (which must include `default`).
    pub fn new(
        sites: BTreeMap<String, Arc<Site>>,
        lookup: Arc<dyn MxLookup>,
        reporter: Reporter,
        metrics: Metrics,
        config: DispatchConfig,
        campaigns: Arc<CampaignStates>,
        drains: Arc<crate::routing::drains::Drains>,
    ) -> Option<Arc<Self>> {
        let default_site = sites.get(DEFAULT_SITE)?.clone();
        let mut suffixes: Vec<(String, Arc<Site>)> = sites
            .values()
            .flat_map(|s| {
                s.policy
                    .mx_suffixes
                    .iter()
                    .map(move |x| (x.trim_matches('.').to_ascii_lowercase(), s.clone()))
            })
            .collect();
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        let domains = sites
            .values()
            .flat_map(|s| {
                s.policy
                    .domains
                    .iter()
                    .map(move |d| (d.to_ascii_lowercase(), s.clone()))
            })
            .collect();
        Some(Arc::new(Dispatcher {
            sites,
            default_site,
            suffixes,
            domains,
            cache: Mutex::new(DomainCache::new(config.cache_domains)),
            lookup,
            reporter,
            metrics,
            config,
            campaigns,
            drains,
        }))
    }

    /// Every site, by name.
    pub fn sites(&self) -> &BTreeMap<String, Arc<Site>> {
        &self.sites
    }

    /// The site whose MX suffix matches `host`, if any.
    pub fn site_for_mx(&self, host: &str) -> Option<&Arc<Site>> {
        self.suffixes.iter().find_map(|(suffix, site)| {
            let matches = host == suffix
                || (host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.');
            matches.then_some(site)
        })
    }

    fn site_for_domain(&self, domain: &str) -> &Arc<Site> {
        self.domains.get(domain).unwrap_or(&self.default_site)
    }

    /// A job read from `shard`'s entry `entry`, holding its campaign's tracking
    /// ([`CampaignStates::hold`]) while it is in the engine's hands.
    pub fn work(
        &self,
        shard: u16,
        entry: Arc<str>,
        job: hikyaku_queue_schema::Job,
        redelivered: bool,
    ) -> Work {
        Work {
            hold: self.campaigns.hold(job.id.campaign),
            shard,
            entry,
            job,
            redelivered,
        }
    }

    /// Domain answers cached now.
    pub fn cached_domains(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Routes one job (never waits).
    pub fn dispatch(self: &Arc<Self>, work: Work) {
        // A job of a drained campaign goes on to be drained where it routes, paused or not.
        let drained = self
            .drains
            .for_campaign(work.job.id.campaign, work.job.queued_ms)
            .is_some();
        let state = self.campaigns.get(work.job.id.campaign);
        let Some(work) = (if drained {
            Some(work)
        } else {
            self.reporter
                .campaign_gate(work, &self.default_site.policy, state)
        }) else {
            return;
        };
        if let Err(why) = check_recipient(&work.job.rcpt) {
            let attempt = Attempt::InvalidRecipient(why.into());
            self.reporter
                .outcome(work, &self.default_site.policy, "", &attempt);
            return;
        }
        let domain = {
            let d = work.job.domain();
            if d.bytes().any(|b| b.is_ascii_uppercase()) {
                d.to_ascii_lowercase()
            } else {
                d.to_owned()
            }
        };
        if let Some((host, port)) = &self.config.smarthost {
            let site = self.site_for_domain(&domain).clone();
            let target = Arc::new(Target {
                hosts: vec![host.clone()],
                port: *port,
            });
            self.apply(work, Route::Site(site, target));
            return;
        }
        let (lookup, work) =
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .route(&domain, work, clock::now());
        match (lookup, work) {
            (Lookup::Ready(route), Some(work)) => self.apply(work, route),
            (Lookup::Start, _) => {
                let me = self.clone();
                tokio::spawn(async move { me.resolve(domain).await });
            }
            _ => {}
        }
    }

    async fn resolve(self: Arc<Self>, domain: String) {
        let (route, ttl) = match self.lookup.mx(&domain).await {
            Ok((MxAnswer::Hosts(hosts), ttl)) => {
                self.metrics.dns("ok");
                let site = hosts
                    .iter()
                    .find_map(|h| self.site_for_mx(&h.host))
                    .unwrap_or_else(|| self.site_for_domain(&domain))
                    .clone();
                let target = Arc::new(Target {
                    hosts: hosts.into_iter().map(|h| h.host).collect(),
                    port: self.config.port,
                });
                (
                    Route::Site(site, target),
                    ttl.min(self.config.max_cache_ttl),
                )
            }
            Ok((MxAnswer::NoDomain(why), ttl)) => {
                self.metrics.dns("no-domain");
                (
                    Route::NoDomain(why.into()),
                    ttl.min(self.config.max_cache_ttl),
                )
            }
            Err(e) => {
                self.metrics.dns("temporary");
                (Route::Temporary(e.0.into()), self.config.failure_ttl)
            }
        };
        let until = clock::now() + ttl.max(Duration::from_secs(1));
        let waiting = self.cache.lock().unwrap_or_else(|p| p.into_inner()).answer(
            domain,
            until,
            route.clone(),
        );
        for work in waiting {
            self.apply(work, route.clone());
        }
    }

    fn apply(&self, work: Work, route: Route) {
        // Drain orders apply where the job was routed: its event names the site and MX host it
        // would have gone to (a job whose domain has no site gets the default site's).
        let (drain_site, mx) = match &route {
            Route::Site(site, target) => (site, target.hosts.first().map_or("", String::as_str)),
            _ => (&self.default_site, ""),
        };
        if let Some(rule) = self
            .drains
            .for_campaign(work.job.id.campaign, work.job.queued_ms)
            .or_else(|| {
                matches!(route, Route::Site(..))
                    .then(|| {
                        self.drains
                            .for_site(&drain_site.policy.name, work.job.queued_ms)
                    })
                    .flatten()
            })
        {
            self.reporter.drained(work, &drain_site.policy, mx, &rule);
            return;
        }
        match route {
            Route::Site(site, target) => {
                if let Err(r) = site.offer(Routed { work, target }) {
                    let reason = if site.is_paused() {
                        "paused"
                    } else {
                        "site-busy"
                    };
                    self.metrics.requeued(&site.policy.name, reason);
                    // Remember the site, so operators can requeue or drain it from the retry set
                    // (another site's error is not this one's: it goes).
                    let mut work = r.work;
                    let again = work
                        .job
                        .last
                        .as_ref()
                        .is_some_and(|l| l.site == site.policy.name);
                    let delay = if again {
                        site.refused_again_delay(self.config.requeue_delay)
                    } else {
                        site.refusal_delay(self.config.requeue_delay)
                    };
                    if !again {
                        work.job.last = Some(Box::new(hikyaku_queue_schema::LastTry {
                            site: site.policy.name.clone(),
                            error: String::new(),
                        }));
                    }
                    self.reporter.requeue(work, &site.policy, delay);
                }
            }
            Route::NoDomain(why) => {
                let attempt = Attempt::DnsNoDomain(why.to_string());
                self.reporter
                    .outcome(work, &self.default_site.policy, "", &attempt);
            }
            Route::Temporary(why) => {
                let attempt = Attempt::DnsTemporary(why.to_string());
                self.reporter
                    .outcome(work, &self.default_site.policy, "", &attempt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(seq: u64) -> Work {
        let states = CampaignStates::default();
        Work {
            hold: states.hold(1),
            shard: 0,
            entry: format!("1-{seq}").into(),
            job: hikyaku_queue_schema::Job {
                id: hikyaku_queue_schema::JobId { campaign: 1, seq },
                attempt: 0,
                queued_ms: 0,
                expires_ms: 0,
                priority: 0,
                rcpt: format!("a@d{seq}.test"),
                fields: Vec::new(),
                last: None,
            },
            redelivered: false,
        }
    }

    #[test]
    fn the_domain_cache_is_bounded_and_keeps_waiting_jobs() {
        let mut cache = DomainCache::new(1000);
        let now = clock::now();
        let later = now + Duration::from_secs(3600);
        for i in 0..5000u64 {
            let domain = format!("d{i}.test");
            let (lookup, _) = cache.route(&domain, work(i), now);
            assert!(matches!(lookup, Lookup::Start));
            let waiting = cache.answer(domain, later, Route::NoDomain("x".into()));
            assert_eq!(waiting.len(), 1, "the job that started the lookup");
        }
        // Live answers beyond the bound are evicted, least recently used first.
        assert_eq!(cache.len(), 1000);
        assert!(matches!(
            cache.route("d4999.test", work(1), now).0,
            Lookup::Ready(_)
        ));
        assert!(matches!(
            cache.route("d0.test", work(2), now).0,
            Lookup::Start
        ));
        // A lookup in progress keeps its jobs whatever the cache holds.
        assert!(matches!(
            cache.route("d0.test", work(3), now).0,
            Lookup::Waiting
        ));
        assert_eq!(
            cache
                .answer("d0.test".into(), later, Route::NoDomain("x".into()))
                .len(),
            2
        );
        // An expired answer is looked up again.
        assert!(matches!(
            cache.route("d4999.test", work(4), later).0,
            Lookup::Start
        ));
    }

    #[test]
    fn recipients_that_could_break_the_envelope_are_refused() {
        for ok in [
            "a@b.test",
            "first.last+tag@sub.example.jp",
            "\"q@x\"@b.test",
            "ユーザー@例え.jp",
        ] {
            assert_eq!(check_recipient(ok), Ok(()), "{ok}");
        }
        let long = format!("{}@b.test", "a".repeat(250));
        for bad in [
            "",
            "nodomain",
            "@b.test",
            "a@",
            "a@.b",
            "a@b.",
            "a@b..c",
            "a b@c.test",
            "a@b.test>\r\nDATA",
            "a@b.test\r\nRSET",
            "<a@b.test>",
            "a\0@b.test",
            long.as_str(),
        ] {
            assert!(check_recipient(bad).is_err(), "{bad:?}");
        }
    }
}
