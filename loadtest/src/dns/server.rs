//! The UDP loop answering queries from a [`Zone`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::answer::respond;
use super::zone::Zone;

/// Largest datagram read; bigger queries are not legitimate and get truncated (then fail
/// to parse and are ignored).
const MAX_DATAGRAM: usize = 4096;

/// A running DNS server. Dropping it stops it too (without waiting).
#[derive(Debug)]
pub struct DnsServer {
    /// The bound address (resolves port 0).
    addr: SocketAddr,
    /// Queries answered, so tests can see the engine's resolver caching.
    answered: Arc<AtomicU64>,
    /// Datagrams received, answered or not.
    received: Arc<AtomicU64>,
    /// Flipped (or dropped) to stop the loop.
    shutdown: watch::Sender<bool>,
    /// The receive loop.
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Binds a UDP socket at `addr` (use loopback) and spawns the answer loop on the current
    /// tokio runtime.
    pub async fn start(addr: SocketAddr, zone: Zone) -> io::Result<DnsServer> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let answered = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(serve(
            socket,
            zone,
            Arc::clone(&answered),
            Arc::clone(&received),
            stop,
        ));
        Ok(DnsServer {
            addr,
            answered,
            received,
            shutdown,
            task,
        })
    }

    /// The bound address, to point the resolver at.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of queries answered (TIMEOUT names and malformed packets not included).
    pub fn queries(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Number of datagrams received, including unanswered ones.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops answering and waits until the socket is closed.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Receives and answers datagrams until `stop` changes or its sender is dropped.
async fn serve(
    socket: UdpSocket,
    zone: Zone,
    answered: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = tokio::select! {
            _ = stop.changed() => break,
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                // ICMP port-unreachable from an earlier reply surfaces here on some
                // systems; it concerns a past client, not this loop.
                Err(_) => continue,
            },
        };
        received.fetch_add(1, Ordering::Relaxed);
        let Some(reply) = respond(buf.get(..len).unwrap_or_default(), &zone) else {
            continue;
        };
        if socket.send_to(&reply, peer).await.is_ok() {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
