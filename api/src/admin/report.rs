//! `campaign report`: one campaign's results by destination site, as CSV.
//!
//! Columns: `site, sent, delivered, deferred, bounced, bounced:<class>…, expired, cancelled,
//! late_bounces, complaints, unsubscribes, opens, unique_opens, clicks, unique_clicks`, one row
//! per site and a `TOTAL` row. `sent` counts messages the destination answered for good:
//! delivered, plus bounced except our own bounces (`drained`, `unencodable`: never sent);
//! `expired` (deferred, or held, past the expiry) and `cancelled` are apart;
//! `deferred` counts deferred attempts; `bounced:<class>` splits bounces by reason class
//! (`bad-mailbox`, `policy`, …); late bounces and complaints come back after delivery
//! (DSN/ARF); unsubscribes are one-click unsubscribes through this campaign's link; opens and
//! clicks need tracking. Reports after delivery are attributed to the site that took the
//! message.

use std::collections::{BTreeMap, BTreeSet};

use super::{AdminError, Ctx};
use crate::text::csv_field;

/// One site's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SiteFigures {
    /// Delivered.
    pub delivered: i64,
    /// Deferred attempts.
    pub deferred: i64,
    /// Bounced, by reason class.
    pub bounced: BTreeMap<String, i64>,
    /// Expired.
    pub expired: i64,
    /// Cancelled (campaign cancelled, drained, suppressed late).
    pub cancelled: i64,
    /// DSN bounces after delivery.
    pub late_bounces: i64,
    /// Complaints (ARF).
    pub complaints: i64,
    /// One-click unsubscribes.
    pub unsubscribes: i64,
    /// Opens.
    pub opens: i64,
    /// Distinct openers.
    pub unique_opens: i64,
    /// Clicks.
    pub clicks: i64,
    /// Distinct clickers.
    pub unique_clicks: i64,
}

/// Bounce reasons of our own making: the message never left.
const LOCAL_BOUNCES: [&str; 3] = ["drained", "unencodable", "not-sent"];

impl SiteFigures {
    fn local_bounces(&self) -> i64 {
        LOCAL_BOUNCES
            .iter()
            .filter_map(|r| self.bounced.get(*r))
            .sum()
    }

    fn bounced_total(&self) -> i64 {
        self.bounced.values().sum()
    }

    fn add(&mut self, o: &SiteFigures) {
        self.delivered += o.delivered;
        self.deferred += o.deferred;
        for (k, v) in &o.bounced {
            *self.bounced.entry(k.clone()).or_insert(0) += v;
        }
        self.expired += o.expired;
        self.cancelled += o.cancelled;
        self.late_bounces += o.late_bounces;
        self.complaints += o.complaints;
        self.unsubscribes += o.unsubscribes;
        self.opens += o.opens;
        self.unique_opens += o.unique_opens;
        self.clicks += o.clicks;
        self.unique_clicks += o.unique_clicks;
    }
}

/// A campaign's report: figures by site.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Campaign id.
    pub campaign: i64,
    /// By site.
    pub sites: BTreeMap<String, SiteFigures>,
}

