//! Adaptive traffic shaping: a site's reply rules and what they do to its rate.
//!
//! Each site policy carries rules matched against negative replies (as
//! `"<code> <enhanced> <text>"`, lines joined by spaces): `cut` multiplies the rate the site
//! was accepting at (what the provider let through) by `factor`, at most once a second (a
//! pipelined window brings a burst of the same reply); `suspend` stops the site for
//! `duration`; `block` does the same and raises `hikyaku_site_blocked` for an operator.
//! Between penalties the rate recovers additively — `recover_step` of the cut rate every
//! `recover_interval` (AIMD) — until it is back where it was before the first cut, and the cap
//! is dropped.
//!
//! A suspension teaches the site's sustainable rate: the rate the site was accepting when the
//! provider suspended it is more than the provider takes. So the site comes back from a
//! suspension at `factor` of that rate (not at its configured rate, which would be suspended
//! again at once), climbs by the same additive steps, and holds at [`HOLD`] of the learned
//! rate instead of dropping the cap. The learned rate is kept for [`LEARN_KEEP`] without a
//! penalty (a later suspension lowers it), then forgotten and the climb goes on. It is
//! published in `hk:site:events` (`learn`) and `hikyaku_site_sustainable_rate`.
//!
//! The state machine lives here, free of I/O;
//! [`crate::site`] feeds it replies and clock ticks and applies the changes.
//!
//! `421 Max message per connection reached` (reconnect, no penalty) and `450 4.2.1` (defer
//! that recipient only) need no rule: the classifier already treats them so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::units::Span;

/// What a matching reply does to the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Multiply the site's rate by `factor`.
    Cut,
    /// Stop sending to the site for `duration`.
    Suspend,
    /// Stop for `duration` and alert: the provider says retrying will not succeed.
    Block,
}

/// One reply rule of a site policy (`[[sites.<name>.reply_rules]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyRule {
    /// Regular expression matched against `"<code> <enhanced> <text>"` of a negative reply.
    pub pattern: String,
    /// What to do.
    pub action: RuleAction,
    /// For `cut`: the new rate is the old one times this (0 < factor < 1). Default 0.5.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// For `suspend` and `block`: how long. Default 2 h.
    #[serde(default)]
    pub duration: Option<Span>,
}

fn default_factor() -> f64 {
    0.5
}

impl ReplyRule {
    /// A `cut` rule.
    pub fn cut(pattern: &str, factor: f64) -> Self {
        ReplyRule {
            pattern: pattern.into(),
            action: RuleAction::Cut,
            factor,
            duration: None,
        }
    }

    /// A `suspend` or `block` rule.
    pub fn stop(pattern: &str, action: RuleAction, duration: Duration) -> Self {
        ReplyRule {
            pattern: pattern.into(),
            action,
            factor: default_factor(),
            duration: Some(Span(duration)),
        }
    }

    /// Checks the rule can work.
    pub fn validate(&self, site: &str) -> Result<(), String> {
        Regex::new(&self.pattern)
            .map_err(|e| format!("site {site}: reply rule {:?}: {e}", self.pattern))?;
        // Suspend rules use it too: the share of the learned rate a site comes back at.
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(format!(
                "site {site}: reply rule {:?}: factor must be within (0, 1)",
                self.pattern
            ));
        }
        Ok(())
    }

    fn duration(&self) -> Duration {
        self.duration.map_or(Duration::from_secs(2 * 3600), |s| s.0)
    }
}

/// Lowest rate a cut leaves, msg/s.
pub const MIN_RATE: f64 = 1.0;

/// Replies within this long of a cut belong to the same burst.
const CUT_GAP_MS: u64 = 1_000;

/// Share of the learned sustainable rate a site holds at after a suspension.
pub const HOLD: f64 = 0.9;

/// How long a learned sustainable rate is kept without another penalty.
pub const LEARN_KEEP: Duration = Duration::from_secs(24 * 3600);

/// After a suspension ends, how long before another one teaches a new rate (the accepting
/// rate is measured over seconds; just after a return it reads near zero).
const WARM_MS: u64 = 5_000;

/// A change the site must apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The rate cap went down.
    Cut {
        /// Rate before, msg/s.
        from: f64,
        /// Rate now, msg/s.
        to: f64,
    },
    /// The site stops until `until_ms` (ms since the epoch).
    Suspend {
        /// End of the suspension.
        until_ms: u64,
        /// A `block` rule: alert an operator.
        blocked: bool,
        /// A new suspension (not an extension): the rate the site comes back at, and the
        /// sustainable rate learned from it, msg/s.
        learned: Option<Learned>,
    },
    /// The cap went up by a step (`Some`), or is gone (`None`).
    Recover {
        /// The new cap.
        to: Option<f64>,
    },
}

