//! Fault scenario 5: a long network path. Two sites with the same limits (2,000 msg/s, at most
//! 32 connections) are reached through the project's delaying proxy (in place of `tc netem`,
//! which needs privileges): one with no delay, one with 100 ms each way (200 ms round trip).
//! 50,000 recipients each, one site after the other, one engine node. Throughput on the far
//! site holds (its median second within 30% of the near one's) because the engine opens more
//! connections to it: near, the rate is the bound and a few connections carry it; far, each
//! connection is bound by its pipelining window over the round trip, and more open, never more
//! than the cap.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hikyaku_loadtest::proxy::Proxy;
use hikyaku_loadtest::sink::Profile;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::wait_for;
use hikyaku_tests::world::World;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");
const SHARDS: u16 = 4;
const PER_SITE: u64 = 50_000;
const DOMAINS: u64 = 8;
const CAP: u64 = 32;
const RATE: u64 = 2_000;
const DELAY: Duration = Duration::from_millis(100);

/// `near<i>.test` through the undelayed proxy on .7, `far<i>.test` through the delaying one on .8.
fn zone() -> String {
    let mut z = String::from("mx.near.test A 127.0.0.7\nmx.far.test A 127.0.0.8\n");
    for i in 0..DOMAINS {
        let _ = writeln!(z, "near{i}.test MX 10 mx.near.test");
        let _ = writeln!(z, "far{i}.test MX 10 mx.far.test");
    }
    z
}

fn rcpt(site: &str, i: u64) -> String {
    format!("r{i}@{site}{}.test", i % DOMAINS)
}

/// The median whole second of a profile's busy stretch (its first and last, partial, seconds
/// left out), the most connections it had open, and its per-second counts.
fn throughput(world: &World, profile: &str) -> (u64, u64, Vec<u64>) {
    let p = world.sink.stats().profile(profile).expect("profile stats");
    let first = p.per_second.iter().position(|&n| n > 0).unwrap_or(0);
    let last = p.per_second.iter().rposition(|&n| n > 0).unwrap_or(0);
    let mut busy: Vec<u64> = p
        .per_second
        .get(first + 1..last)
        .unwrap_or_default()
        .to_vec();
    busy.sort_unstable();
    let median = busy.get(busy.len() / 2).copied().unwrap_or(0);
    (median, p.max_concurrent_conns, p.per_second)
}

async fn deliver(world: &World, site: &str, offset: u64) {
    let mut con = world.redis.con().await;
    let jobs = (0..PER_SITE)
        .map(|i| job(offset + i, &rcpt(site, i)))
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let stats = world.sink.stats();
    wait_for(
        Duration::from_secs(240),
        &format!("every {site} recipient delivered"),
        || {
            let s = stats.clone();
            let last = rcpt(site, PER_SITE - 1);
            async move {
                let p = s.profile(site)?;
                (p.accepted >= PER_SITE && s.count_of(&last) >= 1).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_path_is_filled_with_more_connections_within_the_cap() {
    let world = World::start(
        &zone(),
        vec![
            (Ipv4Addr::new(127, 0, 0, 5), Profile::plain("near")),
            (Ipv4Addr::new(127, 0, 0, 6), Profile::plain("far")),
        ],
    )
    .await;
    let port = world.smtp_port;
    let _near = Proxy::start(
        SocketAddr::from(([127, 0, 0, 7], port)),
        SocketAddr::from(([127, 0, 0, 5], port)),
        Duration::ZERO,
    )
    .await
    .expect("near proxy");
    let _far = Proxy::start(
        SocketAddr::from(([127, 0, 0, 8], port)),
        SocketAddr::from(([127, 0, 0, 6], port)),
        DELAY,
    )
    .await
    .expect("far proxy");
    let sites = format!(
        r#"
[sites.near]
mx_suffixes = ["near.test"]
rate = "{RATE}/s"
max_connections = {CAP}
[sites.far]
mx_suffixes = ["far.test"]
rate = "{RATE}/s"
max_connections = {CAP}
"#
    );
    let engine = world.engine_process(
        ENGINE,
        &world.node_config_toml("node-a", SHARDS, "max_in_flight = 4000", &sites),
    );

    deliver(&world, "near", 0).await;
    deliver(&world, "far", PER_SITE).await;
    let con = world.redis.con().await;
    wait_for(
        Duration::from_secs(30),
        "one end-state event per job",
        || {
            let mut con = con.clone();
            async move {
                (queue::events(&mut con, SHARDS).await.len() as u64 == 2 * PER_SITE).then_some(())
            }
        },
    )
    .await;
    assert!(engine.terminate().await.success());

    let (near_rate, near_conns, near_secs) = throughput(&world, "near");
    let (far_rate, far_conns, far_secs) = throughput(&world, "far");
    println!(
        "no delay: median {near_rate} msg/s over {near_conns} connections {near_secs:?}; \
         {DELAY:?} each way: median {far_rate} msg/s over {far_conns} connections {far_secs:?}"
    );
    assert!(far_conns <= CAP, "the cap holds: {far_conns}");
    assert!(
        far_conns > near_conns,
        "the long path gets more connections ({far_conns} vs {near_conns})"
    );
    assert!(
        far_rate * 10 >= near_rate * 7,
        "throughput holds over the long path: median second {far_rate} vs {near_rate} msg/s"
    );
}
