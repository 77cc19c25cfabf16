//! Adaptive shaping against the sink's provider emulation: a Gmail sink capped at 100 msg/s
//! answers `421-4.7.28` beyond it and a Yahoo sink capped at 40 msg/s answers `[TSS04]`; the
//! engine (unlimited for both) cuts Gmail's rate and suspends Yahoo briefly, each change is an
//! event in `hk:site:events` with the reply that caused it, the throttle replies stay few (the
//! engine settles under the cap instead of hammering it), and every deferred message is
//! delivered later: nothing lost, nothing twice.

use std::net::Ipv4Addr;
use std::time::Duration;

use hikyaku_loadtest::sink::{Profile, ProviderKind};
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS};

const ZONE: &str = "
gmail.test          MX 10 mx1.google.test
mx1.google.test     A 127.0.0.2
yahoo.test          MX 10 mta5.yahoo.test
mta5.yahoo.test     A 127.0.0.3
";

const SITES: &str = r#"
[sites.google]
mx_suffixes = ["google.test"]
max_connections = 4
recover_interval = "2s"
recover_step = 0.1
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[sites.yahoo]
mx_suffixes = ["yahoo.test"]
max_connections = 2
retry_initial = "1s"
retry_factor = 1.0
retry_jitter = 0.0
[[sites.yahoo.reply_rules]]
pattern = '\[TSS04\]'
action = "suspend"
duration = "2s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_sites_are_cut_or_suspended_and_everything_arrives() {
    let google = Profile {
        max_rate: 100,
        ..Profile::provider(ProviderKind::Google)
    };
    let yahoo = Profile {
        max_rate: 40,
        ..Profile::provider(ProviderKind::Yahoo)
    };
    let world = World::start(
        ZONE,
        vec![
            (Ipv4Addr::new(127, 0, 0, 2), google),
            (Ipv4Addr::new(127, 0, 0, 3), yahoo),
        ],
    )
    .await;
    let mut con = world.redis.con().await;
    let (n_google, n_yahoo) = (1_200u64, 160u64);
    let jobs = (0..n_google)
        .map(|i| job(i, &format!("g{i}@gmail.test")))
        .chain((0..n_yahoo).map(|i| job(n_google + i, &format!("y{i}@yahoo.test"))))
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let engine = world.engine(world.config("", SITES));
    let stats = world.sink.stats();
    let n = n_google + n_yahoo;
    wait_for(Duration::from_secs(120), "every message delivered", || {
        let s = stats.clone();
        async move { (s.distinct() >= n).then_some(()) }
    })
    .await;
    engine.stop().await.expect("clean stop");
    assert_eq!(stats.duplicates(), 0, "nothing delivered twice");
    assert_eq!(stats.distinct(), n, "nothing lost");

    let g = stats.profile("google").expect("google stats");
    let y = stats.profile("yahoo").expect("yahoo stats");
    assert!(g.throttled > 0, "the Gmail cap was reached: {g:?}");
    assert!(y.throttled > 0, "the Yahoo cap was reached: {y:?}");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("hk:site:events")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("site events");
    // An engine that ignored the replies would meet the cap with hundreds of rejected
    // attempts a second until the backlog was gone.
    assert!(
        g.throttled * 10 <= n_google,
        "Gmail throttles stay under 10% of its messages: {} (per second {:?}; events {entries:?})",
        g.throttled,
        g.per_second
    );
    assert!(
        g.max_in_any_second <= 110,
        "the sink's cap holds: {:?}",
        g.per_second
    );

    let field = |fields: &[(String, String)], k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let cut = entries
        .iter()
        .find(|(_, f)| field(f, "site") == "google" && field(f, "action") == "cut")
        .unwrap_or_else(|| panic!("a cut event for google: {entries:?}"));
    assert!(field(&cut.1, "reply").contains("4.7.28"), "{cut:?}");
    let cut_rate: f64 = field(&cut.1, "rate").parse().expect("rate");
    assert!(
        (1.0..100.0).contains(&cut_rate),
        "cut below the cap: {cut:?}"
    );
    let suspend = entries
        .iter()
        .find(|(_, f)| field(f, "site") == "yahoo" && field(f, "action") == "suspend")
        .unwrap_or_else(|| panic!("a suspend event for yahoo: {entries:?}"));
    assert!(
        field(&suspend.1, "reply").contains("[TSS04]"),
        "{suspend:?}"
    );
    assert!(field(&suspend.1, "until_ms").parse::<u64>().expect("until") > 0);
}
