//! Recipient mixes for the benchmark: which sites the jobs go to, how the engine limits each
//! site, and how the sink behaves for it; plus each site's achieved rate from the sink's
//! per-profile, per-second counts.
//!
//! Every site gets its own MX host on its own loopback address (`127.0.0.2`, `.3`, …), all
//! on one port, so the sink can give each a provider profile (reply texts, rate limit,
//! messages per connection) and count it apart. The `plain` mix (the default benchmark) is
//! one sink listener at `127.0.0.1` for every site instead, as the benchmark always had.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::sink::ProviderKind;

/// How much faster than the engine's limit the sink lets a throttled site go before it
/// answers with the provider's throttle reply: a well-behaved engine never sees one.
pub const SINK_HEADROOM: f64 = 1.2;

/// One destination site of a mix.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSpec {
    /// Engine site name and sink profile name.
    pub name: String,
    /// The recipient domain (`mx.<domain>` is its MX host).
    pub domain: String,
    /// Share of the recipients.
    pub weight: u32,
    /// Address of its MX host (and its sink listener).
    pub mx_ip: Ipv4Addr,
    /// The provider the sink emulates.
    pub kind: ProviderKind,
    /// Engine rate limit, messages per second (`None` = unlimited).
    pub limit_per_sec: Option<u32>,
    /// Engine messages per connection (the provider's per-session cap, enforced by the sink
    /// too).
    pub per_conn: u32,
}

/// The realistic provider mix of the performance issue: google 50%, yahoo 20%, docomo, au
/// and softbank 5% each, other 15%; yahoo limited to 2,000/s and the carriers to 300/s each.
pub fn realistic() -> Vec<SiteSpec> {
    let site = |n: u8, name: &str, domain: &str, weight, kind, limit, per_conn| SiteSpec {
        name: name.to_owned(),
        domain: domain.to_owned(),
        weight,
        mx_ip: Ipv4Addr::new(127, 0, 0, n),
        kind,
        limit_per_sec: limit,
        per_conn,
    };
    vec![
        site(
            2,
            "google",
            "gmail.test",
            50,
            ProviderKind::Google,
            None,
            50,
        ),
        site(
            3,
            "yahoo",
            "yahoo.test",
            20,
            ProviderKind::Yahoo,
            Some(2000),
            20,
        ),
        site(
            4,
            "docomo",
            "docomo.test",
            5,
            ProviderKind::Docomo,
            Some(300),
            100,
        ),
        site(5, "au", "au.test", 5, ProviderKind::Au, Some(300), 100),
        site(
            6,
            "softbank",
            "softbank.test",
            5,
            ProviderKind::Softbank,
            Some(300),
            100,
        ),
        site(7, "other", "other.test", 15, ProviderKind::Plain, None, 100),
    ]
}

/// The recipient domains and weights of `sites`, for the enqueuer.
pub fn domains(sites: &[SiteSpec]) -> Vec<(String, u32)> {
    sites.iter().map(|s| (s.domain.clone(), s.weight)).collect()
}

/// The DNS zone: `<domain> MX 10 mx.<domain>`, `mx.<domain> A <mx_ip>`.
pub fn zone(sites: &[SiteSpec]) -> String {
    sites
        .iter()
        .map(|s| {
            format!(
                "{d} MX 10 mx.{d}\nmx.{d} A {ip}\n",
                d = s.domain,
                ip = s.mx_ip
            )
        })
        .collect()
}

/// The engine's `[sites.*]` tables. Throttled sites hold about two seconds of their rate in
/// memory (so they cannot take the whole in-flight budget from the others); deferrals, should
/// the sink ever throttle, come back after 2 s instead of the production 10 min.
pub fn engine_sites(sites: &[SiteSpec], connections: u32) -> String {
    let mut out = String::new();
    for s in sites {
        let (rate, capacity) = match s.limit_per_sec {
            Some(r) => (format!("\"{r}/s\""), (r * 2).max(500)),
            None => ("\"unlimited\"".to_owned(), 20_000),
        };
        out.push_str(&format!(
            "[sites.{name}]\nmx_suffixes = [\"mx.{domain}\"]\ndomains = []\nrate = {rate}\n\
             max_connections = {connections}\nmax_messages_per_connection = {per_conn}\n\
             queue_capacity = {capacity}\nretry_initial = \"2s\"\nretry_factor = 1.0\n\n",
            name = s.name,
            domain = s.domain,
            per_conn = s.per_conn,
        ));
    }
    out
}