/// What a suspension taught.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learned {
    /// The rate cap the site comes back at, msg/s.
    pub resume: f64,
    /// The sustainable rate: what the site accepted when it was suspended, msg/s.
    pub sustainable: f64,
}

#[derive(Debug, Default)]
struct State {
    cap: Option<f64>,
    /// The rate in force before the first cut, which recovery climbs back to.
    before: f64,
    step: f64,
    last_cut_ms: u64,
    last_step_ms: u64,
    /// The sustainable rate a suspension taught (recovery holds below it), and when.
    learned: Option<(f64, u64)>,
}

/// A site's compiled rules and adaptive state.
#[derive(Debug)]
pub struct Adaptive {
    rules: Vec<(Regex, ReplyRule)>,
    interval_ms: u64,
    step_fraction: f64,
    state: Mutex<State>,
    /// End of the current suspension, ms since the epoch: read without the lock (checked per
    /// job offered), written under it.
    suspended_until: AtomicU64,
}

impl Adaptive {
    /// Compiles `rules` (validated with the policy, so a bad pattern is skipped here).
    pub fn new(rules: &[ReplyRule], recover_interval: Duration, recover_step: f64) -> Self {
        Adaptive {
            rules: rules
                .iter()
                .filter_map(|r| Regex::new(&r.pattern).ok().map(|re| (re, r.clone())))
                .collect(),
            interval_ms: (recover_interval.as_millis() as u64).max(1),
            step_fraction: recover_step.clamp(0.01, 1.0),
            state: Mutex::new(State::default()),
            suspended_until: AtomicU64::new(0),
        }
    }

    /// Whether the site has rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rate cap in force, msg/s.
    pub fn cap(&self) -> Option<f64> {
        self.lock().cap
    }

    /// End of the current suspension, ms since the epoch (0: none yet).
    pub fn suspended_until_ms(&self) -> u64 {
        self.suspended_until.load(Ordering::Relaxed)
    }

    /// The sustainable rate learned from the last suspension, msg/s, while it is kept.
    pub fn sustainable(&self) -> Option<f64> {
        self.lock().learned.map(|(rate, _)| rate)
    }

    /// A negative `reply` arrived while the site accepted `current` msg/s.
    pub fn on_reply(&self, reply: &str, current: f64, now_ms: u64) -> Option<Change> {
        let (_, rule) = self.rules.iter().find(|(re, _)| re.is_match(reply))?;
        let mut s = self.lock();
        match rule.action {
            RuleAction::Cut => {
                if s.cap.is_some() && now_ms.saturating_sub(s.last_cut_ms) < CUT_GAP_MS {
                    return None;
                }
                let from = match s.cap {
                    Some(cap) => cap.min(current.max(MIN_RATE)),
                    None => current.max(MIN_RATE),
                };
                let to = (from * rule.factor).max(MIN_RATE);
                if s.cap.is_none() {
                    s.before = from;
                }
                s.step = (to * self.step_fraction).max(MIN_RATE);
                s.cap = Some(to);
                s.last_cut_ms = now_ms;
                s.last_step_ms = now_ms;
                Some(Change::Cut { from, to })
            }
            RuleAction::Suspend | RuleAction::Block => {
                let until_ms = now_ms.saturating_add(rule.duration().as_millis() as u64);
                let prev = self.suspended_until.fetch_max(until_ms, Ordering::Relaxed);
                if prev >= until_ms {
                    return None;
                }
                let fresh = prev <= now_ms;
                let block = rule.action == RuleAction::Block;
                // Shortly after the last suspension ended the accepting rate is not measured
                // yet (the meter is still warming up), and a provider often defers again at
                // once: the rate learned then stands, the site comes back at the same cap.
                let warming = s
                    .learned
                    .is_some_and(|(_, ended_ms)| now_ms < ended_ms.saturating_add(WARM_MS));
                if !fresh || warming || block {
                    // An extension (or a block, which says nothing about rate): a cap in force
                    // climbs only once the site sends again.
                    if s.cap.is_some() {
                        s.last_cut_ms = s.last_cut_ms.max(until_ms);
                        s.last_step_ms = s.last_step_ms.max(until_ms);
                    }
                    if let Some((rate, ended_ms)) = s.learned {
                        s.learned = Some((rate, ended_ms.max(until_ms)));
                    }
                }
                // A suspension that starts now teaches the rate the site was accepting at:
                // the provider takes less. Come back at `factor` of it and climb from there
                // once the suspension ends.
                let learned = (fresh && !warming && !block).then(|| {
                    let from = match s.cap {
                        Some(cap) => cap.min(current.max(MIN_RATE)),
                        None => current.max(MIN_RATE),
                    };
                    let to = (from * rule.factor).max(MIN_RATE);
                    s.learned = Some((from, until_ms));
                    s.before = s.before.max(from);
                    s.step = (to * self.step_fraction).max(MIN_RATE);
                    s.cap = Some(to);
                    s.last_cut_ms = until_ms;
                    s.last_step_ms = until_ms;
                    Learned {
                        resume: to,
                        sustainable: from,
                    }
                });
                Some(Change::Suspend {
                    until_ms,
                    blocked: rule.action == RuleAction::Block,
                    learned,
                })
            }
        }
    }

