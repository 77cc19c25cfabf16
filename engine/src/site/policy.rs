//! Site policies: the limits shared by every domain of one destination provider.
//!
//! Shipped defaults come from PROVIDERS.md (peer defaults where providers publish nothing);
//! the `[sites.<name>]` tables of the engine config override them field by field or add sites.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::message::jis::Charset;
use crate::outcome::retry::RetrySchedule;
use crate::site::adaptive::{ReplyRule, RuleAction};
use crate::smtp::Timeouts;
use crate::units::{Rate, Span};

/// Name of the site that takes every domain no other site claims.
pub const DEFAULT_SITE: &str = "default";

/// The effective policy of one site.
#[derive(Debug, Clone, PartialEq)]
pub struct SitePolicy {
    /// Site name (metrics label, control key).
    pub name: String,
    /// MX host suffixes that roll a domain up to this site (`google.com` matches
    /// `aspmx.l.google.com`); the lowest-preference MX decides.
    pub mx_suffixes: Vec<String>,
    /// Recipient domains known to belong here without looking at MX (used with a smarthost).
    pub domains: Vec<String>,
    /// Messages per second, for the site as a whole.
    pub rate: Rate,
    /// Concurrent connections to the site.
    pub max_connections: u32,
    /// Messages per connection before a polite QUIT and a fresh connection.
    pub max_messages_per_connection: u32,
    /// Jobs held in memory for the site; beyond that, jobs wait in the retry set.
    pub queue_capacity: usize,
    /// One timeout per SMTP phase.
    pub timeouts: Timeouts,
    /// When to retry deferred jobs.
    pub retry: RetrySchedule,
    /// How long after first enqueue a job may still be tried.
    pub expiry: Duration,
    /// Reply rules of adaptive shaping ([`crate::site::adaptive`]), first match wins.
    pub reply_rules: Vec<ReplyRule>,
    /// After a cut, the rate climbs one step per interval…
    pub recover_interval: Duration,
    /// …of this fraction of the cut rate.
    pub recover_step: f64,
    /// Character set of the site's messages (`iso-2022-jp` for legacy Japanese handsets).
    pub charset: Charset,
    /// Largest message the site takes, in bytes as sent (after encoding and DKIM headers),
    /// where the provider publishes one its servers need not announce as `SIZE`; a larger
    /// message is refused by the engine without being sent (552 5.3.4, `not-sent`).
    pub max_message_bytes: Option<u64>,
}

/// Overrides for one site in the config file; every field optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SitePolicyConfig {
    /// MX host suffixes of the site.
    pub mx_suffixes: Option<Vec<String>>,
    /// Recipient domains of the site.
    pub domains: Option<Vec<String>>,
    /// Rate, e.g. `"200/s"`, `"6000/m"`, `"unlimited"`.
    pub rate: Option<Rate>,
    /// Concurrent connections.
    pub max_connections: Option<u32>,
    /// Messages per connection.
    pub max_messages_per_connection: Option<u32>,
    /// In-memory queue length for the site.
    pub queue_capacity: Option<usize>,
    /// TCP connect timeout.
    pub connect_timeout: Option<Span>,
    /// Greeting timeout.
    pub banner_timeout: Option<Span>,
    /// EHLO timeout.
    pub ehlo_timeout: Option<Span>,
    /// STARTTLS and handshake timeout.
    pub starttls_timeout: Option<Span>,
    /// MAIL/RCPT/DATA reply timeout.
    pub command_timeout: Option<Span>,
    /// Body and final reply timeout.
    pub data_timeout: Option<Span>,
    /// Idle connection lifetime.
    pub idle_timeout: Option<Span>,
    /// First retry delay.
    pub retry_initial: Option<Span>,
    /// Backoff factor.
    pub retry_factor: Option<f64>,
    /// Longest retry delay.
    pub retry_max: Option<Span>,
    /// Retry jitter fraction (0–1).
    pub retry_jitter: Option<f64>,
    /// Job lifetime from first enqueue (at most 7 days, the suppression feed's reach: longer
    /// is cut to 7 days).
    pub expiry: Option<Span>,
    /// Reply rules (replace the shipped ones): `[[sites.<name>.reply_rules]]` with `pattern`,
    /// `action` (`cut`, `suspend`, `block`), `factor`, `duration`.
    pub reply_rules: Option<Vec<ReplyRule>>,
    /// Recovery interval after a cut.
    pub recover_interval: Option<Span>,
    /// Recovery step, a fraction of the cut rate.
    pub recover_step: Option<f64>,
    /// `utf-8` (default) or `iso-2022-jp`.
    pub charset: Option<Charset>,
    /// Largest message in bytes as sent; `0` for no limit of the site's own (the server's
    /// announced `SIZE` still applies).
    pub max_message_bytes: Option<u64>,
}

