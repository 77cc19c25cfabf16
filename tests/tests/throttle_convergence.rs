//! Throttles that converge: a Yahoo site configured at five times what its provider takes (the
//! sink answers `[TSS04]` beyond 100 msg/s) is suspended, comes back at half the rate it was
//! accepting, climbs, and holds just below what it learned: a few suspensions, not one after
//! each return, and then at least 80% of what the provider accepts. The learned rate is an
//! event in `hk:site:events`. Nothing is lost or sent twice.

use std::net::Ipv4Addr;
use std::time::Duration;

use hikyaku_loadtest::sink::{Profile, ProviderKind};
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS};

const ZONE: &str = "
yahoo.test          MX 10 mta5.yahoo.test
mta5.yahoo.test     A 127.0.0.3
";

/// What the provider takes, msg/s.
const PROVIDER_RATE: u32 = 100;

const SITES: &str = r#"
[sites.yahoo]
mx_suffixes = ["yahoo.test"]
rate = "500/s"
max_connections = 4
recover_interval = "1s"
recover_step = 0.1
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[[sites.yahoo.reply_rules]]
pattern = '\[TSS04\]'
action = "suspend"
duration = "2s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_far_above_its_providers_rate_converges_below_it() {
    let yahoo = Profile {
        max_rate: PROVIDER_RATE,
        ..Profile::provider(ProviderKind::Yahoo)
    };
    let world = World::start(ZONE, vec![(Ipv4Addr::new(127, 0, 0, 3), yahoo)]).await;
    let mut con = world.redis.con().await;
    let n = 3_000u64;
    let jobs = (0..n)
        .map(|i| job(i, &format!("y{i}@yahoo.test")))
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let engine = world.engine(world.config("", SITES));
    let stats = world.sink.stats();
    wait_for(Duration::from_secs(180), "every message delivered", || {
        let s = stats.clone();
        async move { (s.distinct() >= n).then_some(()) }
    })
    .await;
    engine.stop().await.expect("clean stop");
    assert_eq!(stats.duplicates(), 0, "nothing delivered twice");
    assert_eq!(stats.distinct(), n, "nothing lost");

    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("hk:site:events")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("site events");
    let field = |fields: &[(String, String)], k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let actions: Vec<(String, String)> = entries
        .iter()
        .map(|(_, f)| (field(f, "action"), field(f, "rate")))
        .collect();
    let y = stats.profile("yahoo").expect("yahoo stats");
    // Each suspension that starts (not one extended by replies still on their way) teaches
    // the rate the site was accepting: one `learn` event each.
    let learned: Vec<f64> = actions
        .iter()
        .filter(|(a, _)| a == "learn")
        .map(|(_, r)| r.parse().expect("a rate"))
        .collect();
    println!("adaptive log: {actions:?}; per second {:?}", y.per_second);
    assert!(
        (1..=4).contains(&learned.len()),
        "converges within a few suspensions: {} ({actions:?}; per second {:?})",
        learned.len(),
        y.per_second
    );
    assert!(
        learned
            .iter()
            .all(|r| (1.0..=2.0 * f64::from(PROVIDER_RATE)).contains(r)),
        "what the site was accepting, not its configured rate: {learned:?}"
    );
    // Steady state: the whole seconds of the run's second half (the last one may be partial).
    let busy: Vec<u64> = y
        .per_second
        .iter()
        .copied()
        .skip_while(|c| *c == 0)
        .collect();
    let whole = busy.len().saturating_sub(1);
    let tail = &busy[whole / 2..whole];
    let mean = tail.iter().sum::<u64>() as f64 / tail.len().max(1) as f64;
    assert!(
        mean >= 0.8 * f64::from(PROVIDER_RATE),
        "runs at 80% or more of what the provider takes: {mean:.1} msg/s ({:?}; events {actions:?})",
        y.per_second
    );
}