    /// Recovery: one step up once an interval passed without a cut.
    pub fn tick(&self, now_ms: u64) -> Option<Change> {
        let mut s = self.lock();
        let cap = s.cap?;
        if now_ms.saturating_sub(s.last_step_ms) < self.interval_ms
            || now_ms.saturating_sub(s.last_cut_ms) < self.interval_ms
        {
            return None;
        }
        s.last_step_ms = now_ms;
        if let Some((rate, at_ms)) = s.learned {
            if now_ms.saturating_sub(at_ms) >= LEARN_KEEP.as_millis() as u64 {
                // Kept long enough without a penalty: the provider may take more now.
                s.learned = None;
            } else {
                let hold = (rate * HOLD).max(MIN_RATE);
                if cap >= hold {
                    return None;
                }
                let up = (cap + s.step).min(hold);
                s.cap = Some(up);
                return Some(Change::Recover { to: Some(up) });
            }
        }
        let up = cap + s.step;
        if up >= s.before {
            s.cap = None;
            Some(Change::Recover { to: None })
        } else {
            s.cap = Some(up);
            Some(Change::Recover { to: Some(up) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gmail() -> Adaptive {
        Adaptive::new(
            &[
                ReplyRule::cut(r"^421 4\.7\.28", 0.5),
                ReplyRule::stop(r"\[TSS04\]", RuleAction::Suspend, Duration::from_secs(60)),
                ReplyRule::stop(r"\[TS03\]", RuleAction::Block, Duration::from_secs(600)),
            ],
            Duration::from_secs(10),
            0.1,
        )
    }

    #[test]
    fn cut_once_per_interval_then_recover_additively_and_drop_the_cap() {
        let a = gmail();
        assert_eq!(a.on_reply("550 5.1.1 no such user", 100.0, 0), None);
        assert_eq!(
            a.on_reply("421 4.7.28 unusual rate", 100.0, 1_000),
            Some(Change::Cut {
                from: 100.0,
                to: 50.0
            })
        );
        assert_eq!(
            a.on_reply("421 4.7.28 again", 50.0, 1_500),
            None,
            "same burst"
        );
        assert_eq!(
            a.on_reply("421 4.7.28 later", 40.0, 2_500),
            Some(Change::Cut {
                from: 40.0,
                to: 20.0
            }),
            "from what the site accepted"
        );
        assert_eq!(a.cap(), Some(20.0));
        assert_eq!(a.tick(12_000), None, "not an interval since the cut");
        // +10% of the cut rate (20) per interval, until the rate before the first cut (100).
        assert_eq!(a.tick(12_500), Some(Change::Recover { to: Some(22.0) }));
        assert_eq!(a.tick(13_000), None);
        for t in 1..=40 {
            a.tick(12_500 + t * 10_000);
        }
        assert_eq!(a.cap(), None, "back to where it was: no cap");
        assert_eq!(a.tick(200_000), None);
    }

    #[test]
    fn suspend_and_block_extend_only() {
        let a = gmail();
        assert_eq!(
            a.on_reply(
                "421 4.7.0 [TSS04] Messages from 192.0.2.1 deferred",
                10.0,
                1_000
            ),
            Some(Change::Suspend {
                until_ms: 61_000,
                blocked: false,
                learned: Some(Learned {
                    resume: 5.0,
                    sustainable: 10.0
                })
            })
        );
        assert_eq!(
            a.on_reply("421 4.7.0 [TSS04] again", 10.0, 2_000),
            Some(Change::Suspend {
                until_ms: 62_000,
                blocked: false,
                learned: None
            }),
            "extended, nothing learnt"
        );
        assert_eq!(
            a.on_reply(
                "421 4.7.1 [TS03] All messages permanently deferred",
                10.0,
                3_000
            ),
            Some(Change::Suspend {
                until_ms: 603_000,
                blocked: true,
                learned: None
            })
        );
        assert_eq!(
            a.on_reply("421 4.7.0 [TSS04] short", 10.0, 4_000),
            None,
            "shorter than the block"
        );
        assert_eq!(a.suspended_until_ms(), 603_000);
    }

    #[test]
    fn a_suspension_teaches_the_rate_to_come_back_at_and_hold_below() {
        let a = gmail();
        // Configured far above what the provider takes: suspended while accepting 40 msg/s.
        let Some(Change::Suspend {
            until_ms,
            learned: Some(learned),
            ..
        }) = a.on_reply("421 4.7.0 [TSS04] deferred", 40.0, 1_000)
        else {
            panic!("a new suspension teaches a rate");
        };
        assert_eq!(until_ms, 61_000);
        assert_eq!(
            learned,
            Learned {
                resume: 20.0,
                sustainable: 40.0
            }
        );
        assert_eq!(
            a.cap(),
            Some(20.0),
            "comes back at half, not at its configured rate"
        );
        assert_eq!(a.sustainable(), Some(40.0));
        assert_eq!(a.tick(30_000), None, "no climb while suspended");
        assert_eq!(
            a.tick(61_000 + 10_000),
            Some(Change::Recover { to: Some(22.0) })
        );
        let mut t = 71_000;
        for _ in 0..20 {
            t += 10_000;
            a.tick(t);
        }
        assert_eq!(a.cap(), Some(36.0), "holds at 90% of the learned rate");
        // Overestimated: suspended again at the hold, it learns the lower rate.
        let Some(Change::Suspend {
            learned: Some(again),
            ..
        }) = a.on_reply("421 4.7.0 [TSS04] deferred", 50.0, t)
        else {
            panic!("suspended again");
        };
        assert_eq!(again.sustainable, 36.0, "from the cap in force");
        assert_eq!(a.cap(), Some(18.0));
        // Kept a day without a penalty, then forgotten: the climb goes on to the old rate.
        let day = LEARN_KEEP.as_millis() as u64;
        a.tick(t + day + 60_000);
        assert_eq!(a.sustainable(), None);
    }

    #[test]
    fn a_suspension_right_after_the_last_keeps_what_was_learned_and_a_block_teaches_nothing() {
        let a = gmail();
        let Some(Change::Suspend {
            learned: Some(first),
            ..
        }) = a.on_reply("421 4.7.0 [TSS04] deferred", 40.0, 1_000)
        else {
            panic!("suspended");
        };
        assert_eq!(first.sustainable, 40.0);
        // Back at 61 s; deferred again a second later, while the meter reads 2 msg/s.
        assert_eq!(
            a.on_reply("421 4.7.0 [TSS04] deferred", 2.0, 62_000),
            Some(Change::Suspend {
                until_ms: 122_000,
                blocked: false,
                learned: None
            })
        );
        assert_eq!(a.sustainable(), Some(40.0), "not 2 msg/s for a day");
        assert_eq!(a.cap(), Some(20.0), "comes back at the same cap");
        assert_eq!(a.tick(125_000), None, "no climb while suspended");
        // A block says nothing about rate.
        let b = gmail();
        let Some(Change::Suspend { learned, .. }) =
            b.on_reply("421 4.7.1 [TS03] permanently deferred", 40.0, 1_000)
        else {
            panic!("blocked");
        };
        assert_eq!(learned, None);
        assert_eq!((b.cap(), b.sustainable()), (None, None));
    }

    #[test]
    fn rules_are_validated() {
        assert!(ReplyRule::cut("(", 0.5).validate("x").is_err());
        assert!(ReplyRule::cut("ok", 1.5).validate("x").is_err());
        assert!(ReplyRule::cut("ok", 0.5).validate("x").is_ok());
        let mut suspend = ReplyRule::stop("ok", RuleAction::Suspend, Duration::from_secs(60));
        assert!(suspend.validate("x").is_ok());
        suspend.factor = 1.0;
        assert!(
            suspend.validate("x").is_err(),
            "a suspension comes back below"
        );
    }
}
