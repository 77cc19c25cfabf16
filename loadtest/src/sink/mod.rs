//! An SMTP sink: a fast, loopback-only SMTP server that accepts everything (except magic
//! recipients and emulated provider limits) and counts each accepted message per recipient,
//! so tests can prove exactly-once delivery and benchmarks can measure throughput.
//!
//! # Layout
//! - [`config`]: what to listen on ([`SinkConfig`], [`ListenerSpec`]).
//! - [`profile`]: provider emulation settings ([`Profile`], [`ProviderKind`]).
//! - [`replies`]: every reply text the sink sends.
//! - [`magic`]: recipient local parts that trigger failures.
//! - `command`, `body`, `session`: parsing and the I/O-free SMTP state machine.
//! - `conn`, `listener`, `tls`, `context`: sockets, accept loops, STARTTLS.
//! - [`stats`], `profile_stats`, `tally`: shared counters; [`serve_stats`] exposes them.

mod body;
mod command;
pub mod config;
mod conn;
mod context;
mod http;
mod listener;
pub mod magic;
pub mod profile;
mod profile_stats;
pub mod replies;
mod session;
pub mod stats;
mod tally;
mod tls;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ListenerSpec, SinkConfig};
pub use http::serve_stats;
pub use magic::Magic;
pub use profile::{Profile, ProviderKind, UnknownProviderKind};
pub use profile_stats::ProfileStats;
pub use stats::{Captured, SinkStats};

use context::ListenerCtx;

/// A running sink. Dropping it also stops it (without waiting); [`Sink::stop`] waits until
/// every socket is closed.
#[derive(Debug)]
pub struct Sink {
    /// Shared counters, also handed out by [`Sink::stats`].
    stats: Arc<SinkStats>,
    /// The bound addresses, in listener order (resolves port 0).
    addrs: Vec<SocketAddr>,
    /// Flipped (or dropped) to stop every accept loop.
    shutdown: watch::Sender<bool>,
    /// The accept loops, which own their sessions.
    tasks: Vec<JoinHandle<()>>,
}

impl Sink {
    /// Binds every listener and spawns the accept loops on the current tokio runtime;
    /// returns at once. Fails if a listener cannot be bound or the STARTTLS certificate
    /// cannot be made.
    pub async fn start(config: SinkConfig) -> io::Result<Sink> {
        let tls = if config.starttls {
            Some(tls::self_signed_acceptor(&config.hostname)?)
        } else {
            None
        };
        let names: BTreeMap<&str, ()> = config
            .listeners
            .iter()
            .map(|spec| (spec.profile.name.as_str(), ()))
            .collect();
        let stats = Arc::new(SinkStats::new(names.into_keys(), config.capture));

        let mut bound = Vec::with_capacity(config.listeners.len());
        for spec in &config.listeners {
            let listener = TcpListener::bind(spec.addr).await?;
            bound.push((listener, spec.profile.clone()));
        }

        let (shutdown, _) = watch::channel(false);
        let mut addrs = Vec::with_capacity(bound.len());
        let mut tasks = Vec::with_capacity(bound.len());
        for (listener, profile) in bound {
            addrs.push(listener.local_addr()?);
            let counters = stats.counters(&profile.name).ok_or_else(|| {
                io::Error::other(format!("no counters for profile {}", profile.name))
            })?;
            let ctx = Arc::new(ListenerCtx::new(
                profile,
                counters,
                Arc::clone(&stats),
                &config.hostname,
                tls.clone(),
            ));
            tasks.push(tokio::spawn(listener::accept_loop(
                listener,
                ctx,
                shutdown.subscribe(),
            )));
        }
        Ok(Sink {
            stats,
            addrs,
            shutdown,
            tasks,
        })
    }

    /// The shared statistics; they stay readable after the sink stops.
    pub fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.stats)
    }

    /// The bound address of each listener, in [`SinkConfig::listeners`] order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Stops accepting, closes every session, and waits until all are gone.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
