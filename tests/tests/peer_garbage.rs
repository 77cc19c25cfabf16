//! Scenario 7: peer garbage — malformed replies, a connection reset mid-DATA, a server that
//! never answers after DATA, a server that never greets — is classified and deferred, never a
//! panic, never a loss; and ordinary mail keeps flowing beside it.

use std::net::Ipv4Addr;
use std::time::Duration;

use hikyaku_loadtest::sink::Profile;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{standard_sinks, World, SHARDS, STANDARD_ZONE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_classified_and_deferred() {
    let mut hosts = standard_sinks();
    let mut silent = Profile::plain("silent");
    silent.silent = true;
    hosts.push((Ipv4Addr::new(127, 0, 0, 6), silent));
    let world = World::start(STANDARD_ZONE, hosts).await;
    let mut con = world.redis.con().await;
    let bad = [
        "garbage-1@other.test",
        "reset-1@other.test",
        "hang-1@other.test",
        "someone@silent.test",
    ];
    let mut jobs: Vec<_> = bad
        .iter()
        .enumerate()
        .map(|(i, r)| job(i as u64, r))
        .collect();
    jobs.extend((0..200).map(|i| job(100 + i, &format!("ok{i}@other.test"))));
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let sites = r#"
[sites.default]
banner_timeout = "1s"
command_timeout = "1s"
data_timeout = "1s"
retry_initial = "1h"
"#;
    let engine = world.engine(world.config("", sites));
    let retrying = wait_for(Duration::from_secs(30), "all four deferred", || {
        let mut c = con.clone();
        async move {
            let r = queue::retry_jobs(&mut c, SHARDS).await;
            (r.len() >= bad.len()).then_some(r)
        }
    })
    .await;
    let stats = world.sink.stats();
    wait_for(Duration::from_secs(30), "ordinary mail delivered", || {
        let s = stats.clone();
        async move { (s.distinct() >= 200).then_some(()) }
    })
    .await;
    assert!(engine.is_running(), "the engine survived the garbage");
    engine.stop().await.expect("clean stop");

    for rcpt in bad {
        let j = retrying
            .iter()
            .find(|j| j.rcpt == rcpt)
            .unwrap_or_else(|| panic!("{rcpt} is in the retry set"));
        assert_eq!(j.attempt, 1, "{rcpt}: one attempt counted");
    }
    let events = queue::events(&mut con, SHARDS).await;
    assert_eq!(events.len(), 200, "only the ordinary messages finished");
    for rcpt in bad {
        assert_eq!(stats.count_of(rcpt), 0, "{rcpt} was never accepted");
    }
    let (ready, pending, retry) = queue::depths(&mut con, SHARDS).await;
    assert_eq!(
        (ready, pending, retry),
        (0, 0, bad.len() as u64),
        "nothing lost"
    );
}