/// Builds the report of campaign `id`.
pub async fn build(ctx: &Ctx, id: i64) -> Result<Report, AdminError> {
    super::campaigns::owner(ctx, id).await?;
    let mut sites: BTreeMap<String, SiteFigures> = BTreeMap::new();
    let ends: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT site, status, CASE WHEN status = 'bounced' THEN reason ELSE '' END, count(*) \
         FROM delivery_events WHERE campaign_id = $1 GROUP BY 1, 2, 3",
    )
    .bind(id)
    .fetch_all(&ctx.db)
    .await?;
    for (site, status, reason, n) in ends {
        let f = sites.entry(site).or_default();
        match status.as_str() {
            "delivered" => f.delivered += n,
            "bounced" => *f.bounced.entry(reason).or_insert(0) += n,
            "expired" => f.expired += n,
            _ => f.cancelled += n,
        }
    }
    let deferred: Vec<(String, i64)> = sqlx::query_as(
        "SELECT site, count(*) FROM deferral_events WHERE campaign_id = $1 GROUP BY 1",
    )
    .bind(id)
    .fetch_all(&ctx.db)
    .await?;
    for (site, n) in deferred {
        sites.entry(site).or_default().deferred += n;
    }
    let feedback: Vec<(Option<String>, String, i64)> = sqlx::query_as(
        "SELECT d.site, f.kind, count(*) FROM feedback_events f \
         LEFT JOIN delivery_events d ON d.campaign_id = f.campaign_id AND d.seq = f.seq \
           AND d.status = 'delivered' \
         WHERE f.campaign_id = $1 GROUP BY 1, 2",
    )
    .bind(id)
    .fetch_all(&ctx.db)
    .await?;
    for (site, kind, n) in feedback {
        let f = sites
            .entry(site.unwrap_or_else(|| "(unknown)".into()))
            .or_default();
        match kind.as_str() {
            "complaint" => f.complaints += n,
            _ => f.late_bounces += n,
        }
    }
    let tracking: Vec<(Option<String>, String, i64, i64)> = sqlx::query_as(
        "SELECT d.site, t.kind, count(*), count(DISTINCT t.subscriber_id) FROM tracking_events t \
         LEFT JOIN subscribers s ON s.id = t.subscriber_id \
         LEFT JOIN delivery_events d ON d.campaign_id = t.campaign_id AND d.rcpt = s.email \
           AND d.status = 'delivered' \
         WHERE t.campaign_id = $1 GROUP BY 1, 2",
    )
    .bind(id)
    .fetch_all(&ctx.db)
    .await?;
    for (site, kind, n, unique) in tracking {
        let f = sites
            .entry(site.unwrap_or_else(|| "(unknown)".into()))
            .or_default();
        match kind.as_str() {
            "open" => {
                f.opens += n;
                f.unique_opens += unique;
            }
            "click" => {
                f.clicks += n;
                f.unique_clicks += unique;
            }
            _ => f.unsubscribes += unique,
        }
    }
    Ok(Report {
        campaign: id,
        sites,
    })
}

impl Report {
    /// The report as CSV (header, one row per site, `TOTAL`); names through [`csv_field`]
    /// (a site named like a formula stays text).
    pub fn to_csv(&self) -> String {
        let classes: BTreeSet<&String> =
            self.sites.values().flat_map(|f| f.bounced.keys()).collect();
        let mut out = String::from("site,sent,delivered,deferred,bounced");
        for c in &classes {
            out.push(',');
            out.push_str(&csv_field(&format!("bounced:{c}")));
        }
        out.push_str(
            ",expired,cancelled,late_bounces,complaints,unsubscribes,opens,unique_opens,clicks,unique_clicks\n",
        );
        let mut total = SiteFigures::default();
        let rows = self
            .sites
            .iter()
            .map(|(s, f)| (s.as_str(), f.clone()))
            .collect::<Vec<_>>();
        for (_, f) in &rows {
            total.add(f);
        }
        for (site, f) in rows.iter().map(|(s, f)| (*s, f)).chain([("TOTAL", &total)]) {
            let bounced = f.bounced_total();
            let mut line = vec![
                csv_field(site),
                (f.delivered + bounced - f.local_bounces()).to_string(),
                f.delivered.to_string(),
                f.deferred.to_string(),
                bounced.to_string(),
            ];
            for c in &classes {
                line.push(f.bounced.get(*c).copied().unwrap_or(0).to_string());
            }
            for n in [
                f.expired,
                f.cancelled,
                f.late_bounces,
                f.complaints,
                f.unsubscribes,
                f.opens,
                f.unique_opens,
                f.clicks,
                f.unique_clicks,
            ] {
                line.push(n.to_string());
            }
            out.push_str(&line.join(","));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_column_per_bounce_class_and_a_total() {
        let mut sites = BTreeMap::new();
        let mut g = SiteFigures {
            delivered: 10,
            deferred: 3,
            ..Default::default()
        };
        g.bounced.insert("bad-mailbox".into(), 2);
        let mut y = SiteFigures {
            delivered: 5,
            expired: 1,
            ..Default::default()
        };
        y.bounced.insert("policy".into(), 1);
        sites.insert("google".to_owned(), g);
        sites.insert("yahoo".to_owned(), y);
        let csv = Report { campaign: 1, sites }.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "site,sent,delivered,deferred,bounced,bounced:bad-mailbox,bounced:policy,expired,cancelled,late_bounces,complaints,unsubscribes,opens,unique_opens,clicks,unique_clicks"
        );
        assert_eq!(lines[1], "google,12,10,3,2,2,0,0,0,0,0,0,0,0,0,0");
        assert_eq!(lines[2], "yahoo,6,5,0,1,0,1,1,0,0,0,0,0,0,0,0");
        assert_eq!(lines[3], "TOTAL,18,15,3,3,2,1,1,0,0,0,0,0,0,0,0");
    }
}
