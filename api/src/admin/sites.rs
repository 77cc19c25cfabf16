//! Site control: pause, resume and rate overrides through `hk:site:<site>:ctl` (engines read it
//! every second), and the fleet's view of every site from what each engine node publishes
//! (`hk:node:<node>:sites`).

use std::collections::{BTreeMap, HashMap};

use hikyaku_queue_schema::node::SiteState;
use hikyaku_queue_schema::Keys;

use super::{AdminError, Ctx};

/// One site across the fleet.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SiteRow {
    /// Site name.
    pub site: String,
    /// Paused by an operator (the control hash).
    pub paused: bool,
    /// The operator's rate override, msg/s per node (`None`: the policy's).
    pub rate_override: Option<f64>,
    /// Rate in force summed over nodes, msg/s (`None`: unlimited on some node).
    pub rate: Option<f64>,
    /// The worst adaptive state of any node: `normal` < `cut` < `suspended` < `blocked`.
    pub adaptive: String,
    /// Open connections, all nodes.
    pub connections: u64,
    /// Jobs in the site's queues, all nodes.
    pub queued: u64,
    /// Nodes that reported the site.
    pub nodes: u32,
    /// Of those, nodes that hold it paused (an operator's pause is taken within a second).
    pub nodes_paused: u32,
}

impl SiteRow {
    /// The `paused` column of `site list`: `yes` (paused everywhere), `soon` (ordered, not yet
    /// taken by every node), `ending` (resumed, some node still holds it paused), `no`.
    pub fn paused_label(&self) -> &'static str {
        // Not paused: healthy unless some node still holds it paused (a resume on its way).
        match (self.paused, self.nodes_paused) {
            (true, n) if n == self.nodes && n > 0 => "yes",
            (true, _) => "soon",
            (false, 0) => "no",
            (false, _) => "ending",
        }
    }
}

/// A site name as policies write them.
fn check_name(site: &str) -> Result<(), AdminError> {
    let ok = !site.is_empty()
        && site.len() <= 64
        && site
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "site {site:?}: names are 1-64 characters of a-z, 0-9, '-', '_', '.'"
        )))
    }
}

/// Every engine node's published site states: node → site → state.
async fn node_states(
    ctx: &Ctx,
) -> Result<BTreeMap<String, HashMap<String, SiteState>>, AdminError> {
    let mut con = ctx.redis().await?;
    // Every engine heartbeats in `hk:nodes` (a dead one stays listed until it is forgotten);
    // a key per node, not a SCAN: on a Redis Cluster a SCAN sees one node's keys only.
    let nodes: Vec<String> = redis::cmd("ZRANGE")
        .arg(Keys::nodes())
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await?;
    let mut out = BTreeMap::new();
    for key in nodes.iter().map(|n| Keys::node_sites(n)) {
        let raw: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut con)
            .await?;
        if raw.is_empty() {
            continue; // a node that stopped publishing (its key expired)
        }
        let node = key
            .strip_prefix("hk:node:")
            .and_then(|k| k.strip_suffix(":sites"))
            .unwrap_or(&key)
            .to_owned();
        let states = raw
            .into_iter()
            .filter_map(|(site, bytes)| Some((site, SiteState::decode(&bytes).ok()?)))
            .collect();
        out.insert(node, states);
    }
    Ok(out)
}

/// One adaptive-shaping change of a site, from `hk:site:events`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiteEventRow {
    /// When the engine wrote it, ms since the epoch (the stream entry's id).
    pub at_ms: u64,
    /// The site.
    pub site: String,
    /// `cut`, `suspend`, `block`, `recover` or `learn`.
    pub action: String,
    /// Rate cap after the change (or the learned rate), msg/s; 0: none.
    pub rate: f64,
    /// End of a suspension, ms since the epoch; 0: none.
    pub until_ms: u64,
    /// The provider's reply that caused it (remote text: shown through the terminal filter).
    pub reply: String,
}

/// Entries of `hk:site:events` read per round trip while looking for a site's.
const EVENTS_PAGE: usize = 1000;

/// The newest `limit` adaptive changes (of `site` only, when given), newest first. The stream
/// holds about 10,000 entries of every site; it is read newest first a page at a time.
pub async fn events(
    ctx: &Ctx,
    site: Option<&str>,
    limit: usize,
) -> Result<Vec<SiteEventRow>, AdminError> {
    if let Some(site) = site {
        check_name(site)?;
    }
    if !(1..=10_000).contains(&limit) {
        return Err(AdminError::Invalid(format!(
            "--limit {limit}: give 1 to 10000 events"
        )));
    }
    let mut con = ctx.redis().await?;
    let mut out = Vec::new();
    let mut end = "+".to_owned();
    loop {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(Keys::site_events())
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(EVENTS_PAGE)
            .query_async(&mut con)
            .await?;
        let full = page.len() == EVENTS_PAGE;
        for (id, fields) in &page {
            let field = |k: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or("", |(_, v)| v.as_str())
            };
            if site.is_some_and(|s| s != field("site")) {
                continue;
            }
            out.push(SiteEventRow {
                at_ms: id
                    .split_once('-')
                    .and_then(|(ms, _)| ms.parse().ok())
                    .unwrap_or(0),
                site: field("site").to_owned(),
                action: field("action").to_owned(),
                rate: field("rate").parse().unwrap_or(0.0),
                until_ms: field("until_ms").parse().unwrap_or(0),
                reply: field("reply").to_owned(),
            });
            if out.len() >= limit {
                return Ok(out);
            }
        }
        match page.last() {
            Some((id, _)) if full => end = format!("({id}"),
            _ => return Ok(out),
        }
    }
}

