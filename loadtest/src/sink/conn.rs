//! The I/O loop of one connection: read, let the session answer everything buffered, write
//! all replies of one read in a single write (what makes PIPELINING cheap).

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::context::ListenerCtx;
use super::profile_stats::OpenSession;
use super::session::{Session, Step};

/// Size of the per-connection read buffer.
const READ_BUFFER: usize = 64 * 1024;
/// When less than this is free at the end of the buffer, move the kept partial line to the
/// front so reads stay large.
const COMPACT_BELOW: usize = 8 * 1024;

/// A byte stream the sink serves: plain TCP, or TLS over TCP after STARTTLS.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket underneath, to reset it.
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// How [`drive`] ended.
enum Exit {
    /// The connection is finished (closed, reset, hung up, or failed).
    Done,
    /// The client asked for TLS and got the go-ahead.
    StartTls,
}

/// Buffers reused for the whole connection.
struct Buffers {
    /// Read buffer; `start..end` is input not yet consumed.
    input: Vec<u8>,
    /// Start of unconsumed input.
    start: usize,
    /// End of buffered input.
    end: usize,
    /// Replies waiting for the next write.
    out: Vec<u8>,
}

/// Serves one SMTP connection to the end, holding its place among the profile's open
/// sessions (`slot`) until the session ends. Errors end the session quietly: a misbehaving
/// peer is what a load test is for.
pub async fn serve(tcp: TcpStream, ctx: Arc<ListenerCtx>, peer: IpAddr, slot: OpenSession) {
    let mut slot = Some(slot);
    let _ = tcp.set_nodelay(true);
    let mut tcp = tcp;
    if ctx.profile.silent {
        drain(&mut tcp).await;
        return;
    }
    let mut session = Session::new(Arc::clone(&ctx), peer);
    let mut bufs = Buffers {
        input: vec![0; READ_BUFFER],
        start: 0,
        end: 0,
        out: Vec::with_capacity(4096),
    };
    bufs.out.extend_from_slice(&ctx.greeting);
    match drive(&mut tcp, &mut session, &mut bufs, &ctx, &mut slot).await {
        Ok(Exit::StartTls) => {}
        Ok(Exit::Done) | Err(_) => return,
    }
    let Some(acceptor) = ctx.tls.clone() else {
        return;
    };
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    session.tls_started();
    bufs.start = 0;
    bufs.end = 0;
    let _ = drive(&mut tls, &mut session, &mut bufs, &ctx, &mut slot).await;
}

/// Runs the read–answer–write loop until the session says otherwise. Anything already in
/// `bufs.out` (the greeting) is written first. A session that closes by protocol (221 to
/// QUIT, a closing 421) leaves the open sessions before its last reply is written: a client
/// that reads that reply and opens its next connection at once must not find the old one
/// still counted (the count is what connection caps are checked against).
async fn drive<T: Transport>(
    io: &mut T,
    session: &mut Session,
    bufs: &mut Buffers,
    ctx: &ListenerCtx,
    slot: &mut Option<OpenSession>,
) -> io::Result<Exit> {
    flush(io, &mut bufs.out).await?;
    loop {
        if bufs.input.len() - bufs.end < COMPACT_BELOW {
            bufs.input.copy_within(bufs.start..bufs.end, 0);
            bufs.end -= bufs.start;
            bufs.start = 0;
        }
        let Some(free) = bufs
            .input
            .get_mut(bufs.end..)
            .filter(|free| !free.is_empty())
        else {
            // Cannot happen (the session never keeps more than one command line), but a
            // full buffer must not spin.
            return Ok(Exit::Done);
        };
        let n = io.read(free).await?;
        if n == 0 {
            return Ok(Exit::Done);
        }
        bufs.end += n;
        loop {
            let input = bufs.input.get(bufs.start..bufs.end).unwrap_or_default();
            let (used, step) = session.feed(input, &mut bufs.out);
            bufs.start += used;
            match step {
                Step::NeedInput => break,
                Step::Deliver => {
                    tokio::time::sleep(ctx.profile.latency).await;
                    session.deliver(&mut bufs.out);
                }
                Step::Close => {
                    drop(slot.take());
                    flush(io, &mut bufs.out).await?;
                    let _ = io.shutdown().await;
                    return Ok(Exit::Done);
                }
                Step::Reset => {
                    let _ = flush(io, &mut bufs.out).await;
                    let _ = io.tcp().set_zero_linger();
                    return Ok(Exit::Done);
                }
                Step::StartTls => {
                    flush(io, &mut bufs.out).await?;
                    return Ok(Exit::StartTls);
                }
                Step::Hang => {
                    flush(io, &mut bufs.out).await?;
                    drain(io).await;
                    return Ok(Exit::Done);
                }
            }
        }
        if bufs.start == bufs.end {
            bufs.start = 0;
            bufs.end = 0;
        }
        flush(io, &mut bufs.out).await?;
    }
}

/// Writes and clears pending replies in one write call (nothing if there are none).
async fn flush<T: Transport>(io: &mut T, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    io.write_all(out).await?;
    io.flush().await?;
    out.clear();
    Ok(())
}

/// Reads and discards until the peer closes: a server that listens but never answers.
async fn drain<T: Transport>(io: &mut T) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = io.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}
