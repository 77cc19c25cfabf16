//! Opening an SMTP session to a destination: MX hosts in preference order with fallback,
//! each host's addresses in turn, greeting, EHLO, opportunistic STARTTLS.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::outcome::classify::Attempt;
use crate::routing::mx::MxLookup;
use crate::smtp::stream::MaybeTls;
use crate::smtp::{SmtpClient, SmtpError, Timeouts};

/// Where a site's jobs go: MX hosts in the order to try them, and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host names (or IP literals), most preferred first.
    pub hosts: Vec<String>,
    /// TCP port (25, or a sink's in tests).
    pub port: u16,
}

/// An open, greeted session.
#[derive(Debug)]
pub struct Session {
    /// The protocol client.
    pub client: SmtpClient<MaybeTls>,
    /// The MX host it is connected to.
    pub mx: String,
    /// The destination it was opened for (jobs for other destinations need another session).
    pub target: Arc<Target>,
    /// Messages sent on it so far.
    pub sent: u32,
}

/// Opens sessions.
#[derive(Clone)]
pub struct Connector {
    /// Address lookups for MX host names.
    pub lookup: Arc<dyn MxLookup>,
    /// EHLO name.
    pub ehlo: String,
    /// STARTTLS connector, or `None` to never upgrade.
    pub tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("ehlo", &self.ehlo)
            .field("starttls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// Tries each MX host (and each of its addresses) until one gives a usable session.
    /// On failure returns the last host tried and why.
    pub async fn connect(
        &self,
        target: &Arc<Target>,
        t: &Timeouts,
    ) -> Result<Session, (String, Attempt)> {
        let mut last = (
            String::new(),
            Attempt::ConnectionLost("no MX host to try".into()),
        );
        for host in &target.hosts {
            let addrs = match self.lookup.addresses(host).await {
                Ok(a) if a.is_empty() => {
                    last = (
                        host.clone(),
                        Attempt::DnsTemporary(format!("{host} has no address")),
                    );
                    continue;
                }
                Ok(a) => a,
                Err(e) => {
                    last = (host.clone(), Attempt::DnsTemporary(e.0));
                    continue;
                }
            };
            for ip in addrs {
                match self.open(SocketAddr::new(ip, target.port), t).await {
                    Ok(client) => {
                        return Ok(Session {
                            client,
                            mx: host.clone(),
                            target: target.clone(),
                            sent: 0,
                        })
                    }
                    Err(e) => last = (host.clone(), e.to_attempt()),
                }
            }
        }
        Err(last)
    }

    async fn open(
        &self,
        addr: SocketAddr,
        t: &Timeouts,
    ) -> Result<SmtpClient<MaybeTls>, SmtpError> {
        let tcp = match tokio::time::timeout(t.connect, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(SmtpError::Io {
                    phase: "connect",
                    source,
                })
            }
            Err(_) => return Err(SmtpError::Timeout { phase: "connect" }),
        };
        let _ = tcp.set_nodelay(true);
        let mut client = SmtpClient::new(MaybeTls::Plain(tcp), *t);
        client.greeting().await?;
        let caps = client.ehlo(&self.ehlo).await?;
        let Some(tls) = self.tls.as_ref().filter(|_| caps.starttls) else {
            return Ok(client);
        };
        client.starttls().await?;
        let MaybeTls::Plain(tcp) = client.into_stream()? else {
            return Err(SmtpError::Tls("already in TLS".into()));
        };
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let stream = match tokio::time::timeout(t.starttls, tls.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SmtpError::Tls(e.to_string())),
            Err(_) => return Err(SmtpError::Timeout { phase: "starttls" }),
        };
        let mut client = SmtpClient::new(MaybeTls::Tls(Box::new(stream)), *t);
        client.ehlo(&self.ehlo).await?;
        Ok(client)
    }
}