impl SitePolicy {
    fn base(name: &str) -> Self {
        SitePolicy {
            name: name.to_owned(),
            mx_suffixes: Vec::new(),
            domains: Vec::new(),
            rate: Rate::UNLIMITED,
            max_connections: 10,
            max_messages_per_connection: 100,
            queue_capacity: 5_000,
            timeouts: Timeouts::default(),
            retry: RetrySchedule {
                initial: Duration::from_secs(10 * 60),
                factor: 2.0,
                max: Duration::from_secs(2 * 3600),
                jitter: 0.2,
            },
            expiry: Duration::from_secs(24 * 3600),
            reply_rules: Vec::new(),
            recover_interval: Duration::from_secs(30),
            recover_step: 0.1,
            charset: Charset::Utf8,
            max_message_bytes: None,
        }
    }

    fn shipped(
        name: &str,
        mx: &[&str],
        domains: &[&str],
        rate: Rate,
        conns: u32,
        per_conn: u32,
    ) -> Self {
        SitePolicy {
            mx_suffixes: mx.iter().map(|s| (*s).to_owned()).collect(),
            domains: domains.iter().map(|s| (*s).to_owned()).collect(),
            rate,
            max_connections: conns,
            max_messages_per_connection: per_conn,
            ..Self::base(name)
        }
    }

    /// The shipped defaults, keyed by site name.
    pub fn shipped_defaults() -> BTreeMap<String, SitePolicy> {
        let r = Rate::per_second;
        let unlimited = Rate::UNLIMITED;
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let sites = [
            SitePolicy {
                // 421-4.7.28: "unusual rate of unsolicited mail" — halve the rate.
                reply_rules: vec![ReplyRule::cut(r"^421 4\.7\.28\b", 0.5)],
                ..Self::shipped(
                    "google",
                    &["google.com", "googlemail.com"],
                    &["gmail.com", "googlemail.com"],
                    unlimited,
                    5,
                    50,
                )
            },
            SitePolicy {
                reply_rules: vec![
                    ReplyRule::stop(r"\[(TSS04|IPTS04)\]", RuleAction::Suspend, hours(2)),
                    ReplyRule::stop(r"\[TS03\]", RuleAction::Block, hours(4)),
                ],
                ..Self::shipped(
                    "yahoo",
                    &["yahoodns.net"],
                    &["yahoo.com", "aol.com", "ymail.com", "rocketmail.com"],
                    unlimited,
                    10,
                    20,
                )
            },
            SitePolicy {
                reply_rules: vec![ReplyRule::stop(r"VS98-IP0", RuleAction::Suspend, hours(1))],
                ..Self::shipped(
                    "yahoo-jp",
                    &["yahoo.co.jp", "ymail.ne.jp"],
                    &["yahoo.co.jp", "ymail.ne.jp"],
                    r(10.0),
                    2,
                    20,
                )
            },
            // docomo: at most 100 recipients per session, few sessions, no bursts.
            Self::shipped(
                "docomo",
                &["docomo.ne.jp"],
                &["docomo.ne.jp"],
                r(20.0),
                2,
                100,
            ),
            // au rejects messages over 3 MB, SoftBank (older spec) over 1 MB; decimal
            // megabytes, the stricter reading.
            SitePolicy {
                max_message_bytes: Some(3_000_000),
                ..Self::shipped(
                    "au",
                    &["ezweb.ne.jp", "au.com"],
                    &["au.com", "ezweb.ne.jp"],
                    r(20.0),
                    2,
                    100,
                )
            },
            SitePolicy {
                max_message_bytes: Some(1_000_000),
                ..Self::shipped(
                    "softbank",
                    &["softbank.ne.jp"],
                    &["softbank.ne.jp", "i.softbank.jp"],
                    r(10.0),
                    2,
                    100,
                )
            },
            Self::shipped(
                "icloud",
                &["icloud.com", "me.com"],
                &["icloud.com", "me.com", "mac.com"],
                unlimited,
                5,
                50,
            ),
            Self::shipped(
                "outlook",
                &["protection.outlook.com", "outlook.com", "hotmail.com"],
                &["outlook.com", "hotmail.com", "live.com", "msn.com"],
                unlimited,
                10,
                100,
            ),
            Self::base(DEFAULT_SITE),
        ];
        sites.into_iter().map(|p| (p.name.clone(), p)).collect()
    }

