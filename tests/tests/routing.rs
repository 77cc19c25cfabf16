//! Routing: MX fallback in preference order, opportunistic STARTTLS, the smarthost route, and
//! the `/metrics` endpoint naming what happened.

use std::net::Ipv4Addr;
use std::time::Duration;

use hikyaku_engine::Listeners;
use hikyaku_loadtest::sink::{ListenerSpec, Profile, Sink, SinkConfig};
use hikyaku_queue_schema::EventStatus;
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::world::{World, SHARDS, STANDARD_ZONE};

/// `fallback.test` prefers an MX where nothing listens, then one with a sink.
const ZONE_EXTRA: &str = "
fallback.test   MX 10 dead.fallback.test
fallback.test   MX 20 live.fallback.test
dead.fallback.test A 127.0.0.9
live.fallback.test A 127.0.0.5
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_fallback_starttls_and_metrics() {
    let zone = format!("{STANDARD_ZONE}{ZONE_EXTRA}");
    let world = World::start(
        &zone,
        vec![(Ipv4Addr::new(127, 0, 0, 5), Profile::plain("other"))],
    )
    .await;
    // A second sink offering STARTTLS on the google address, same port.
    let tls_sink = Sink::start(SinkConfig {
        listeners: vec![ListenerSpec {
            addr: (Ipv4Addr::new(127, 0, 0, 2), world.smtp_port).into(),
            profile: Profile::plain("tls"),
        }],
        starttls: true,
        hostname: "tls.sink.test".into(),
        capture: 0,
    })
    .await
    .expect("tls sink");
    let mut con = world.redis.con().await;
    let jobs = (0..20)
        .map(|i| job(i, &format!("f{i}@fallback.test")))
        .chain((20..40).map(|i| job(i, &format!("t{i}@gmail.test"))))
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;

    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_addr = metrics.local_addr().expect("addr");
    let config = world.config(
        "",
        "[sites.google]\nmx_suffixes = [\"google.test\"]\nconnect_timeout = \"1s\"\n[sites.default]\nconnect_timeout = \"1s\"\n",
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(hikyaku_engine::run(
        config,
        Listeners {
            metrics: Some(metrics),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let events = queue::wait_events(&con, 40, Duration::from_secs(30)).await;
    let body = scrape(metrics_addr).await;
    let _ = stop.send(());
    engine.await.expect("no panic").expect("clean stop");

    assert!(
        events.iter().all(|e| e.status == EventStatus::Delivered),
        "{events:?}"
    );
    let fallback: Vec<_> = events
        .iter()
        .filter(|e| e.rcpt.ends_with("@fallback.test"))
        .collect();
    assert_eq!(fallback.len(), 20);
    assert!(
        fallback
            .iter()
            .all(|e| e.mx == "live.fallback.test" && e.attempt == 1),
        "delivered through the second MX on the first attempt"
    );
    assert_eq!(
        tls_sink.stats().accepted(),
        20,
        "all gmail.test mail went through the STARTTLS sink"
    );
    for name in [
        "hikyaku_messages_total{",
        "hikyaku_jobs_read_total",
        "hikyaku_connects_total{",
        "hikyaku_smtp_reply_seconds_bucket{",
        "hikyaku_connections_open{",
    ] {
        assert!(body.contains(name), "/metrics has {name}:\n{body}");
    }
    assert!(body.contains("result=\"delivered\""));
    tls_sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_takes_everything() {
    let world = World::start(
        STANDARD_ZONE,
        vec![(Ipv4Addr::new(127, 0, 0, 5), Profile::plain("relay"))],
    )
    .await;
    let mut con = world.redis.con().await;
    // Neither domain resolves: with a smarthost, DNS is not asked.
    let jobs = vec![job(0, "a@unresolvable.test"), job(1, "b@gmail.com")];
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let toml = world.config_toml("", "").replace(
        "smtp_port",
        &format!("smarthost = \"127.0.0.5:{}\"\nsmtp_port", world.smtp_port),
    );
    let config = hikyaku_engine::EngineConfig::from_toml(&toml, "test").expect("valid");
    let engine = world.engine(config);
    let events = queue::wait_events(&con, 2, Duration::from_secs(30)).await;
    engine.stop().await.expect("clean stop");
    assert!(events
        .iter()
        .all(|e| e.status == EventStatus::Delivered && e.mx == "127.0.0.5"));
    let google = events
        .iter()
        .find(|e| e.rcpt == "b@gmail.com")
        .expect("gmail.com event");
    assert_eq!(
        google.site, "google",
        "site found from the shipped domain list"
    );
    assert_eq!(world.dns.queries(), 0, "no DNS with a smarthost");
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_site_many_destinations_never_mix() {
    // Two domains of the default site with different MX hosts: a session opened for one must
    // never carry the other's mail.
    let zone = format!("{STANDARD_ZONE}\nelse.test MX 10 mx.else.test\nmx.else.test A 127.0.0.7\n");
    let world = World::start(
        &zone,
        vec![
            (Ipv4Addr::new(127, 0, 0, 5), Profile::plain("other")),
            (Ipv4Addr::new(127, 0, 0, 7), Profile::plain("else")),
        ],
    )
    .await;
    let mut con = world.redis.con().await;
    let jobs = (0..2000)
        .map(|i| {
            let domain = if i % 2 == 0 {
                "other.test"
            } else {
                "else.test"
            };
            job(i, &format!("m{i}@{domain}"))
        })
        .collect();
    queue::enqueue(&mut con, SHARDS, jobs).await;
    let engine = world.engine(world.config("", "[sites.default]\nmax_connections = 3\n"));
    let events = queue::wait_events(&con, 2000, Duration::from_secs(60)).await;
    engine.stop().await.expect("clean stop");
    assert!(events.iter().all(|e| e.status == EventStatus::Delivered));
    let stats = world.sink.stats();
    assert_eq!(stats.profile("other").expect("other").accepted, 1000);
    assert_eq!(stats.profile("else").expect("else").accepted, 1000);
    for e in &events {
        let want = if e.rcpt.ends_with("@other.test") {
            "mx.other.test"
        } else {
            "mx.else.test"
        };
        assert_eq!(e.mx, want, "{} went through its own MX", e.rcpt);
    }
}
