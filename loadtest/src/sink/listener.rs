//! The accept loop of one listener: enforces the profile's connection cap and spawns sessions.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::conn;
use super::context::ListenerCtx;
use super::replies;

/// Accepts connections until `shutdown` changes or its sender is dropped, then aborts every
/// session of this listener (closing their sockets) and waits for them.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let ctx = Arc::clone(&ctx);
                    match ctx.counters.try_open(ctx.profile.max_conns) {
                        Some(slot) => {
                            sessions.spawn(conn::serve(tcp, ctx, peer.ip(), slot));
                        }
                        None => {
                            ctx.counters.throttle();
                            sessions.spawn(refuse(tcp, ctx));
                        }
                    }
                }
                Err(error) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(%error, "sink accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    sessions.shutdown().await;
}

/// Turns away a connection over the profile's cap: a 421 for most providers, a TCP reset
/// for those that answer overload that way (au).
async fn refuse(mut tcp: TcpStream, ctx: Arc<ListenerCtx>) {
    if ctx.profile.kind.resets_when_overloaded() {
        let _ = tcp.set_zero_linger();
        return;
    }
    if tcp.write_all(replies::TOO_MANY_CONNECTIONS).await.is_ok() {
        let _ = tcp.shutdown().await;
    }
}