/// The sink's `--listen` values for `sites` on `port`: the provider's profile, its per-session
/// cap, and for throttled sites a rate limit [`SINK_HEADROOM`] above the engine's.
pub fn sink_listens(sites: &[SiteSpec], port: u16) -> Vec<String> {
    sites
        .iter()
        .map(|s| {
            let mut spec = format!(
                "{ip}:{port}={kind},name={name},per-conn={per_conn}",
                ip = s.mx_ip,
                kind = s.kind,
                name = s.name,
                per_conn = s.per_conn,
            );
            if let Some(r) = s.limit_per_sec {
                spec.push_str(&format!(
                    ",rate={}",
                    (f64::from(r) * SINK_HEADROOM).ceil() as u64
                ));
            }
            spec
        })
        .collect()
}

/// One site's figures in a mix run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteRate {
    /// Site name.
    pub name: String,
    /// Messages the sink accepted for it.
    pub delivered: u64,
    /// Messages per second over the site's own active window (see [`window_rate`]).
    pub per_sec: f64,
    /// The engine's limit (`null` = unlimited).
    pub limit_per_sec: Option<u32>,
    /// Seconds from its first to its last acceptance (whole seconds, both ends counted).
    pub active_s: u64,
    /// Most messages accepted in any one-second window.
    pub max_in_any_second: u64,
    /// Throttle replies the sink sent it (0 when the engine kept under the limit).
    pub throttled: u64,
}

/// The first and last non-zero entries of `per_second`.
fn active_span(per_second: &[u64]) -> Option<(usize, usize)> {
    Some((
        per_second.iter().position(|&n| n > 0)?,
        per_second.iter().rposition(|&n| n > 0)?,
    ))
}

/// Mean of the whole seconds strictly between the first and the last non-zero second (both
/// partial); `None` when fewer than three seconds are active.
pub fn steady_rate(per_second: &[u64]) -> Option<f64> {
    let (first, last) = active_span(per_second)?;
    if last < first + 2 {
        return None;
    }
    let mid = &per_second[first + 1..last];
    Some(mid.iter().sum::<u64>() as f64 / mid.len() as f64)
}

/// A site's rate over its own active window (its first to its last acceptance), so a site
/// that finished early is not diluted by the time the slow sites kept the run going: the
/// steady rate when at least three seconds are active, else everything over the active
/// seconds. Returns `(per_sec, active_s)`.
pub fn window_rate(per_second: &[u64]) -> (f64, u64) {
    let Some((first, last)) = active_span(per_second) else {
        return (0.0, 0);
    };
    let active = (last - first + 1) as u64;
    let rate = steady_rate(per_second)
        .unwrap_or_else(|| per_second[first..=last].iter().sum::<u64>() as f64 / active as f64);
    (rate, active)
}

/// Element-wise sum of several per-second series.
pub fn sum_series<'a>(series: impl IntoIterator<Item = &'a [u64]>) -> Vec<u64> {
    let mut total: Vec<u64> = Vec::new();
    for s in series {
        if total.len() < s.len() {
            total.resize(s.len(), 0);
        }
        for (t, n) in total.iter_mut().zip(s) {
            *t += n;
        }
    }
    total
}

