//! The dispatcher: recipient domain → MX → site, with a TTL cache, and routing of each job to
//! its site's scheduler.
//!
//! A domain's first job starts one lookup; jobs for the same domain that arrive meanwhile wait
//! in the cache entry and are routed together when it completes, so the shard consumer never
//! waits on DNS. A site is found by MX rollup: the most preferred MX host's name is matched
//! against every site's `mx_suffixes` (longest suffix wins), then the recipient domain against
//! `domains`, else the `default` site.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::campaigns::CampaignStates;
use crate::classify::Attempt;
use crate::clock;
use crate::connect::Target;
use crate::metrics::Metrics;
use crate::mx::{MxAnswer, MxLookup};
use crate::policy::DEFAULT_SITE;
use crate::report::Reporter;
use crate::site::{Routed, Site};
use crate::work::Work;

/// Domains cached before expired answers are swept out (bounds the cache's memory).
const MAX_CACHED_DOMAINS: usize = 100_000;

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

#[derive(Debug)]
enum Entry {
    Ready { until: Instant, route: Route },
    Pending(Vec<Work>),
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
}

/// Routes jobs to sites.
#[derive(Debug)]
pub struct Dispatcher {
    sites: BTreeMap<String, Arc<Site>>,
    default_site: Arc<Site>,
    /// (suffix, site), longest suffix first.
    suffixes: Vec<(String, Arc<Site>)>,
    domains: HashMap<String, Arc<Site>>,
    cache: Mutex<HashMap<String, Entry>>,
    lookup: Arc<dyn MxLookup>,
    reporter: Reporter,
    metrics: Metrics,
    config: DispatchConfig,
    /// Campaign run states (paused / cancelled by the API).
    campaigns: Arc<CampaignStates>,
    /// Operators' drain orders.
    drains: Arc<crate::drains::Drains>,
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
        drains: Arc<crate::drains::Drains>,
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
            cache: Mutex::new(HashMap::new()),
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

    /// Routes one job (never waits).
    pub fn dispatch(self: &Arc<Self>, work: Work) {
        if let Some(rule) = self
            .drains
            .for_campaign(work.job.id.campaign, work.job.queued_ms)
        {
            self.reporter
                .drained(work, &self.default_site.policy, &rule);
            return;
        }
        let state = self.campaigns.get(work.job.id.campaign);
        let Some(work) = self
            .reporter
            .campaign_gate(work, &self.default_site.policy, state)
        else {
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
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get_mut(&domain) {
            Some(Entry::Ready { until, route }) if *until > clock::now() => {
                let route = route.clone();
                drop(cache);
                self.apply(work, route);
            }
            Some(Entry::Pending(waiting)) => waiting.push(work),
            _ => {
                if cache.len() >= MAX_CACHED_DOMAINS {
                    let now = clock::now();
                    cache.retain(|_, e| !matches!(e, Entry::Ready { until, .. } if *until <= now));
                }
                cache.insert(domain.clone(), Entry::Pending(vec![work]));
                drop(cache);
                let me = self.clone();
                tokio::spawn(async move { me.resolve(domain).await });
            }
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
        let waiting = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let prev = cache.insert(
                domain,
                Entry::Ready {
                    until: clock::now() + ttl.max(Duration::from_secs(1)),
                    route: route.clone(),
                },
            );
            match prev {
                Some(Entry::Pending(w)) => w,
                _ => Vec::new(),
            }
        };
        for work in waiting {
            self.apply(work, route.clone());
        }
    }

    fn apply(&self, work: Work, route: Route) {
        match route {
            Route::Site(site, target) => {
                if let Some(rule) = self.drains.for_site(&site.policy.name, work.job.queued_ms) {
                    self.reporter.drained(work, &site.policy, &rule);
                    return;
                }
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
    use super::check_recipient;

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
