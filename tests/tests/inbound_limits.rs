//! The inbound listener cannot be held by one client: connections from one address are capped
//! (the next is told 421 while another address still gets its greeting, and a closed one
//! frees its place), a session that only says NOOP and RSET is closed when its idle time runs
//! out, every session ends at its lifetime whatever it does, and a `SIZE=` too large to count
//! is refused like any other oversized message.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hikyaku_api::inbound::InboundSettings;
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

const DOMAIN: &str = "bounces.acme.test";

/// A client connected from `from` (a loopback address): the greeting and the stream.
async fn connect_from(from: IpAddr, to: SocketAddr) -> (String, BufReader<TcpStream>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    let stream = socket.connect(to).await.expect("connect");
    let mut r = BufReader::new(stream);
    let greeting = line(&mut r).await;
    (greeting, r)
}

/// One reply line ("" at end of stream).
async fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut l))
        .await
        .expect("a reply in time")
        .expect("read");
    l
}

/// Sends `cmd`, returns the last line of the reply.
async fn cmd(r: &mut BufReader<TcpStream>, cmd: &str) -> String {
    r.get_mut()
        .write_all(format!("{cmd}\r\n").as_bytes())
        .await
        .expect("write");
    loop {
        let l = line(r).await;
        if l.as_bytes().get(3) != Some(&b'-') {
            return l;
        }
    }
}

const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_at_most_its_share_of_connections() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    // The defaults: 10 connections per client address.
    let (addr, stop) = api.inbound(InboundSettings::new(DOMAIN)).await;
    let mut held = Vec::new();
    for i in 0..10 {
        let (greeting, mut c) = connect_from(HOME, addr).await;
        assert!(greeting.starts_with("220"), "connection {i}: {greeting}");
        assert!(cmd(&mut c, "EHLO holder.test").await.starts_with("250"));
        held.push(c);
    }
    let (greeting, mut c) = connect_from(HOME, addr).await;
    assert!(
        greeting.starts_with("421"),
        "the 11th connection from one address is refused: {greeting}"
    );
    assert_eq!(line(&mut c).await, "", "and closed");
    let (greeting, mut c) = connect_from(OTHER, addr).await;
    assert!(
        greeting.starts_with("220"),
        "another sender is still served: {greeting}"
    );
    assert!(cmd(&mut c, "QUIT").await.starts_with("221"));

    // A closed connection frees its place.
    let mut first = held.remove(0);
    assert!(cmd(&mut first, "QUIT").await.starts_with("221"));
    drop(first);
    let greeting = hikyaku_tests::wait_for(Duration::from_secs(5), "a freed place", || async {
        let (g, _c) = connect_from(HOME, addr).await;
        g.starts_with("220").then_some(g)
    })
    .await;
    assert!(greeting.starts_with("220"), "{greeting}");
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_and_rset_do_not_keep_a_session_alive() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let mut settings = InboundSettings::new(DOMAIN);
    settings.idle_timeout = Duration::from_secs(1);
    let (addr, stop) = api.inbound(settings).await;
    let (greeting, mut c) = connect_from(HOME, addr).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(cmd(&mut c, "EHLO flooder.test").await.starts_with("250"));
    let start = hikyaku_engine::clock::now();
    let mut closed_with = None;
    for i in 0..40 {
        let verb = if i % 2 == 0 { "NOOP" } else { "RSET" };
        let reply = cmd(&mut c, verb).await;
        if !reply.starts_with("250") {
            closed_with = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = closed_with.expect("the session was closed");
    assert!(reply.starts_with("421"), "{reply}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "closed at its idle time, not later: {:?}",
        start.elapsed()
    );
    assert_eq!(line(&mut c).await, "", "and the connection closed");
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_too_large_to_count_is_refused() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let (addr, stop) = api.inbound(InboundSettings::new(DOMAIN)).await;
    let (_, mut c) = connect_from(HOME, addr).await;
    assert!(cmd(&mut c, "EHLO mx.test").await.starts_with("250"));
    let r = cmd(&mut c, "MAIL FROM:<> SIZE=99999999999999999999999").await;
    assert!(r.starts_with("552"), "an overflowing SIZE is too big: {r}");
    let r = cmd(&mut c, "MAIL FROM:<> SIZE=12x").await;
    assert!(r.starts_with("501"), "a SIZE that is no number: {r}");
    let r = cmd(&mut c, "MAIL FROM:<> SIZE=1000").await;
    assert!(r.starts_with("250"), "a sane SIZE is taken: {r}");
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_at_its_lifetime_whatever_it_does() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let mut settings = InboundSettings::new(DOMAIN);
    settings.max_session = Duration::from_secs(2);
    let (addr, stop) = api.inbound(settings).await;
    let (_, mut c) = connect_from(HOME, addr).await;
    assert!(cmd(&mut c, "EHLO busy.test").await.starts_with("250"));
    // Every MAIL accepted moves a transaction on: only the lifetime ends this.
    let start = hikyaku_engine::clock::now();
    let mut closed_with = None;
    for _ in 0..40 {
        let reply = cmd(&mut c, "MAIL FROM:<>").await;
        if !reply.starts_with("250") {
            closed_with = Some(reply);
            break;
        }
        let reply = cmd(&mut c, "RSET").await;
        if !reply.starts_with("250") {
            closed_with = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = closed_with.expect("the session was closed");
    assert!(reply.starts_with("421"), "{reply}");
    assert!(reply.contains("too long"), "{reply}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(line(&mut c).await, "", "and the connection closed");
    let _ = stop.send(true);
}
