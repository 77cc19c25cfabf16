//! What a sink listens on and how it introduces itself.

use std::net::SocketAddr;

use super::profile::Profile;

/// Everything [`Sink::start`](super::Sink::start) needs.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// One TCP listener per entry, so a single sink can emulate several providers at once.
    pub listeners: Vec<ListenerSpec>,
    /// Whether EHLO advertises STARTTLS (with a self-signed certificate made at start).
    pub starttls: bool,
    /// Name used in the greeting, the EHLO reply and the certificate.
    pub hostname: String,
    /// Keep the content of the first this-many accepted messages for
    /// [`SinkStats::captured`](super::SinkStats::captured) (tests inspect real messages); 0
    /// keeps none and costs nothing.
    pub capture: usize,
}

/// One listening socket and the behaviour of its sessions.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// Where to listen; use a loopback address (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Reply texts and limits for every session accepted here.
    pub profile: Profile,
}