/// The `per_second` array of profile `name` in the sink's `/stats` JSON.
pub fn profile_series(stats: &serde_json::Value, name: &str) -> Vec<u64> {
    stats["profiles"][name]["per_second"]
        .as_array()
        .map(|a| a.iter().map(|n| n.as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// Each site's figures from the sink's `/stats` JSON.
pub fn site_rates(stats: &serde_json::Value, sites: &[SiteSpec]) -> Vec<SiteRate> {
    sites
        .iter()
        .map(|s| {
            let p = &stats["profiles"][s.name.as_str()];
            let (per_sec, active_s) = window_rate(&profile_series(stats, &s.name));
            SiteRate {
                name: s.name.clone(),
                delivered: p["accepted"].as_u64().unwrap_or(0),
                per_sec: (per_sec * 10.0).round() / 10.0,
                limit_per_sec: s.limit_per_sec,
                active_s,
                max_in_any_second: p["max_in_any_second"].as_u64().unwrap_or(0),
                throttled: p["throttled"].as_u64().unwrap_or(0),
            }
        })
        .collect()
}

/// The per-site table.
pub fn sites_table(rates: &[SiteRate]) -> String {
    let mut out = format!(
        "{:<10} {:>10} {:>10} {:>10} {:>9} {:>11} {:>9}\n",
        "site", "delivered", "msg/s", "limit/s", "active s", "max in 1 s", "throttled"
    );
    for r in rates {
        let limit = r
            .limit_per_sec
            .map_or_else(|| "unlimited".to_owned(), |l| l.to_string());
        out.push_str(&format!(
            "{:<10} {:>10} {:>10.0} {:>10} {:>9} {:>11} {:>9}\n",
            r.name, r.delivered, r.per_sec, limit, r.active_s, r.max_in_any_second, r.throttled
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn realistic_mix_matches_the_issue() {
        let sites = realistic();
        let total: u32 = sites.iter().map(|s| s.weight).sum();
        assert_eq!(total, 100);
        let w = |n: &str| sites.iter().find(|s| s.name == n).unwrap().weight;
        assert_eq!((w("google"), w("yahoo"), w("other")), (50, 20, 15));
        assert_eq!(w("docomo") + w("au") + w("softbank"), 15);
        let ips: std::collections::BTreeSet<_> = sites.iter().map(|s| s.mx_ip).collect();
        assert_eq!(ips.len(), sites.len(), "one address per site");
    }

    #[test]
    fn config_zone_and_sink_agree() {
        let sites = realistic();
        let toml = engine_sites(&sites, 8);
        assert!(toml.contains(
            "[sites.yahoo]\nmx_suffixes = [\"mx.yahoo.test\"]\ndomains = []\nrate = \"2000/s\""
        ));
        assert!(toml.contains(
            "[sites.google]\nmx_suffixes = [\"mx.gmail.test\"]\ndomains = []\nrate = \"unlimited\""
        ));
        assert!(toml.contains("queue_capacity = 4000"));
        assert!(zone(&sites).contains("mx.au.test A 127.0.0.5\n"));
        let listens = sink_listens(&sites, 2525);
        assert_eq!(listens[0], "127.0.0.2:2525=google,name=google,per-conn=50");
        assert_eq!(
            listens[1],
            "127.0.0.3:2525=yahoo,name=yahoo,per-conn=20,rate=2400"
        );
        assert_eq!(
            domains(&sites)[5],
            ("other.test".to_owned(), 15),
            "enqueuer domains follow the sites"
        );
    }

    #[test]
    fn steady_and_window_rates() {
        assert_eq!(steady_rate(&[]), None);
        assert_eq!(steady_rate(&[0, 5, 9, 0]), None, "two active seconds");
        assert_eq!(
            steady_rate(&[0, 5, 300, 300, 302, 40, 0]),
            Some(902.0 / 3.0)
        );
        // An idle gap inside the window counts against the rate.
        assert_eq!(steady_rate(&[1, 10, 0, 10, 1]), Some(20.0 / 3.0));
        assert_eq!(window_rate(&[0, 0, 0]), (0.0, 0));
        assert_eq!(window_rate(&[0, 6, 4, 0]), (5.0, 2));
        let (r, active) = window_rate(&[0, 0, 100, 2000, 2000, 2000, 7, 0, 0]);
        assert_eq!((r, active), (2000.0, 5));
    }

    #[test]
    fn site_rates_from_sink_stats() {
        let stats = serde_json::json!({
            "profiles": {
                "google": {"accepted": 30, "throttled": 0, "max_in_any_second": 20,
                           "per_second": [0, 5, 20, 5, 0, 0, 0, 0]},
                "docomo": {"accepted": 1200, "throttled": 2, "max_in_any_second": 301,
                           "per_second": [0, 0, 100, 300, 300, 300, 200]},
            }
        });
        let sites: Vec<SiteSpec> = realistic()
            .into_iter()
            .filter(|s| s.name == "google" || s.name == "docomo")
            .collect();
        let r = site_rates(&stats, &sites);
        assert_eq!(r[0].name, "google");
        assert_eq!((r[0].delivered, r[0].per_sec, r[0].active_s), (30, 20.0, 3));
        assert_eq!(r[0].limit_per_sec, None);
        assert_eq!(
            (r[1].per_sec, r[1].limit_per_sec, r[1].throttled),
            (300.0, Some(300), 2)
        );
        let table = sites_table(&r);
        assert!(table.contains("unlimited") && table.contains("docomo"));
        assert_eq!(sum_series([&[1u64, 2][..], &[3, 4, 5][..]]), vec![4, 6, 5]);
        assert_eq!(profile_series(&stats, "nope"), Vec::<u64>::new());
    }
}