/// Refuses a site no running engine knows (a typo would otherwise pause nothing); with no
/// engine running there is nothing to check against and the order is kept for when one starts.
pub(crate) async fn check_known(ctx: &Ctx, site: &str) -> Result<(), AdminError> {
    check_name(site)?;
    let nodes = node_states(ctx).await?;
    if nodes.is_empty() || nodes.values().any(|s| s.contains_key(site)) {
        return Ok(());
    }
    let mut known: Vec<&String> = nodes.values().flat_map(|s| s.keys()).collect();
    known.sort();
    known.dedup();
    Err(AdminError::NotFound(format!(
        "site {site:?} (running engines know: {})",
        known
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Waits (at most 5 s) until every running engine has read the control state written before
/// this call: two site-state publications later, since each control pass reads the orders
/// and then publishes. Engines that stop meanwhile are not waited for.
pub async fn await_engines(ctx: &Ctx) -> Result<(), AdminError> {
    let latest = |nodes: &BTreeMap<String, HashMap<String, SiteState>>| -> BTreeMap<String, u64> {
        nodes
            .iter()
            .map(|(n, s)| (n.clone(), s.values().map(|v| v.at_ms).max().unwrap_or(0)))
            .collect()
    };
    let start = latest(&node_states(ctx).await?);
    for _ in 0..50 {
        let now = latest(&node_states(ctx).await?);
        let done = start
            .iter()
            .all(|(n, t)| now.get(n).is_none_or(|t2| *t2 >= t + 1_900));
        if done {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Pauses (`true`) or resumes a site on every engine within a second.
pub async fn set_paused(ctx: &Ctx, site: &str, paused: bool) -> Result<(), AdminError> {
    check_known(ctx, site).await?;
    let mut con = ctx.redis().await?;
    let _: () = redis::cmd("HSET")
        .arg(Keys::site_ctl(site))
        .arg("paused")
        .arg(if paused { "1" } else { "0" })
        .query_async(&mut con)
        .await?;
    Ok(())
}

/// Overrides a site's rate (msg/s per engine node), or clears the override (`None`).
pub async fn set_rate(ctx: &Ctx, site: &str, rate: Option<f64>) -> Result<(), AdminError> {
    if let Some(r) = rate {
        if !(r.is_finite() && (0.001..=1_000_000.0).contains(&r)) {
            return Err(AdminError::Invalid(format!(
                "rate {r}: must be between 0.001 and 1000000 messages per second"
            )));
        }
    }
    check_known(ctx, site).await?;
    let mut con = ctx.redis().await?;
    let _: () = match rate {
        Some(r) => {
            redis::cmd("HSET")
                .arg(Keys::site_ctl(site))
                .arg("rate")
                .arg(r.to_string())
                .query_async(&mut con)
                .await?
        }
        None => {
            redis::cmd("HDEL")
                .arg(Keys::site_ctl(site))
                .arg("rate")
                .query_async(&mut con)
                .await?
        }
    };
    Ok(())
}

fn severity(adaptive: &str) -> u8 {
    match adaptive {
        "blocked" => 3,
        "suspended" => 2,
        "cut" => 1,
        _ => 0,
    }
}

/// Every site any engine reports or any operator set, with its state across the fleet.
pub async fn list(ctx: &Ctx) -> Result<Vec<SiteRow>, AdminError> {
    let nodes = node_states(ctx).await?;
    let mut rows: BTreeMap<String, SiteRow> = BTreeMap::new();
    for states in nodes.values() {
        for (site, s) in states {
            let row = rows.entry(site.clone()).or_insert_with(|| SiteRow {
                site: site.clone(),
                rate: Some(0.0),
                adaptive: "normal".into(),
                ..SiteRow::default()
            });
            row.nodes += 1;
            row.nodes_paused += u32::from(s.paused);
            row.rate = match (row.rate, s.rate) {
                (Some(a), r) if r > 0.0 => Some(a + r),
                _ => None,
            };
            if severity(&s.adaptive) > severity(&row.adaptive) {
                row.adaptive = s.adaptive.clone();
            }
            row.connections += s.connections;
            row.queued += s.queued;
        }
    }
    let mut con = ctx.redis().await?;
    let names: Vec<String> = rows.keys().cloned().collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for name in &names {
        pipe.hgetall(Keys::site_ctl(name));
    }
    let ctls: Vec<HashMap<String, String>> = pipe.query_async(&mut con).await?;
    for (name, ctl) in names.iter().zip(ctls) {
        if let Some(row) = rows.get_mut(name) {
            row.paused = ctl.get("paused").is_some_and(|v| v == "1");
            row.rate_override = ctl.get("rate").and_then(|r| r.parse().ok());
        }
    }
    Ok(rows.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paused_column_says_no_for_a_healthy_site() {
        let row = |paused, nodes, nodes_paused| SiteRow {
            paused,
            nodes,
            nodes_paused,
            ..SiteRow::default()
        };
        assert_eq!(row(false, 1, 0).paused_label(), "no", "healthy");
        assert_eq!(row(false, 3, 0).paused_label(), "no", "healthy fleet");
        assert_eq!(row(false, 0, 0).paused_label(), "no", "no node reports it");
        assert_eq!(row(false, 3, 1).paused_label(), "ending");
        assert_eq!(row(true, 3, 3).paused_label(), "yes");
        assert_eq!(row(true, 3, 1).paused_label(), "soon");
        assert_eq!(row(true, 3, 0).paused_label(), "soon");
    }

    #[test]
    fn site_names_are_checked() {
        assert!(check_name("yahoo").is_ok());
        assert!(check_name("y!mobile").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("Google").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }
}
