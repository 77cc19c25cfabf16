//! Drain rules: `hk:drain`, a hash of operator orders to end a site's or a campaign's queued
//! jobs unsent, written by the admin CLI (`hikyaku queue drain`) and applied by every engine
//! when it routes a job.
//!
//! A rule covers the jobs first enqueued at or before the moment it was given (`before_ms`), so
//! it is one-shot in effect: jobs of later campaigns pass, and the rule can stay until an
//! operator clears it. Field `site:<name>` or `campaign:<id>`; value `<status>|<before_ms>|<reason>`.

use crate::EventStatus;

/// What a drain rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every job routed to this site.
    Site(String),
    /// Every job of this campaign.
    Campaign(u64),
}

impl Scope {
    /// The hash field of the rule.
    pub fn field(&self) -> String {
        match self {
            Scope::Site(s) => format!("site:{s}"),
            Scope::Campaign(c) => format!("campaign:{c}"),
        }
    }

    /// Parses a hash field.
    pub fn parse(field: &str) -> Option<Scope> {
        if let Some(site) = field.strip_prefix("site:") {
            return (!site.is_empty()).then(|| Scope::Site(site.to_owned()));
        }
        field
            .strip_prefix("campaign:")?
            .parse()
            .ok()
            .map(Scope::Campaign)
    }
}

/// An order to end matching jobs unsent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// [`EventStatus::Bounced`] or [`EventStatus::Cancelled`].
    pub status: EventStatus,
    /// Jobs first enqueued at or before this time (ms since the epoch) are drained.
    pub before_ms: u64,
    /// The operator's reason, recorded as the event's text.
    pub reason: String,
}

impl Rule {
    /// Whether a job first enqueued at `queued_ms` is drained by this rule.
    pub fn covers(&self, queued_ms: u64) -> bool {
        queued_ms <= self.before_ms
    }

    /// The hash value.
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}",
            self.status.as_str(),
            self.before_ms,
            self.reason
        )
    }

    /// Parses a hash value; `None` for anything else than a bounce or cancel rule.
    pub fn parse(value: &str) -> Option<Rule> {
        let mut it = value.splitn(3, '|');
        let status = match it.next()? {
            "bounced" => EventStatus::Bounced,
            "cancelled" => EventStatus::Cancelled,
            _ => return None,
        };
        let before_ms = it.next()?.parse().ok()?;
        Some(Rule {
            status,
            before_ms,
            reason: it.next().unwrap_or_default().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_scopes_round_trip() {
        let r = Rule {
            status: EventStatus::Bounced,
            before_ms: 1_700_000_000_000,
            reason: "domain retired | per customer".into(),
        };
        assert_eq!(Rule::parse(&r.encode()), Some(r.clone()));
        assert!(r.covers(1_700_000_000_000) && !r.covers(1_700_000_000_001));
        for s in [Scope::Site("yahoo".into()), Scope::Campaign(42)] {
            assert_eq!(Scope::parse(&s.field()), Some(s));
        }
        assert_eq!(Rule::parse("delivered|1|x"), None);
        assert_eq!(Rule::parse("bounced|x|y"), None);
        assert_eq!(Scope::parse("site:"), None);
        assert_eq!(Scope::parse("campaign:x"), None);
    }
}