    /// Applies config overrides on top of `self`.
    pub fn apply(&mut self, o: &SitePolicyConfig) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        fn span(dst: &mut Duration, src: &Option<Span>) {
            if let Some(s) = src {
                *dst = s.0;
            }
        }
        set(&mut self.mx_suffixes, &o.mx_suffixes);
        set(&mut self.domains, &o.domains);
        set(&mut self.rate, &o.rate);
        set(&mut self.max_connections, &o.max_connections);
        set(
            &mut self.max_messages_per_connection,
            &o.max_messages_per_connection,
        );
        set(&mut self.queue_capacity, &o.queue_capacity);
        span(&mut self.timeouts.connect, &o.connect_timeout);
        span(&mut self.timeouts.banner, &o.banner_timeout);
        span(&mut self.timeouts.ehlo, &o.ehlo_timeout);
        span(&mut self.timeouts.starttls, &o.starttls_timeout);
        span(&mut self.timeouts.command, &o.command_timeout);
        span(&mut self.timeouts.data, &o.data_timeout);
        span(&mut self.timeouts.idle, &o.idle_timeout);
        span(&mut self.retry.initial, &o.retry_initial);
        set(&mut self.retry.factor, &o.retry_factor);
        span(&mut self.retry.max, &o.retry_max);
        set(&mut self.retry.jitter, &o.retry_jitter);
        span(&mut self.expiry, &o.expiry);
        set(&mut self.reply_rules, &o.reply_rules);
        span(&mut self.recover_interval, &o.recover_interval);
        set(&mut self.recover_step, &o.recover_step);
        set(&mut self.charset, &o.charset);
        if let Some(max) = o.max_message_bytes {
            self.max_message_bytes = Some(max).filter(|&m| m > 0);
        }
    }

    /// Checks that the policy can work.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if self.max_connections == 0 {
            return Err(format!("site {n}: max_connections must be at least 1"));
        }
        if self.max_messages_per_connection == 0 {
            return Err(format!(
                "site {n}: max_messages_per_connection must be at least 1"
            ));
        }
        if self.queue_capacity == 0 {
            return Err(format!("site {n}: queue_capacity must be at least 1"));
        }
        if !(self.retry.factor >= 1.0 && self.retry.factor.is_finite()) {
            return Err(format!("site {n}: retry_factor must be ≥ 1"));
        }
        if !(0.0..=1.0).contains(&self.retry.jitter) {
            return Err(format!("site {n}: retry_jitter must be within 0..1"));
        }
        if !(self.recover_step > 0.0 && self.recover_step <= 1.0) {
            return Err(format!("site {n}: recover_step must be within (0, 1]"));
        }
        let t = &self.timeouts;
        let ms = Duration::from_millis;
        let day = Duration::from_secs(24 * 3600);
        for (name, value, lo, hi) in [
            ("connect_timeout", t.connect, ms(1), day),
            ("banner_timeout", t.banner, ms(1), day),
            ("ehlo_timeout", t.ehlo, ms(1), day),
            ("starttls_timeout", t.starttls, ms(1), day),
            ("command_timeout", t.command, ms(1), day),
            ("data_timeout", t.data, ms(1), day),
            ("idle_timeout", t.idle, ms(1), day),
            ("retry_initial", self.retry.initial, ms(1), 7 * day),
            ("retry_max", self.retry.max, self.retry.initial, 7 * day),
            ("expiry", self.expiry, ms(1), 365 * day),
            ("recover_interval", self.recover_interval, ms(1), day),
        ] {
            if value < lo || value > hi {
                return Err(format!(
                    "site {n}: {name} must be between {lo:?} and {hi:?} (got {value:?})"
                ));
            }
        }
        for r in &self.reply_rules {
            r.validate(n)?;
        }
        Ok(())
    }

    /// All policies: shipped defaults with `overrides` applied; unknown names add sites that
    /// start from the `default` policy.
    pub fn resolve(
        overrides: &BTreeMap<String, SitePolicyConfig>,
    ) -> Result<BTreeMap<String, SitePolicy>, String> {
        let mut all = Self::shipped_defaults();
        for (name, o) in overrides {
            let entry = all.entry(name.clone()).or_insert_with(|| Self::base(name));
            entry.apply(o);
        }
        for p in all.values() {
            p.validate()?;
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_cover_the_named_providers() {
        let all = SitePolicy::shipped_defaults();
        for name in [
            "google", "yahoo", "yahoo-jp", "docomo", "au", "softbank", "icloud", "outlook",
            "default",
        ] {
            assert!(all.contains_key(name), "{name}");
            all[name].validate().expect("valid");
        }
        assert_eq!(all["google"].max_connections, 5);
        assert_eq!(all["google"].max_messages_per_connection, 50);
        assert_eq!(all["yahoo"].max_messages_per_connection, 20);
        assert_eq!(all["yahoo-jp"].rate, Rate::per_second(10.0));
        assert!(all["docomo"].max_messages_per_connection <= 100);
        assert_eq!(all["au"].max_message_bytes, Some(3_000_000));
        assert_eq!(all["softbank"].max_message_bytes, Some(1_000_000));
        assert_eq!(all["google"].max_message_bytes, None);
    }

    #[test]
    fn overrides_apply_field_by_field_and_add_sites() {
        let toml = r#"
            [google]
            rate = "200/s"
            max_connections = 3
            retry_initial = "1s"
            max_message_bytes = 20000000
            [softbank]
            max_message_bytes = 0
            [newsite]
            mx_suffixes = ["mx.new.test"]
        "#;
        let o: BTreeMap<String, SitePolicyConfig> = toml::from_str(toml).expect("parses");
        let all = SitePolicy::resolve(&o).expect("valid");
        let g = &all["google"];
        assert_eq!(g.rate, Rate::per_second(200.0));
        assert_eq!(g.max_connections, 3);
        assert_eq!(
            g.max_messages_per_connection, 50,
            "untouched fields keep defaults"
        );
        assert_eq!(g.retry.initial, Duration::from_secs(1));
        assert_eq!(g.max_message_bytes, Some(20_000_000));
        assert_eq!(all["softbank"].max_message_bytes, None, "0 lifts the limit");
        assert_eq!(all["au"].max_message_bytes, Some(3_000_000));
        assert_eq!(all["newsite"].mx_suffixes, vec!["mx.new.test".to_owned()]);
        assert_eq!(
            all["newsite"].max_connections,
            all["default"].max_connections
        );
    }

    #[test]
    fn bad_overrides_are_rejected_with_the_field_named() {
        let bad: BTreeMap<String, SitePolicyConfig> =
            toml::from_str("[google]\nmax_connections = 0\n").expect("parses");
        let err = SitePolicy::resolve(&bad).expect_err("invalid");
        assert!(err.contains("max_connections"), "{err}");
        let unknown = toml::from_str::<BTreeMap<String, SitePolicyConfig>>("[google]\nspeed = 1\n");
        assert!(unknown.is_err());
        let bad_rate =
            toml::from_str::<BTreeMap<String, SitePolicyConfig>>("[google]\nrate = \"fast\"\n");
        assert!(bad_rate.expect_err("bad rate").to_string().contains("rate"));
    }
}
