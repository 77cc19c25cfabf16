//! End-to-end tests: a real sink on 127.0.0.1:0 spoken to over TCP.

#![allow(clippy::unwrap_used)]

mod chunking;
mod client;
mod limits;
mod magic;
mod protocol;
mod stats_http;
mod tls;

use std::net::SocketAddr;

use super::{ListenerSpec, Profile, Sink, SinkConfig};

/// The hostname every test sink announces.
const HOST: &str = "sink.test";

/// A sink with one listener of `profile` on a free loopback port.
async fn start(profile: Profile) -> (Sink, SocketAddr) {
    start_with(profile, false).await
}

/// Like [`start`], optionally offering STARTTLS.
async fn start_with(profile: Profile, starttls: bool) -> (Sink, SocketAddr) {
    let sink = Sink::start(SinkConfig {
        listeners: vec![ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            profile,
        }],
        starttls,
        hostname: HOST.to_owned(),
        capture: 0,
    })
    .await
    .unwrap();
    let addr = sink.local_addrs()[0];
    (sink, addr)
}
